"""Resource limits of the units (MemoryMax=, TasksMax=) come from role variables: the defaults
reach every unit, a changed value reaches its unit, and empty means no limit."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from deploy_support import DEFAULT_INVENTORY, RENDER_PLAYBOOK, REPO, Rendered, ansible_bin_dir, prepare_verify_root, run

# Unit -> (MemoryMax, TasksMax) with the roles' defaults.
DEFAULTS = {
    "mlstack-api.service": ("2G", "512"),
    "mlstack-worker-pub@.service": ("4G", "256"),
    "mlstack-retrain@.service": ("4G", "256"),
    "mlstack-train.service": ("4G", "256"),
    "mlstack-health.service": ("256M", "64"),
    "mlflow.service": ("2G", "512"),
    "minio.service": ("4G", "1024"),
}
CHANGED = {
    "api_workers": 10,  # api_tasks_max is left to its default, which follows the gunicorn workers
    "api_memory_max": "1536M",
    "worker_pub_memory_max": "",
    "worker_pub_tasks_max": "infinity",
    "retrain_memory_max": "6G",
    "retrain_tasks_max": 128,
    "health_memory_max": "128M",
    "health_tasks_max": "32",
    "mlflow_memory_max": "3G",
    "mlflow_tasks_max": "700",
    "minio_memory_max": "80%",
    "minio_tasks_max": "2048",
}
EXPECTED_CHANGED = {
    "mlstack-api.service": ("1536M", "864"),
    "mlstack-worker-pub@.service": ("infinity", "infinity"),
    "mlstack-retrain@.service": ("6G", "128"),
    "mlstack-train.service": ("6G", "128"),
    "mlstack-health.service": ("128M", "32"),
    "mlflow.service": ("3G", "700"),
    "minio.service": ("80%", "2048"),
}


def _limits(unit: Path) -> tuple[str, str]:
    text = unit.read_text()
    memory = re.findall(r"^MemoryMax=(.*)$", text, re.M)
    tasks = re.findall(r"^TasksMax=(.*)$", text, re.M)
    assert len(memory) == 1 and len(tasks) == 1, f"{unit.name}: {memory} {tasks}"
    return memory[0], tasks[0]


@pytest.fixture(scope="module")
def rendered_changed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default inventory rendered with every limit changed (extra vars: above the roles' defaults)."""
    tmp = tmp_path_factory.mktemp("render-limits")
    bin_dir = ansible_bin_dir()
    result = run(
        [
            str(bin_dir / "ansible-playbook"),
            "-i",
            str(DEFAULT_INVENTORY),
            str(RENDER_PLAYBOOK),
            "-e",
            f"render_root={tmp / 'hosts'}",
            "-e",
            f"mlstack_credentials_file={tmp / 'credentials' / 'mlstack.yml'}",
            "-e",
            f"ansible_python_interpreter={bin_dir / 'python'}",
            "-e",
            json.dumps(CHANGED),
        ]
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return tmp / "hosts" / "localhost"


def test_every_unit_template_has_limits() -> None:
    services = {p.name.removesuffix(".j2") for p in (REPO / "systemd").glob("*.service.j2")}
    assert services == set(DEFAULTS)


def test_default_limits_reach_every_unit(rendered_default: Rendered) -> None:
    units = rendered_default.host("localhost") / "etc/systemd/system"
    assert {name: _limits(units / name) for name in DEFAULTS} == DEFAULTS


def test_changed_limits_reach_their_units(rendered_changed: Path) -> None:
    units = rendered_changed / "etc/systemd/system"
    assert {name: _limits(units / name) for name in EXPECTED_CHANGED} == EXPECTED_CHANGED


def test_changed_limits_pass_systemd_analyze_verify(rendered_changed: Path) -> None:
    prepare_verify_root(rendered_changed)
    for name in EXPECTED_CHANGED:
        unit = name.replace("@.", "@example_bundle-1.")
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", f"--root={rendered_changed}", unit],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0 and not result.stderr.strip(), f"{unit}:\n{result.stdout}{result.stderr}"


def test_minio_drives_are_writable_in_its_sandbox(rendered_default: Rendered) -> None:
    unit = (rendered_default.host("localhost") / "etc/systemd/system/minio.service").read_text()
    assert re.search(r"^ProtectSystem=strict$", unit, re.M)
    assert re.findall(r"^ReadWritePaths=(.*)$", unit, re.M) == ["/var/lib/minio/data"]
