"""A real converge of site.yml on this machine, as root (issue 4, item 5, last bullet).

RabbitMQ is installed and configured by its role for real; MongoDB and S3 are the
stand-ins of architecture.md (nx-27017, moto_server) used as external services;
everything else is installed by its role. Units run under `systemctl3` through a
`systemctl` shim first on PATH (CI only). Then: a predict round trip through the
deployed API with the example bundle, `mlstack health` ok, one retrain run, and a
second converge that changes nothing.

Destructive: it stops the RabbitMQ the other tests share (to hand it to systemd's
stand-in) and removes its guest user, so it runs last; the teardown brings the
shared broker back with guest/guest.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from deploy_support import REPO, ansible_bin_dir, ansible_env

pytestmark = [pytest.mark.destructive, pytest.mark.installs_host]

UNITS = [
    "mlstack-health.service",
    "mlstack-retrain.service",
    "mlstack-train.service",
    "mlstack-worker-pub@example_bundle-1.service",
    "mlstack-api.service",
    "mlflow.service",
    "rabbitmq-server.service",
]
CORE_VENV = Path("/opt/mlstack/venvs/core")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def _rabbit_up() -> bool:
    return subprocess.run(["rabbitmqctl", "-q", "status"], capture_output=True, check=False).returncode == 0


@dataclass
class Site:
    env: dict[str, str]
    vars_file: Path
    api_url: str
    credentials: Path

    def playbook(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The README's main command, bin/deploy (= ansible-playbook site.yml), or another playbook;
        plus this machine's stand-ins."""
        cmd = [str(ansible_bin_dir() / "ansible-playbook"), *args] if args else [str(REPO / "bin" / "deploy")]
        cmd += ["-e", f"@{self.vars_file}"]
        return subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=3600, check=False)

    def systemctl(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemctl", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if os.geteuid() != 0:
        pytest.fail("the converge test must run as root (it installs the stack into /opt, /etc, systemd)")
    test_venv = Path(os.environ.get("MLSTACK_TEST_VENV", REPO / ".venv"))
    systemctl3 = ansible_bin_dir() / "systemctl3"
    assert systemctl3.exists(), f"{systemctl3} missing: install requirements-deploy.txt"
    tmp = tmp_path_factory.mktemp("converge")
    shim = tmp / "shim"
    shim.mkdir()
    (shim / "systemctl").write_text(f'#!/bin/sh\nexec "{systemctl3}" "$@"\n')
    (shim / "systemctl").chmod(0o755)

    mongo_port, s3_port, api_port, mlflow_port = (_free_port() for _ in range(4))
    (tmp / "nx").mkdir()
    mongo = subprocess.Popen(
        [str(test_venv / "bin/nx-27017"), "--data-dir", str(tmp / "nx"), "-p", str(mongo_port)],
        stdout=(tmp / "nx.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    s3 = subprocess.Popen(
        [str(test_venv / "bin/moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
        stdout=(tmp / "moto.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    # The shared broker was started by hand (`rabbitmq-server -detached`); the role
    # must own it through (stand-in) systemd.
    rabbit_was_up = _rabbit_up()
    if rabbit_was_up:
        subprocess.run(["rabbitmqctl", "-q", "stop"], capture_output=True, check=False, timeout=120)
    credentials = tmp / "credentials" / "mlstack.yml"
    vars_file = tmp / "ci-vars.yml"
    vars_file.write_text(
        yaml.safe_dump(
            {
                "mongodb_install": False,
                "mongodb_external_uri": f"mongodb://127.0.0.1:{mongo_port}",
                "minio_install": False,
                "minio_external_endpoint": f"http://127.0.0.1:{s3_port}",
                "minio_external_access_key": "ci-access-key",
                "minio_external_secret_key": "ci-secret-key",
                "api_port": api_port,
                "mlflow_port": mlflow_port,
                "mlstack_credentials_file": str(credentials),
                # systemctl3 runs services, not timers: enable them only.
                "retrain_timer_state": "",
                "health_timer_state": "",
            }
        )
    )
    env = ansible_env(PATH=f"{shim}:{ansible_bin_dir()}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    for name in [k for k in env if k.startswith(("MLSTACK_", "MLFLOW_", "AWS_", "CLF_IRIS_", "STACK_LOG"))]:
        del env[name]  # test settings must not leak into the services systemctl3 starts
    try:
        _wait_port(mongo_port)
        _wait_port(s3_port)
        yield Site(env, vars_file, f"http://127.0.0.1:{api_port}", credentials)
    finally:
        if shutil.which("systemctl", path=env["PATH"]):
            for unit in UNITS:
                subprocess.run(["systemctl", "stop", unit], env=env, capture_output=True, check=False, timeout=300)
        for proc in (mongo, s3):
            proc.terminate()
            proc.wait(timeout=30)
        if rabbit_was_up and not _rabbit_up():
            subprocess.run(["rabbitmq-server", "-detached"], check=False)
            for _ in range(120):
                if _rabbit_up():
                    break
                time.sleep(1)
        if _rabbit_up():  # the other tests log in as guest
            for cmd in (
                ["add_user", "guest", "guest"],
                ["set_user_tags", "guest", "administrator"],
                ["set_permissions", "-p", "/", "guest", ".*", ".*", ".*"],
            ):
                subprocess.run(["rabbitmqctl", "-q", *cmd], capture_output=True, check=False)


def _recap(output: str) -> dict[str, int]:
    match = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert match, output[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups()), strict=True))


@pytest.fixture(scope="module")
def converged(site: Site) -> Site:
    # Start from a clean host: an earlier run on this machine left services whose data
    # (e.g. MLflow's users) was made with other credentials. This also exercises destroy.yml.
    destroyed = site.playbook("playbooks/destroy.yml", "-e", "confirm=yes", "-e", "purge_data=true")
    assert destroyed.returncode == 0, destroyed.stdout[-5000:] + destroyed.stderr[-2000:]
    result = site.playbook()
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    assert _recap(result.stdout)["failed"] == 0
    return site


def _api_token(site: Site) -> str:
    return str(yaml.safe_load(site.credentials.read_text())["api_token"])


def test_credentials_file_is_private(converged: Site) -> None:
    assert converged.credentials.stat().st_mode & 0o777 == 0o600
    for path in ("/etc/mlstack/mlstack.env", "/etc/mlstack/worker.env", "/etc/mlflow/mlflow.env"):
        assert Path(path).stat().st_mode & 0o777 == 0o600, path


def test_units_run(converged: Site) -> None:
    for unit in (
        "rabbitmq-server.service",
        "mlflow.service",
        "mlstack-api.service",
        "mlstack-worker-pub@example_bundle-1.service",
    ):
        result = converged.systemctl("is-active", unit)
        assert result.stdout.strip() == "active", f"{unit}: {result.stdout}{result.stderr}"


def test_rabbitmq_guest_removed_and_app_user_in_its_vhost(converged: Site) -> None:
    users = subprocess.run(["rabbitmqctl", "-q", "list_users"], capture_output=True, text=True, check=True).stdout
    assert "guest" not in users.split()
    assert "mlstack" in users.split()
    vhosts = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, check=True).stdout
    assert "mlstack" in vhosts.split()


def test_predict_round_trip_through_the_deployed_api(converged: Site) -> None:
    from support.client import ApiClient  # tests/support: the contract's client

    client = ApiClient(converged.api_url, _api_token(converged), timeout=30)
    try:
        answer = {}
        for _ in range(3):  # the worker may still be loading the freshly promoted model
            answer = client.run("CLF_IRIS", "predict", ["5.1;3.5;1.4;0.2", "6.7;3.0;5.2;2.3"], timeout=120)
            if answer.get("status") == "Done":
                break
        assert answer.get("status") == "Done", answer
        assert isinstance(answer.get("response"), list) and len(answer["response"]) == 2, answer
    finally:
        client.close()


def test_mlstack_health_is_ok(converged: Site) -> None:
    result = subprocess.run(
        [str(CORE_VENV / "bin/mlstack"), "health"], env=converged.env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_retrain_service_runs_once(converged: Site) -> None:
    result = converged.systemctl("start", "mlstack-retrain.service", timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr


def test_second_converge_changes_nothing(converged: Site) -> None:
    result = converged.playbook()
    assert result.returncode == 0, result.stdout[-8000:]
    changed = [line for line in result.stdout.splitlines() if line.startswith("changed:")]
    assert _recap(result.stdout)["changed"] == 0, "\n".join(changed) + result.stdout[-3000:]
