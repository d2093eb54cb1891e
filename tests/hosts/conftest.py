"""Fixtures of the host tests (bin/test-hosts): booted Debian hosts converged by site.yml.

Run only through bin/test-hosts (its own pytest invocation, --confcutdir=tests/hosts:
the services suite's fixtures are not loaded). Phase times are printed as they end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest
import yaml
from harness import REPO, Harness, Host, exclusive, log

DEPLOY_BIN = Path(os.environ.get("MLSTACK_DEPLOY_VENV", REPO / ".dev/venvs/deploy")) / "bin"
HOSTS_TESTS = Path(__file__).resolve().parent
RUN_DIR = Path(os.environ.get("MLSTACK_HOSTS_RUN_DIR", REPO / ".dev/hosts/run"))
LOG_DIR = Path(os.environ.get("MLSTACK_HOSTS_LOG_DIR", REPO / ".dev/logs/test-hosts"))
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
MONGO_PORT = 27017
S3_PORT = 9000
# Made by bin/fetch-wheels before the first converge: the hosts' pip has no index (standins.yml).
WHEELHOUSE = REPO / ".dev/offline/wheels"
TIMES: list[tuple[str, float]] = []
# Booting hosts needs root and minutes: only bin/test-hosts (which sets this) runs them,
# never a plain `pytest tests`.
if os.environ.get("MLSTACK_TEST_HOSTS") != "1":
    collect_ignore_glob = ["test_*.py"]


class phase:  # lower case: used as `with phase("..."):`
    """Prints and records how long a part of the run took."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self.started = time.monotonic()
        log(f"phase {self.name} ...")

    def __exit__(self, *exc: object) -> None:
        took = time.monotonic() - self.started
        TIMES.append((self.name, took))
        log(f"phase {self.name}: {took:.0f}s{' (failed)' if exc[0] else ''}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    if TIMES:
        print("\nphase times:")
        for name, took in TIMES:
            print(f"  {took:7.0f}s  {name}")


@dataclass
class Site:
    """A host and the control node's view of it: inventory, extra vars, credentials."""

    host: Host
    inventory: Path
    vars_file: Path
    credentials: Path
    log_dir: Path
    source: Path = REPO

    def playbook(
        self, playbook: str = "site.yml", *args: str, timeout: float = 3600
    ) -> subprocess.CompletedProcess[str]:
        """ansible-playbook from the control node, exactly like a user, plus the test's inventory and vars."""
        cmd = [str(DEPLOY_BIN / "ansible-playbook"), "-i", str(self.inventory), "-e", f"@{self.vars_file}"]
        cmd += [playbook, *args]
        env = dict(os.environ)
        env.update(
            PATH=f"{DEPLOY_BIN}:{env.get('PATH', '')}",
            ANSIBLE_CONFIG=str(self.source / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_HOST_KEY_CHECKING="False",
            # Each task's time in the log and the slowest ones at the end: where a converge spends it.
            ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks",
        )
        started = time.monotonic()
        result = subprocess.run(
            cmd, cwd=self.source, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", " ".join([playbook, *args]))[:80]
        out = self.log_dir / f"ansible-{time.strftime('%H%M%S')}-{name}.log"
        out.write_text(result.stdout + "\n--- stderr\n" + result.stderr)
        took = time.monotonic() - started
        log(f"ansible-playbook {playbook} {' '.join(args)}: rc={result.returncode} ({took:.0f}s, {out.name})")
        return result

    def run(self, command: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.host.ssh(command, check=check, timeout=timeout)

    def api_token(self) -> str:
        return str(yaml.safe_load(self.credentials.read_text())["api_token"])

    def standins_then_converge(self, label: str) -> subprocess.CompletedProcess[str]:
        """The stand-ins (they must succeed), then the first `site.yml`, whose result is returned."""
        with phase("stand-ins (tests/hosts/standins.yml)"):
            result = self.playbook(str(HOSTS_TESTS / "standins.yml"))
            assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        with phase(f"converge: {label}"):
            return self.playbook("site.yml")


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def recap(output: str) -> dict[str, int]:
    found = RECAP.findall(output)
    assert found, output[-3000:]
    _, ok, changed, unreachable, failed = found[-1]
    return {"ok": int(ok), "changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}


def recaps(output: str) -> dict[str, dict[str, int]]:
    """Every host's line of the play recap."""
    found = RECAP.findall(output)
    assert found, output[-3000:]
    keys = ("ok", "changed", "unreachable", "failed")
    return {host: dict(zip(keys, map(int, counts), strict=True)) for host, *counts in found}


def _write_site_files(tmp: Path, host: Host, source: Path = REPO, **extra: object) -> tuple[Path, Path, Path]:
    # Next to the site's group_vars, like an inventory a user keeps in inventory/.
    (tmp / "inventory").mkdir(parents=True, exist_ok=True)
    group_vars = tmp / "inventory" / "group_vars"
    if not group_vars.exists():
        group_vars.symlink_to(source / "inventory" / "group_vars")
    inventory = tmp / "inventory" / "hosts.yml"
    hostvars = {
        "ansible_host": "127.0.0.1",
        "ansible_port": host.ssh_port,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(host.ssh_key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_python_interpreter": "/usr/bin/python3",
        "mlstack_address": "127.0.0.1",
        "mlstack_become": False,
    }
    groups = {g: {"hosts": {host.name: None}} for g in ("database", "queue", "storage", "registry", "api", "workers")}
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {host.name: hostvars}, "children": groups}}))
    credentials = tmp / "credentials" / "mlstack.yml"
    vars_file = tmp / "site-vars.yml"
    site_vars: dict[str, object] = {
        "mongodb_install": False,
        "mongodb_external_uri": f"mongodb://127.0.0.1:{MONGO_PORT}",
        "minio_install": False,
        "minio_external_endpoint": f"http://127.0.0.1:{S3_PORT}",
        "minio_external_access_key": "test-access-key",
        "minio_external_secret_key": "test-secret-key",
        "mlstack_credentials_file": str(credentials),
        "health_interval": "1min",
        "mlstack_wheelhouse_src": str(WHEELHOUSE),
    }
    site_vars.update(extra)
    vars_file.write_text(yaml.safe_dump(site_vars))
    return inventory, vars_file, credentials


def snapshot_checkout(dest: Path) -> Path:
    """A copy of this checkout (tracked and new files, as they are now) to deploy from: other
    work in the tree during the run must not look like a change to the second converge.
    MLSTACK_HOSTS_SOURCE_REV=<rev>: that commit instead (e.g. HEAD while the tree holds other work)."""
    rev = os.environ.get("MLSTACK_HOSTS_SOURCE_REV")
    if rev:
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return dest
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / os.fsdecode(name)
        if src.is_file():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


@pytest.fixture(scope="session")
def harness() -> Iterator[Harness]:
    # The PID too: the single and multi scenarios may start in the same second (bin/test-all).
    run_dir = RUN_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    h = Harness(run_dir)

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield h
    finally:
        with phase("stop hosts"):
            h.close()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _collect_on_failure(request: pytest.FixtureRequest, host: Host, dest: Path) -> None:
    if request.session.testsfailed:
        log(f"failures: collecting {host.name}'s journal into {dest}")
        host.collect_journal(dest)


@pytest.fixture(scope="session")
def site(harness: Harness, request: pytest.FixtureRequest) -> Iterator[Site]:
    """One fresh host with the stand-ins of MongoDB and S3, converged by site.yml."""
    log_dir = LOG_DIR / harness.run_dir.name
    log_dir.mkdir(parents=True, exist_ok=True)
    with phase("wheelhouse (bin/fetch-wheels)"), exclusive("offline-files"):
        subprocess.run([str(REPO / "bin/fetch-wheels"), str(WHEELHOUSE)], check=True)
    with phase("boot fresh host"):
        host = harness.new_host("mlstack-single")
        host.boot()
        source = snapshot_checkout(harness.run_dir / "checkout")
    inventory, vars_file, credentials = _write_site_files(harness.run_dir, host, source)
    s = Site(host, inventory, vars_file, credentials, log_dir, source)
    try:
        s.first_converge = s.standins_then_converge("ansible-playbook site.yml")  # type: ignore[attr-defined]
        yield s
    finally:
        _collect_on_failure(request, host, log_dir)
