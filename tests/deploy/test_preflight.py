"""The preflight play of site.yml (playbooks/preflight.yml): one clear message listing every
problem, before anything is changed. Runs against this machine with the local connection."""

from __future__ import annotations

from pathlib import Path

import yaml
from deploy_support import REPO, ansible_bin_dir, run


def _preflight(tmp_path: Path, hosts: dict[str, dict[str, object]], **extra: str) -> str:
    inventory_dir = tmp_path / "inventory"
    inventory_dir.mkdir()
    (inventory_dir / "group_vars").symlink_to(REPO / "inventory" / "group_vars")
    local = {"ansible_connection": "local", "ansible_python_interpreter": str(ansible_bin_dir() / "python")}
    groups = {
        g: {"hosts": dict.fromkeys(hosts)} for g in ("database", "queue", "storage", "registry", "api", "workers")
    }
    all_hosts = {name: {**local, **vars_} for name, vars_ in hosts.items()}
    (inventory_dir / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": all_hosts, "children": groups}}))
    cmd = [
        str(ansible_bin_dir() / "ansible-playbook"),
        "-i",
        str(inventory_dir / "hosts.yml"),
        "playbooks/preflight.yml",
    ]
    for key, value in extra.items():
        cmd += ["-e", f"{key}={value}"]
    result = run(cmd)
    return result.stdout + result.stderr


def test_inconsistent_inventory_stops_with_every_problem_at_once(tmp_path: Path) -> None:
    out = _preflight(
        tmp_path,
        {"h1": {"mlstack_address": "127.0.0.1"}, "h2": {"mlstack_address": "192.0.2.2"}},
        minio_install="false",
    )
    assert "mlstack cannot be deployed as configured" in out, out[-3000:]
    assert "minio_install is false but minio_external_endpoint is empty" in out
    assert "group database has 2 hosts" in out
    assert "h1: mlstack_address is 127.0.0.1 but the inventory has 2 hosts" in out
    assert "failed=1" in out


def test_a_host_without_systemd_is_named(tmp_path: Path) -> None:
    out = _preflight(tmp_path, {"localhost": {"mlstack_address": "127.0.0.1"}})
    if Path("/run/systemd/system").exists():  # this machine boots with systemd: nothing to report
        assert "failed=0" in out, out[-3000:]
    else:  # the build machines: no systemd as PID 1
        assert "localhost: systemd is not the init system" in out, out[-3000:]
        assert 'add "[boot] systemd=true" to /etc/wsl.conf' in out
