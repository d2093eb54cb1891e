"""`bin/test-hosts single`: one booted Debian 12 host converged by `ansible-playbook site.yml`.

MongoDB and S3 are the stand-ins (tests/hosts/standins.yml) used as external
services; RabbitMQ, MLflow, the API, the Pub workers and the retrain and health
timers are installed by their roles under the host's real systemd. The tests run
in file order: each one leaves the stack running for the next.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import DEPLOY_BIN, Site, _write_site_files, phase, recap, wait_for
from harness import Harness, free_port, log

WORKER = "mlstack-worker-pub@example_bundle-1.service"
UNITS = [
    "rabbitmq-server.service",
    "mlflow.service",
    "mlstack-api.service",
    WORKER,
    "mlstack-retrain@example_bundle.timer",
    "mlstack-health.timer",
]
CORE = "/opt/mlstack/venvs/core/bin"
BUNDLE_VENV = "/opt/mlstack/bundles/example_bundle/venvs/pub/bin"
API_PORT = 8000
IRIS = ["5.1;3.5;1.4;0.2", "6.7;3.0;5.2;2.3"]


@pytest.fixture(scope="module")
def converged(site: Site) -> Site:
    result = site.first_converge  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stdout[-10000:] + result.stderr[-3000:]
    assert recap(result.stdout)["failed"] == 0
    return site


@contextlib.contextmanager
def api_client(site: Site) -> Iterator[object]:
    """The deployed API (127.0.0.1:8000 inside the host) through an SSH tunnel, with the contract's
    client; the tunnel process is stopped by its PID at the end."""
    from support.client import ApiClient  # tests/support: the contract's client

    local = free_port()
    tunnel = subprocess.Popen(
        ["ssh", *site.host.ssh_args(), "-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{API_PORT}", "root@127.0.0.1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = None
    try:
        wait_for("the SSH tunnel to the API", lambda: _port_open(local), 30, 0.2)
        client = ApiClient(f"http://127.0.0.1:{local}", site.api_token(), timeout=30)
        yield client
    finally:
        if client is not None:
            client.close()
        tunnel.send_signal(signal.SIGTERM)
        tunnel.wait(timeout=10)


@pytest.fixture(scope="module")
def api(converged: Site) -> Iterator[object]:
    with api_client(converged) as client:
        yield client


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _show(site: Site, prop: str, unit: str) -> str:
    return site.run(f"systemctl show -P {prop} {unit}").stdout.strip()


def _status_line(site: Site, unit: str = WORKER) -> str:
    return _show(site, "StatusText", unit)


def _predict(api: object, timeout: float = 120) -> dict[str, object]:
    answer = api.run("CLF_IRIS", "predict", IRIS, timeout=timeout)  # type: ignore[attr-defined]
    return answer  # type: ignore[no-any-return]


# ---------------------------------------------------------------- after the converge
def test_every_mlstack_unit_is_active(converged: Site) -> None:
    for unit in [*UNITS, "nx-27017.service", "moto-s3.service"]:
        state = converged.run(f"systemctl is-active {unit}", check=False).stdout.strip()
        assert state == "active", (
            f"{unit}: {state}\n" + converged.run(f"systemctl status --no-pager -n 30 {unit}", check=False).stdout
        )
    failed = converged.run("systemctl list-units --failed --plain --no-legend", check=False).stdout
    assert "mlstack" not in failed and "mlflow" not in failed, failed


def test_every_virtualenv_came_from_the_wheelhouse(converged: Site) -> None:
    """The host's pip has no index (standins.yml), so the converge could only build the
    virtualenvs from the wheelhouse site.yml copied; check both halves of that."""
    wheelhouse = "/opt/mlstack/wheels/mlstack"
    pip = f"{CORE}/pip download --no-deps --dest /tmp/wheel-probe idna"
    assert converged.run(pip, check=False, timeout=60).returncode != 0, "the host's pip still reaches an index"
    converged.run(f"{pip} --no-index --find-links {wheelhouse}", timeout=60)
    for venv in (CORE, "/opt/mlstack/venvs/cli/bin", "/opt/mlstack/venvs/mlflow/bin", BUNDLE_VENV):
        converged.run(f"{venv}/python -c ''")


def test_worker_status_shows_its_model_version(converged: Site) -> None:
    wait_for("the worker's status line", lambda: "CLF_IRIS v1 (production v1) ok" in _status_line(converged), 120)
    status = converged.run(f"systemctl status --no-pager {WORKER}", check=False).stdout
    assert "CLF_IRIS v1 (production v1) ok" in status, status


def test_predict_round_trip_through_the_deployed_api(api: object) -> None:
    answer = _predict(api)
    assert answer.get("status") == "Done", answer
    response = answer.get("response")
    assert isinstance(response, list) and len(response) == 2, answer


def test_mlstack_health_is_ok(converged: Site) -> None:
    result = converged.run(
        "set -a && . /etc/mlstack/mlstack.env && set +a && "
        f"{CORE}/mlstack health --state-root /var/lib/mlstack/workers",
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_single_host_listens_on_the_loopback_only(converged: Site) -> None:
    """epmd, Erlang distribution and every mlstack service: nothing on another address of the host."""
    listening = converged.run("ss -ltnH").stdout
    for line in listening.splitlines():
        local = line.split()[3]
        address = local.rsplit(":", 1)[0].strip("[]")
        if local.endswith(":22"):
            continue  # SSH: how the control node reaches the host
        assert address in ("127.0.0.1", "::1") or address.startswith("127."), f"listens on {local}:\n{listening}"
    assert re.search(r"127\.0\.0\.1:4369\b", listening), listening


def test_hardening_seen_from_inside_the_worker(converged: Site) -> None:
    pid = _show(converged, "MainPID", WORKER)
    assert pid.isdigit() and pid != "0", pid
    status = converged.run(f"cat /proc/{pid}/status").stdout
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    assert re.search(r"^CapBnd:\s+0+$", status, re.M), status
    # Each bundle's workers run as a system user of their own (a drop-in per instance).
    user = converged.run(f"ps -o user:32= -p {pid}").stdout.strip()
    assert user == "mlstack-w-example_bundle", user
    # The settings files are root's: systemd hands their values to the worker.
    for path in ("/etc/mlstack/worker.env", "/etc/mlstack/workers/example_bundle-1.env"):
        assert converged.run(f"stat -c %U:%a {path}").stdout.strip() == "root:600", path
    # In the worker's own mount namespace, as its user: only its state directory is writable.
    as_worker = f"nsenter -t {pid} -m setpriv --reuid={user} --regid=mlstack --init-groups"
    for outside in ("/opt/mlstack/probe", "/etc/mlstack/probe", "/var/lib/mlstack/probe", "/usr/probe"):
        result = converged.run(f"{as_worker} touch {outside}", check=False)
        assert result.returncode != 0, f"the worker could write {outside}"
    inside = "/var/lib/mlstack/workers/example_bundle-1/.hardening-probe"
    converged.run(f"{as_worker} touch {inside} && rm {inside}")
    # The host's /home is hidden (ProtectHome) and /tmp is private.
    converged.run("touch /tmp/host-probe")
    result = converged.run(f"nsenter -t {pid} -m test -e /tmp/host-probe", check=False)
    assert result.returncode != 0, "the worker sees the host's /tmp"


def test_health_timer_runs_and_restarts_nothing(converged: Site) -> None:
    restarts = _show(converged, "NRestarts", WORKER)
    pid = _show(converged, "MainPID", WORKER)
    # The timer fires by itself (OnUnitActiveSec=health_interval, 1 min here, after OnBootSec).
    converged.run("systemctl start mlstack-health.service")  # a first run, so the interval timer counts from it
    first = _show(converged, "ExecMainExitTimestampMonotonic", "mlstack-health.service")
    wait_for(
        "the health timer to start mlstack-health.service again",
        lambda: _show(converged, "ExecMainExitTimestampMonotonic", "mlstack-health.service") not in ("", "0", first),
        150,
        2,
    )
    assert _show(converged, "Result", "mlstack-health.service") == "success"
    journal = converged.run("journalctl -b --no-pager -u mlstack-health.service -o cat").stdout
    assert "Starting mlstack-health.service" in journal or "mlstack model health" in journal, journal[-2000:]
    assert _show(converged, "NRestarts", WORKER) == restarts
    assert _show(converged, "MainPID", WORKER) == pid, "the health check restarted a healthy worker"


def test_the_health_user_may_restart_the_workers_and_nothing_else(converged: Site) -> None:
    """polkit (no sudo: NoNewPrivileges): verb restart on mlstack-worker-pub@*.service only."""
    as_health = "runuser -u mlstack-health -- systemctl"
    for forbidden in (f"stop {WORKER}", "restart mlstack-api.service", "restart rabbitmq-server.service"):
        result = converged.run(f"{as_health} {forbidden}", check=False)
        assert result.returncode != 0, f"mlstack-health may {forbidden}"
        assert "authentication required" in result.stderr, result.stderr
    pid = _show(converged, "MainPID", WORKER)
    converged.run(f"{as_health} restart {WORKER}", timeout=600)
    assert _show(converged, "MainPID", WORKER) != pid
    wait_for("the restarted worker's model", lambda: "CLF_IRIS v1 (production v1) ok" in _status_line(converged), 300)


def test_second_converge_changes_nothing(converged: Site) -> None:
    with phase("second converge"):
        result = converged.playbook("site.yml")
    assert result.returncode == 0, result.stdout[-8000:]
    changed = [line for line in result.stdout.splitlines() if line.startswith("changed:")]
    assert recap(result.stdout)["changed"] == 0, "\n".join(changed) + result.stdout[-3000:]


def test_a_control_node_without_the_credentials_stops(converged: Site, tmp_path: Path) -> None:
    """Against hosts that already run, a missing credentials file stops the run: no new secrets."""
    before = converged.run("md5sum /etc/mlstack/mlstack.env").stdout
    missing = tmp_path / "elsewhere" / "mlstack.yml"
    result = converged.playbook("site.yml", "-e", f"mlstack_credentials_file={missing}")
    assert result.returncode != 0
    assert "already run an mlstack site whose credentials file is not" in result.stdout, result.stdout[-4000:]
    assert not missing.exists()
    assert converged.run("md5sum /etc/mlstack/mlstack.env").stdout == before


def test_a_vault_encrypted_credentials_file_stays_encrypted(converged: Site, tmp_path: Path) -> None:
    vault_pass = tmp_path / "vault-pass"
    vault_pass.write_text("test-only-vault-password\n")
    encrypted = tmp_path / "vaulted" / "mlstack.yml"
    encrypted.parent.mkdir()
    encrypted.write_text(converged.credentials.read_text())
    vault = [str(DEPLOY_BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(vault_pass), str(encrypted)]
    subprocess.run(vault, check=True, capture_output=True)
    args = ["-e", f"mlstack_credentials_file={encrypted}", "--vault-password-file", str(vault_pass)]
    result = converged.playbook("playbooks/forget-rotated.yml", *args)
    assert result.returncode == 0, result.stdout[-4000:]
    assert encrypted.read_text().startswith("$ANSIBLE_VAULT")
    # A run that would need a new value in it stops instead of writing it in clear.
    values = yaml.safe_load(converged.credentials.read_text())
    del values["mlflow_flask_secret_key"]
    encrypted.write_text(yaml.safe_dump(values))
    subprocess.run(vault, check=True, capture_output=True)
    result = converged.playbook("playbooks/forget-rotated.yml", *args)
    assert result.returncode != 0
    assert "is vault-encrypted and this run needs new secrets" in result.stdout, result.stdout[-4000:]
    assert encrypted.read_text().startswith("$ANSIBLE_VAULT")


def test_mongodb_role_runs_up_to_the_login_check_and_stops_clearly(converged: Site) -> None:
    """The mongodb role itself on this host, as far as it goes without a real mongod: the
    packages and the server (tags mongodb_packages, mongodb_server) need MongoDB's repository,
    which these machines cannot reach, and are skipped. The rest runs: python3-debian, the
    pymongo 4 virtualenv, the wait for the port, and the admin login check over a direct
    connection, against the nx-27017 stand-in listening on the MongoDB port. The stand-in cannot
    authenticate, so the check must stop the play there with its message — not hide it and fail
    later at the application user — and change nothing; a second run does exactly the same."""
    before = converged.run("md5sum /etc/mlstack/mlstack.env").stdout
    args = ("-e", '{"mongodb_install": true}', "--skip-tags", "mongodb_packages,mongodb_server")
    with phase("mongodb role against the stand-in (twice)"):
        runs = [converged.playbook("playbooks/database.yml", *args) for _ in range(2)]
    for result in runs:
        assert result.returncode != 0, result.stdout[-4000:]
        said = " ".join(result.stdout.split())  # the message may be folded over lines
        assert "already has users and refuses the admin password" in said, result.stdout[-4000:]
        assert "TASK [mongodb : Create the application user" not in result.stdout, result.stdout[-4000:]
        assert "TASK [mongodb : Install pymongo 4 for the user and replica set modules]" in result.stdout
    assert recap(runs[1].stdout)["changed"] == 0, runs[1].stdout[-4000:]
    venv_python = "/opt/mlstack/venvs/ansible-mongodb/bin/python"
    version = converged.run(f"{venv_python} -c 'import pymongo; print(pymongo.version)'").stdout.strip()
    assert version.split(".")[0] == "4", version
    assert "install ok installed" in converged.run("dpkg-query -W -f='${Status}' python3-debian").stdout
    assert converged.run("test -e /etc/mongod.conf", check=False).returncode != 0, "skipped server tasks ran"
    assert converged.run("md5sum /etc/mlstack/mlstack.env").stdout == before


def test_retrain_timer_fires_on_its_schedule(converged: Site) -> None:
    """A short schedule set by retrain_on_calendar (every 2 minutes, no random delay): the bundle's
    timer starts its retrain unit by itself and the run is in the journal."""
    unit = "mlstack-retrain@example_bundle.service"
    with phase("converge with a short retrain schedule"):
        result = converged.playbook(
            "site.yml", "--tags", "retrain", "-e", "retrain_on_calendar=*:0/2", "-e", "retrain_randomized_delay=0"
        )
    assert result.returncode == 0, result.stdout[-6000:]
    timer = converged.run("systemctl cat mlstack-retrain@example_bundle.timer").stdout
    assert "OnCalendar=*:0/2" in timer, timer
    before = _show(converged, "ExecMainStartTimestampMonotonic", unit)
    with phase("wait for the retrain timer"):
        wait_for(
            f"{unit} to be started by its timer",
            lambda: _show(converged, "ExecMainStartTimestampMonotonic", unit) not in ("", "0", before),
            200,
            3,
        )
        wait_for(f"{unit} to finish", lambda: _show(converged, "ActiveState", unit) in ("inactive", "failed"), 1800, 5)
    journal = converged.run(f"journalctl -b --no-pager -u {unit} -o cat").stdout
    assert _show(converged, "Result", unit) == "success", journal[-4000:]
    assert f"Finished {unit}" in journal, journal[-4000:]
    converged.run("systemctl stop mlstack-retrain@example_bundle.timer")  # quiet for the next tests


def test_promotion_reaches_the_worker_without_restart(converged: Site, api: object) -> None:
    pid = _show(converged, "MainPID", WORKER)
    cli = f"set -a && . /etc/mlstack/mlstack.env && set +a && {CORE}/mlstack"
    with phase("train a second version and promote it"):
        converged.run("systemctl start mlstack-train.service", timeout=1800)
        converged.run(f"{cli} models promote CLF_IRIS", timeout=300)
        listing = converged.run(f"{cli} models list", timeout=120).stdout
        wait_for(
            "the worker to load production v2",
            lambda: "CLF_IRIS v2 (production v2) ok" in _status_line(converged),
            300,
            3,
        )
    assert _show(converged, "MainPID", WORKER) == pid, "the worker was restarted to take the promotion"
    answer = _predict(api)
    assert answer.get("status") == "Done", (answer, listing)


def _prometheus_targets(site: Site) -> dict[str, str]:
    """job -> health of every active target, from Prometheus's own API on the host."""
    script = (
        "import json, urllib.request; "
        "t = json.load(urllib.request.urlopen('http://127.0.0.1:9090/api/v1/targets', timeout=10)); "
        "print(json.dumps({a['labels']['job']: a['health'] for a in t['data']['activeTargets']}))"
    )
    result = site.run(f'python3 -c "{script}"', check=False, timeout=60)
    return yaml.safe_load(result.stdout) if result.returncode == 0 else {}


