"""The preflight play of site.yml (playbooks/preflight.yml): one clear message listing every
problem, before anything is changed. Runs against this machine with the local connection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from deploy_support import REPO, ansible_bin_dir, run


def _preflight(
    tmp_path: Path, hosts: dict[str, dict[str, object]], playbook: str = "playbooks/preflight.yml", **extra: object
) -> str:
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
        playbook,
    ]
    for key, value in extra.items():
        cmd += ["-e", json.dumps({key: value})]  # JSON: lists stay lists
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


def _addresses(count: int) -> dict[str, dict[str, object]]:
    return {f"h{i}": {"mlstack_address": f"192.0.2.{i}"} for i in range(1, count + 1)}


QUEUE_OF_2 = "group queue has 2 hosts: a 2-node RabbitMQ cluster loses its majority when either node stops"


@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_queue_group_of_2_is_refused(tmp_path: Path, count: int) -> None:
    out = _preflight(tmp_path, _addresses(count))
    # The play ran its checks (this machine has other problems, e.g. no systemd as PID 1).
    assert "Check the host and the inventory" in out, out[-3000:]
    assert (QUEUE_OF_2 in out) == (count == 2), out[-3000:]
    if count == 2:
        assert "use 1 node or 3 or more." in out


def test_a_queue_group_of_2_is_fine_with_an_external_rabbitmq(tmp_path: Path) -> None:
    out = _preflight(
        tmp_path, _addresses(2), rabbitmq_install="false", rabbitmq_external_url="amqp://mlstack@192.0.2.9:5672/mlstack"
    )
    assert "group database has 2 hosts" in out, out[-3000:]  # the checks ran
    assert QUEUE_OF_2 not in out


# ---------------------------------------------------------------- MinIO drives
# The drive check of roles/minio (tasks/preflight.yml) reads ansible_facts['mounts']. This machine
# has one disk, so the test play fakes the mounts fact (set_fact with cacheable: true makes it a
# fact) and then runs the role's preflight tasks, as the minio role does first in playbooks/storage.yml.
MINIO_PREFLIGHT_PLAY = f"""
- name: MinIO preflight with the mounts of the test
  hosts: storage
  gather_facts: false
  # The role's defaults and preflight tasks only: include_role would run its dependency (the mlstack role).
  vars_files: [{REPO}/roles/minio/defaults/main.yml]
  tasks:
    - name: Fake the mounts
      ansible.builtin.set_fact:
        mounts: "{{{{ test_mounts }}}}"
        cacheable: true
    - name: The role's preflight
      ansible.builtin.include_tasks: {REPO}/roles/minio/tasks/preflight.yml
"""
ROOT_DRIVE = "is on the root disk (mounted at /)"


def _minio_preflight(tmp_path: Path, hosts: int, mounts: list[str], drives: list[str]) -> str:
    play = tmp_path / "minio-preflight.yml"
    play.write_text(MINIO_PREFLIGHT_PLAY)
    return _preflight(
        tmp_path,
        _addresses(hosts),
        playbook=str(play),
        test_mounts=[{"mount": m, "fstype": "ext4"} for m in mounts],
        minio_data_paths=drives,
    )


def test_distributed_minio_refuses_drives_on_the_root_disk(tmp_path: Path) -> None:
    # /srv/d10 is not below the mount point /srv/d1: a prefix of the path's text is not enough.
    out = _minio_preflight(tmp_path, 2, ["/", "/srv/d1", "/var"], ["/srv/d1/minio", "/srv/d10", "/var/minio", "/data/"])
    for host in ("h1", "h2"):
        assert f"{host}: MinIO drive /srv/d10 {ROOT_DRIVE}" in out, out[-3000:]
        assert f"{host}: MinIO drive /data/ {ROOT_DRIVE}" in out
    assert "/srv/d1/minio " + ROOT_DRIVE not in out and "/var/minio " + ROOT_DRIVE not in out
    assert "failed=1" in out


def test_distributed_minio_accepts_drives_on_their_own_disks(tmp_path: Path) -> None:
    out = _minio_preflight(tmp_path, 2, ["/", "/srv/d1", "/srv/d2"], ["/srv/d1", "/srv/d2/minio"])
    assert ROOT_DRIVE not in out, out[-3000:]
    assert "h1" in out and "failed=0" in out, out[-3000:]


def test_single_minio_keeps_its_drive_on_the_root_disk(tmp_path: Path) -> None:
    out = _minio_preflight(tmp_path, 1, ["/"], ["/var/lib/minio/data"])
    assert ROOT_DRIVE not in out, out[-3000:]
    assert "failed=0" in out, out[-3000:]


def test_unit_limits_systemd_cannot_parse_are_refused(tmp_path: Path) -> None:
    out = _preflight(
        tmp_path,
        _addresses(1),
        api_memory_max="2GB",
        worker_pub_tasks_max="many",
        mlflow_memory_max="1.5G",
        minio_tasks_max=2048,
        health_memory_max="",
        retrain_tasks_max="infinity",
    )
    assert 'api_memory_max is "2GB": use a size such as 512M or 2G' in out, out[-3000:]
    assert 'worker_pub_tasks_max is "many": use a number such as 256' in out
    for accepted in ("mlflow_memory_max", "minio_tasks_max", "health_memory_max", "retrain_tasks_max"):
        assert f"{accepted} is" not in out
