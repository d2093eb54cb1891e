"""The roles' templates rendered for the default and the example multi-host inventory:
credentials, systemd verification and exposure scores, and who points at whom."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_support import (
    DEFAULT_INVENTORY,
    EXPOSURE,
    REPO,
    Rendered,
    env_file,
    prepare_verify_root,
    render,
    unit_names,
)

SECRETS = yaml.safe_load((REPO / "roles/mlstack/defaults/main.yml").read_text())["mlstack_secret_specs"]
HARDENING = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=",
    "SystemCallFilter=@system-service",
    "RestrictAddressFamilies=AF_UNIX",
    "RestrictNamespaces=yes",
]
LONG_RUNNING = ["mlstack-api.service", "mlstack-worker-pub@.service", "minio.service", "mlflow.service"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- credentials
def test_credentials_generated_private_complete_and_never_printed(rendered_default: Rendered) -> None:
    creds = rendered_default.credentials
    assert creds.stat().st_mode & 0o777 == 0o600
    assert creds.parent.stat().st_mode & 0o777 == 0o700
    values = yaml.safe_load(creds.read_text())
    assert set(SECRETS) <= set(values)
    for name, spec in SECRETS.items():
        assert len(values[name]) == spec["length"], name
    assert values["api_token"] != values["worker_token"]
    for value in values.values():
        assert value not in rendered_default.output


def test_second_run_keeps_secrets_and_changes_nothing(tmp_path: Path, rendered_default: Rendered) -> None:
    creds = tmp_path / "credentials" / "mlstack.yml"
    creds.parent.mkdir(mode=0o700)
    creds.write_bytes(rendered_default.credentials.read_bytes())
    creds.chmod(0o600)
    root = tmp_path / "hosts"
    first = render(DEFAULT_INVENTORY, root, creds)
    assert first.returncode == 0, first.stdout[-3000:]
    assert creds.read_bytes() == rendered_default.credentials.read_bytes()
    files = {p: _sha(p) for p in root.rglob("*") if p.is_file()}
    second = render(DEFAULT_INVENTORY, root, creds)
    assert second.returncode == 0, second.stdout[-3000:]
    assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=0\s", second.stdout), second.stdout[-2000:]
    assert files == {p: _sha(p) for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- units
@pytest.fixture(scope="module")
def verify_root(rendered_default: Rendered) -> Path:
    root = rendered_default.host("localhost")
    prepare_verify_root(root)
    return root


def test_every_unit_is_rendered(verify_root: Path) -> None:
    names = set(unit_names(verify_root))
    assert names == {
        "mlstack-api.service",
        "mlstack-worker-pub@example_bundle-1.service",
        "mlstack-retrain@example_bundle-1.service",
        "mlstack-retrain@example_bundle-1.timer",
        "mlstack-train.service",
        "mlstack-health.service",
        "mlstack-health.timer",
        "minio.service",
        "mlflow.service",
    }


def test_units_pass_systemd_analyze_verify(verify_root: Path) -> None:
    for name in unit_names(verify_root):
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", f"--root={verify_root}", name],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0 and not result.stderr.strip(), f"{name}:\n{result.stdout}{result.stderr}"


def test_units_score_below_5_on_systemd_analyze_security(verify_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    services = [n for n in unit_names(verify_root) if n.endswith(".service")]
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={verify_root}", "--no-pager", *services],
        capture_output=True,
        text=True,
        check=False,
    )
    scores = {m.group(1): float(m.group(2)) for m in EXPOSURE.finditer(result.stdout)}
    with capsys.disabled():
        print("\nsystemd-analyze security --offline=true (exposure, lower is safer):")
        for name in services:
            print(f"  {scores.get(name, float('nan')):4.1f}  {name}")
    assert set(scores) == set(services), result.stdout[-3000:] + result.stderr
    assert all(score < 5.0 for score in scores.values()), scores


@pytest.mark.parametrize("unit", sorted((REPO / "systemd").glob("*.service.j2")), ids=lambda p: p.name)
def test_units_are_hardened(verify_root: Path, unit: Path) -> None:
    name = unit.name.removesuffix(".j2")
    text = (verify_root / "etc/systemd/system" / name).read_text()
    for directive in HARDENING:
        assert re.search(rf"^{re.escape(directive)}", text, re.M), f"{name}: no {directive}"
    user = re.search(r"^User=(\S+)", text, re.M)
    assert user, name
    assert user.group(1) != "root", name  # the health check too: polkit lets it restart the workers
    if name in LONG_RUNNING:
        assert "Restart=on-failure" in text and "StartLimitBurst=" in text and "StartLimitIntervalSec=" in text
    assert "StandardOutput=" not in text  # journald


def test_api_and_workers_speak_sd_notify(verify_root: Path) -> None:
    units = verify_root / "etc/systemd/system"
    for name in ("mlstack-api.service", "mlstack-worker-pub@.service"):
        assert "Type=notify" in (units / name).read_text()


def test_retrain_timer_is_persistent_and_randomized(verify_root: Path) -> None:
    timer = (verify_root / "etc/systemd/system/mlstack-retrain@.timer").read_text()
    assert "Persistent=true" in timer and "RandomizedDelaySec=" in timer and "OnCalendar=" in timer


def test_worker_instance_settings(verify_root: Path) -> None:
    inst = env_file(verify_root / "etc/mlstack/workers/example_bundle-1.env")
    assert inst["MLSTACK_BUNDLE_DIR"] == "/opt/mlstack/bundles/example_bundle/src/worker_pub"
    assert inst["MLSTACK_WORKER_EXEC"] == "/opt/mlstack/bundles/example_bundle/venvs/pub/bin/mlstack-worker"
    assert re.fullmatch(r"[A-Za-z0-9_-]+", inst["MLSTACK_WORKER_ID"])
    unit = (verify_root / "etc/systemd/system/mlstack-worker-pub@.service").read_text()
    assert "Environment=MLSTACK_STATE_DIR=/var/lib/mlstack/workers/%i" in unit
    assert "EnvironmentFile=/etc/mlstack/workers/%i.env" in unit


def test_default_inventory_keeps_everything_on_loopback(verify_root: Path) -> None:
    api = env_file(verify_root / "etc/mlstack/mlstack.env")
    assert api["MLSTACK_BIND"] == "127.0.0.1:8000"
    assert "@127.0.0.1:27017/ml_api_db" in api["MLSTACK_MONGODB_URI"]
    assert api["MLSTACK_AMQP_URL"].endswith("@127.0.0.1:5672/mlstack")
    assert "listeners.tcp.1 = 127.0.0.1:5672" in (verify_root / "etc/rabbitmq/rabbitmq.conf").read_text()
    assert "--host 127.0.0.1" in (verify_root / "etc/systemd/system/mlflow.service").read_text()


# ---------------------------------------------------------------- multi-host
ADDR = {
    "db": ["192.0.2.11", "192.0.2.12", "192.0.2.13"],
    "mq1": "192.0.2.21",
    "s3": ["192.0.2.31", "192.0.2.32", "192.0.2.33", "192.0.2.34"],
    "mlflow1": "192.0.2.41",
    "api1": "192.0.2.51",
}


def test_multihost_mongodb_replica_set(rendered_multihost: Rendered) -> None:
    for host in ("db1", "db2", "db3"):
        conf = yaml.safe_load((rendered_multihost.host(host) / "etc/mongod.conf").read_text())
        assert conf["replication"]["replSetName"] == "rs0"
        assert conf["security"]["keyFile"] and conf["security"]["authorization"] == "enabled"
        assert conf["net"]["bindIp"] == "0.0.0.0"
    for host in ("api1", "api2"):
        uri = env_file(rendered_multihost.host(host) / "etc/mlstack/mlstack.env")["MLSTACK_MONGODB_URI"]
        members = ",".join(f"{a}:27017" for a in ADDR["db"])
        assert f"@{members}/ml_api_db?authSource=ml_api_db&replicaSet=rs0&tls=true" in uri


def test_multihost_rabbitmq_cluster(rendered_multihost: Rendered) -> None:
    for host in ("mq1", "mq2", "mq3"):
        conf = (rendered_multihost.host(host) / "etc/rabbitmq/rabbitmq.conf").read_text()
        nodes = re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+ = (\S+)$", conf, re.M)
        assert nodes == ["rabbit@mq1", "rabbit@mq2", "rabbit@mq3"]
        assert "listeners.ssl.default = 0.0.0.0:5671" in conf  # AMQPS between hosts
    for host, file in (("api1", "mlstack.env"), ("worker1", "worker.env"), ("worker2", "worker.env")):
        url = env_file(rendered_multihost.host(host) / "etc/mlstack" / file)["MLSTACK_AMQP_URL"]
        # Every node, mq1 first (tests/deploy/test_queue_render.py checks the list and the queue type).
        user = "mlstack-api" if file == "mlstack.env" else "mlstack-worker"  # one user per component
        assert url.startswith(f"amqps://{user}:") and f"@{ADDR['mq1']}:5671/mlstack," in url


def test_multihost_minio_distributed_and_mlflow_on_it(rendered_multihost: Rendered) -> None:
    for i in range(1, 5):
        volumes = env_file(rendered_multihost.host(f"s3-{i}") / "etc/default/minio")["MINIO_VOLUMES"].split()
        assert volumes == [f"https://{a}:9000/var/lib/minio/data" for a in ADDR["s3"]]
    mlflow = env_file(rendered_multihost.host("mlflow1") / "etc/mlflow/mlflow.env")
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == f"https://{ADDR['s3'][0]}:9000"
    assert f"{ADDR['mlflow1']}:*" in mlflow["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert not (rendered_multihost.host("mlflow1") / "etc/default/minio").exists()


def test_multihost_workers_reach_api_and_registry_on_other_hosts(rendered_multihost: Rendered) -> None:
    for host in ("worker1", "worker2"):
        root = rendered_multihost.host(host)
        env = env_file(root / "etc/mlstack/worker.env")
        assert env["MLSTACK_API_URL"] == f"https://{ADDR['api1']}:8000"
        assert env["MLFLOW_TRACKING_URI"] == f"https://{ADDR['mlflow1']}:5000"
        # Artifacts are proxied by MLflow: the workers get no S3 keys.
        assert "AWS_SECRET_ACCESS_KEY" not in env
    instances = sorted(p.name for p in (rendered_multihost.host("worker2") / "etc/mlstack/workers").iterdir())
    assert instances == [f"example_bundle-{i}.env" for i in (1, 2, 3)]
    assert (rendered_multihost.host("worker1") / "etc/systemd/system/mlstack-retrain@.timer").exists()
    assert not (rendered_multihost.host("worker2") / "etc/systemd/system/mlstack-retrain@.timer").exists()
    assert not (rendered_multihost.host("api1") / "etc/systemd/system/mlstack-worker-pub@.service").exists()
    retrain = env_file(rendered_multihost.host("worker1") / "etc/mlstack/retrain.env")
    assert retrain["MLFLOW_TRACKING_URI"] == f"https://{ADDR['mlflow1']}:5000"


def test_health_runs_unprivileged_and_may_restart_only_the_workers(verify_root: Path) -> None:
    env = env_file(verify_root / "etc/mlstack/health.env")
    assert env["MLSTACK_HEALTH_WORKER_UNITS"] == "mlstack-worker-pub@example_bundle-1.service"
    assert int(env["MLSTACK_HEALTH_MAX_RESTARTS"]) >= 1
    unit = (verify_root / "etc/systemd/system/mlstack-health.service").read_text()
    assert re.search(r"^User=mlstack-health$", unit, re.M) and "SupplementaryGroups" not in unit
    rule = (verify_root / "etc/polkit-1/rules.d/60-mlstack-health.rules").read_text()
    assert 'subject.user === "mlstack-health"' in rule
    assert 'action.lookup("verb") === "restart"' in rule
    assert "org.freedesktop.systemd1.manage-units" in rule and "mlstack-worker-pub@" in rule


def test_retrain_is_one_unit_per_bundle(verify_root: Path) -> None:
    unit = (verify_root / "etc/systemd/system/mlstack-retrain@.service").read_text()
    assert "ExecStart=" in unit and "%i" in unit.split("ExecStart=", 1)[1].splitlines()[0]
    assert len(re.findall(r"^ExecStart=", unit, re.M)) == 1
    worker = (verify_root / "etc/systemd/system/mlstack-worker-pub@.service").read_text()
    assert re.search(r"^TimeoutStartSec=\d+$", worker, re.M)