def test_monitoring_role_scrapes_the_stack(converged: Site) -> None:
    """monitoring_enabled: Debian's Prometheus and node exporter on this host, RabbitMQ's plugin on;
    every target (the API's /metrics, RabbitMQ, the node) is up, on loopback only; a second run
    changes nothing."""
    # Only the plays monitoring_enabled changes (RabbitMQ's plugin, the monitoring role): the rest of
    # site.yml reads no monitoring setting, and two whole runs would cost CI ~5 minutes.
    enabled = ("--tags", "rabbitmq,monitoring", "-e", '{"monitoring_enabled": true}')
    with phase("converge with monitoring_enabled (twice; rabbitmq and monitoring tags)"):
        first = converged.playbook("site.yml", *enabled)
        assert first.returncode == 0, first.stdout[-8000:]
        second = converged.playbook("site.yml", *enabled)
    assert second.returncode == 0, second.stdout[-8000:]
    changed = [line for line in second.stdout.splitlines() if line.startswith("changed:")]
    assert recap(second.stdout)["changed"] == 0, "\n".join(changed) + second.stdout[-3000:]
    for unit in ("prometheus.service", "prometheus-node-exporter.service"):
        assert converged.run(f"systemctl is-active {unit}", check=False).stdout.strip() == "active", unit
    wanted = {"mlstack-api": "up", "rabbitmq": "up", "node": "up"}
    wait_for("every Prometheus target up", lambda: _prometheus_targets(converged) == wanted, 120, 3)
    listening = converged.run("ss -Hltn '( sport = :9090 or sport = :9100 or sport = :15692 )'").stdout
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()}
    assert addresses and addresses <= {"127.0.0.1", "[::1]"}, listening


