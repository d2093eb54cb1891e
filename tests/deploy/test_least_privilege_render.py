"""Least privilege as deployed: each component gets only its own credentials in its env file, and
roles/rabbitmq's user tasks, run against this machine's real broker (in a vhost of their own, with
user names of their own), set exactly the permissions of the role's defaults, remove the shared
user of earlier releases and change nothing on a second run."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from deploy_support import DEFAULT_INVENTORY, RENDER_PLAYBOOK, REPO, Rendered, ansible_bin_dir, env_file, run

RABBITMQ_DEFAULTS = yaml.safe_load((REPO / "roles/rabbitmq/defaults/main.yml").read_text())


def _creds(rendered: Rendered) -> dict[str, str]:
    return yaml.safe_load(rendered.credentials.read_text())


def test_api_and_workers_get_their_own_broker_user(rendered_default: Rendered) -> None:
    creds, root = _creds(rendered_default), rendered_default.host("localhost")
    api = env_file(root / "etc/mlstack/mlstack.env")["MLSTACK_AMQP_URL"]
    worker = env_file(root / "etc/mlstack/worker.env")["MLSTACK_AMQP_URL"]
    assert api == f"amqp://mlstack-api:{creds['rabbitmq_api_password']}@127.0.0.1:5672/mlstack"
    assert worker == f"amqp://mlstack-worker:{creds['rabbitmq_worker_password']}@127.0.0.1:5672/mlstack"
    assert creds["rabbitmq_api_password"] != creds["rabbitmq_worker_password"]
    for path in (root / "etc/mlstack").rglob("*.env"):
        text = path.read_text()
        if path.name != "mlstack.env":
            assert creds["rabbitmq_api_password"] not in text, path
        if path.name != "worker.env":
            assert creds["rabbitmq_worker_password"] not in text, path


def test_api_gets_no_registry_credentials_and_workers_only_the_reader(rendered_multihost: Rendered) -> None:
    creds = _creds(rendered_multihost)
    for host in ("api1", "api2"):
        api = env_file(rendered_multihost.host(host) / "etc/mlstack/mlstack.env")
        assert not [k for k in api if k.startswith(("MLFLOW_", "AWS_"))], api.keys()
    for host in ("worker1", "worker2"):
        worker = env_file(rendered_multihost.host(host) / "etc/mlstack/worker.env")
        assert worker["MLFLOW_TRACKING_USERNAME"] == "mlstack-reader"
        assert worker["MLFLOW_TRACKING_PASSWORD"] == creds["mlflow_reader_password"]
    # The writer (admin) only where training and retrain run (the first workers host) and on MLflow's host.
    holders = sorted(
        f"{p.relative_to(rendered_multihost.root).parts[0]}:{p.name}"
        for p in rendered_multihost.root.rglob("*")
        if p.is_file() and creds["mlflow_admin_password"] in p.read_text(errors="replace")
    )
    assert holders == ["mlflow1:mlflow.env", "worker1:retrain.env"], holders


def test_an_external_broker_can_give_each_component_its_own_user(tmp_path: Path) -> None:
    api_url, worker_url = "amqp://ext-api:a@192.0.2.9:5672/x", "amqp://ext-worker:w@192.0.2.9:5672/x"
    extra = {"rabbitmq_install": False, "rabbitmq_external_url": "amqp://shared:s@192.0.2.9:5672/x",
             "rabbitmq_external_api_url": api_url, "rabbitmq_external_worker_url": worker_url}  # fmt: skip
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    python = ansible_bin_dir() / "python"
    result = run([str(ansible_bin_dir() / "ansible-playbook"), "-i", str(DEFAULT_INVENTORY), str(RENDER_PLAYBOOK),
                  "-e", f"render_root={tmp_path / 'hosts'}", "-e", f"mlstack_credentials_file={tmp_path / 'c.yml'}",
                  "-e", f"@{tmp_path / 'vars.json'}", "-e", f"ansible_python_interpreter={python}"])  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    etc = tmp_path / "hosts" / "localhost" / "etc" / "mlstack"
    assert env_file(etc / "mlstack.env")["MLSTACK_AMQP_URL"] == api_url
    assert env_file(etc / "worker.env")["MLSTACK_AMQP_URL"] == worker_url


def test_each_bundle_runs_as_its_own_system_user(tmp_path: Path) -> None:
    long_name = "Fraud_Detection_Model_With_A_Long_Name"
    bundles = [{"name": "example_bundle", "src": str(REPO / "example_bundle"), "instances": 2},
               {"name": long_name, "src": str(REPO / "example_bundle")}]  # fmt: skip
    (tmp_path / "vars.json").write_text(json.dumps({"worker_pub_bundles": bundles}))
    python = ansible_bin_dir() / "python"
    result = run([str(ansible_bin_dir() / "ansible-playbook"), "-i", str(DEFAULT_INVENTORY), str(RENDER_PLAYBOOK),
                  "-e", f"render_root={tmp_path / 'hosts'}", "-e", f"mlstack_credentials_file={tmp_path / 'c.yml'}",
                  "-e", f"@{tmp_path / 'vars.json'}", "-e", f"ansible_python_interpreter={python}"])  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    units = tmp_path / "hosts" / "localhost" / "etc" / "systemd" / "system"
    users = {
        path.parent.name: next(line for line in path.read_text().splitlines() if line.startswith("User="))
        for path in units.glob("mlstack-worker-pub@*.service.d/user.conf")
    }
    assert users == {
        "mlstack-worker-pub@example_bundle-1.service.d": "User=mlstack-w-example_bundle",
        "mlstack-worker-pub@example_bundle-2.service.d": "User=mlstack-w-example_bundle",
        f"mlstack-worker-pub@{long_name}-1.service.d": "User=mlstack-w-fraud_detection_model_",  # 32 characters at most
    }, users


def test_rotation_covers_the_new_secrets() -> None:
    play = yaml.safe_load((REPO / "playbooks/rotate-secrets.yml").read_text())
    rotated = play[0]["vars"]["rotate_secrets_default"]
    assert {"rabbitmq_api_password", "rabbitmq_worker_password", "mlflow_reader_password"} <= set(rotated)
    assert "rabbitmq_app_password" not in rotated


# ---- the role's user tasks on the real broker ----------------------------------------------------
def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.fixture
def broker_names() -> Iterator[dict[str, str]]:
    prefix = f"mlstack-test-{secrets.token_hex(4)}"
    names = {"vhost": f"{prefix}-vhost", "api": f"{prefix}-api", "worker": f"{prefix}-worker",
             "old": f"{prefix}-old", "admin": f"{prefix}-admin"}  # fmt: skip
    names.update({f"{k}_password": secrets.token_hex(16) for k in ("api", "worker", "admin")})  # kept across runs
    try:
        yield names
    finally:
        users = set(_rabbitmqctl("list_users", "--no-table-headers").split())
        for key in ("api", "worker", "old", "admin"):
            if names[key] in users:
                _rabbitmqctl("delete_user", names[key])
        if names["vhost"] in _rabbitmqctl("list_vhosts", "--no-table-headers").split():
            _rabbitmqctl("delete_vhost", names["vhost"])


def _converge(tmp_path: Path, names: dict[str, str]) -> str:
    play = tmp_path / "users.yml"
    play.write_text(
        f"""- name: RabbitMQ users of roles/rabbitmq
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [{REPO}/roles/rabbitmq/defaults/main.yml]
  tasks:
    - name: The role's user tasks
      ansible.builtin.include_tasks: {REPO}/roles/rabbitmq/tasks/users.yml
    - name: What playbooks/retire-users.yml runs once API and workers have their own users
      ansible.builtin.include_tasks: {REPO}/roles/rabbitmq/tasks/retire_users.yml