def test_power_off_and_boot(converged: Site) -> None:
    """Jobs accepted just before a power-off end Done after the boot. The worker is frozen (SIGSTOP) so
    that they are still pending: it stays the queue's consumer (the API accepts jobs only for a model
    with a consumer), its unacknowledged job goes back to the queue when the host goes down."""
    converged.run(f"systemctl kill --kill-whom=main --signal=SIGSTOP {WORKER}")
    with api_client(converged) as api:
        jobs = [api.submit("CLF_IRIS", "predict", IRIS) for _ in range(3)]  # type: ignore[attr-defined]
        for job in jobs:
            assert api.status(job).get("status") != "Done"  # type: ignore[attr-defined]
    host = converged.host
    with phase("power off + boot"):
        host.poweroff()
        host.boot(timeout=120)
        for unit in UNITS:
            wait_for(
                f"{unit} active after the boot",
                lambda u=unit: converged.run(f"systemctl is-active {u}", check=False).stdout.strip() == "active",
                240,
                2,
            )
    with api_client(converged) as api:  # a new tunnel: the old SSH connection went with the host
        for job in jobs:
            final = api.wait_done(job, timeout=240)  # type: ignore[attr-defined]
            assert final.get("status") == "Done", final


def test_destroy_leaves_only_the_kept_data(converged: Site) -> None:
    with phase("destroy.yml"):
        result = converged.playbook("playbooks/destroy.yml", "-e", "confirm=yes")
    assert result.returncode == 0, result.stdout[-6000:]
    units = converged.run("systemctl list-unit-files --no-legend --plain 'mlstack*' 'mlflow*'", check=False).stdout
    assert not units.strip(), units
    leftovers = converged.run(
        "ls -d /etc/mlstack /opt/mlstack /etc/mlflow /etc/systemd/system/mlstack* /etc/polkit-1/rules.d/*mlstack* "
        "2>/dev/null",
        check=False,
    ).stdout
    assert not leftovers.strip(), leftovers
    users = converged.run("getent passwd | cut -d: -f1").stdout.split()
    assert not [u for u in users if u.startswith("mlstack")], users
    converged.run("test -d /var/lib/mlstack && test -d /var/lib/mlflow")  # the kept data


# ---------------------------------------------------------------- a second, fresh host
def test_check_diff_on_a_fresh_host(harness: Harness, converged: Site) -> None:
    with phase("boot fresh host for --check"):
        host = harness.new_host("mlstack-check")
        host.boot()
    tmp = harness.run_dir / "check"
    tmp.mkdir(exist_ok=True)
    inventory, vars_file, credentials = _write_site_files(tmp, host, converged.source)
    # The same site's credentials (a control node that has them).
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.write_text(converged.credentials.read_text())
    credentials.chmod(0o600)
    check = Site(host, inventory, vars_file, credentials, converged.log_dir, converged.source)
    try:
        with phase("ansible-playbook site.yml --check --diff (fresh host)"):
            result = check.playbook("site.yml", "--check", "--diff")
        assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
        assert recap(result.stdout)["failed"] == 0
    finally:
        host.kill()
        log(f"{host.name}: stopped")