"""
    )
    extra = tmp_path / "vars.json"
    extra.write_text(
        json.dumps(
            {
                "rabbitmq_vhost": names["vhost"],
                "rabbitmq_api_user": names["api"],
                "rabbitmq_worker_user": names["worker"],
                "rabbitmq_app_user": names["old"],  # the shared user of an earlier release
                "rabbitmq_admin_user": names["admin"],
                "rabbitmq_install": True,  # site-wide (inventory/group_vars), which this play does not load
                "rabbitmq_management": False,
                "rabbitmq_remove_guest": False,  # every test stack of this machine logs in as guest
                "mlstack_credentials": {
                    f"rabbitmq_{k}_password": names[f"{k}_password"] for k in ("api", "worker", "admin")
                },
            }
        )
    )
    python = sys.executable  # has requests, which the vhost module imports (the deploy venv has not)
    cmd = [str(ansible_bin_dir() / "ansible-playbook"), "-i", "localhost,", str(play), "-e", f"@{extra}",
           "-e", f"ansible_python_interpreter={python}"]  # fmt: skip
    result = run(cmd, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def test_role_sets_exactly_the_default_permissions_and_removes_the_shared_user(
    tmp_path: Path, broker_names: dict[str, str]
) -> None:
    _rabbitmqctl("add_user", broker_names["old"], secrets.token_hex(16))
    _converge(tmp_path, broker_names)
    for component in ("api", "worker"):
        wanted = RABBITMQ_DEFAULTS[f"rabbitmq_{component}_permissions"]
        lines = _rabbitmqctl("list_user_permissions", broker_names[component], "--no-table-headers").splitlines()
        assert [line.split("\t") for line in lines] == [
            [broker_names["vhost"], wanted["configure"], wanted["write"], wanted["read"]]
        ], lines
    users = _rabbitmqctl("list_users", "--no-table-headers").split()
    assert broker_names["old"] not in users and "guest" in users
    second = _converge(tmp_path, broker_names)
    assert " changed=0 " in second.rsplit("PLAY RECAP", 1)[1], second[-3000:]
