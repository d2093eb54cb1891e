"""The workers' read-only MLflow user, against a real MLflow server configured like roles/mlflow
(its basic_auth.ini template, default_permission from the role's defaults): the role's own tasks
(roles/mlflow/tasks/users.yml) create the user, keep it on a second run and follow a rotated
password; the reader then loads the production model and reads the registry as a worker does,
and MLflow refuses it (403) every write a model bundle could use to take over another model."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jinja2
import pytest
import yaml
from deploy_support import REPO, ansible_bin_dir, run
from mlstack.registry import RegistryClient
from support.procs import ManagedProcess, free_port, wait_for

ROLE = REPO / "roles" / "mlflow"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
CONNECTIONS = yaml.safe_load((REPO / "inventory" / "group_vars" / "all" / "connections.yml").read_text())
MODEL = "LP_MODEL"


@dataclass
class Server:
    url: str
    admin_password: str
    home: Path
    python: Path  # MLflow's venv: the client scripts below run there


def _mlflow_python() -> Path:
    venv = os.environ.get("MLSTACK_MLFLOW_VENV") or str(REPO / ".dev" / "venvs" / "mlflow")
    python = Path(venv) / "bin" / "python"
    assert python.exists(), f"no MLflow venv at {venv} (bin/test builds it)"
    return python


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("mlflow-reader")
    python = _mlflow_python()
    auth_ini = home / "basic_auth.ini"
    auth_ini.write_text(
        jinja2.Template((ROLE / "templates" / "basic_auth.ini.j2").read_text()).render(
            ansible_managed="test",
            mlflow_default_permission=DEFAULTS["mlflow_default_permission"],
            mlflow_auth_database_uri=f"sqlite:///{home}/basic_auth.db",
            mlflow_admin_user="admin",
            mlflow_env_file="(test environment)",
        )
    )
    port, admin_password = free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLSTACK_"))}
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(auth_ini),
        MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    argv = [str(python.parent / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{home}/mlflow.db",
            "--serve-artifacts", "--artifacts-destination", str(home / "artifacts")]  # fmt: skip
    proc = ManagedProcess("mlflow[reader]", argv, env, home / "mlflow.log", cwd=home)
    proc.start()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not proc.alive():
            raise AssertionError(f"MLflow exited:\n{proc.log_tail()}")
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 120, "MLflow /health", interval=0.5)
        yield Server(url, admin_password, home, python)
    finally:
        proc.stop()


def _converge(server: Server, reader_password: str) -> str:
    """roles/mlflow/tasks/users.yml against the server, as the role runs it after its admin tasks."""
    play = server.home / "users.yml"
    play.write_text(
        f"""- name: MLflow users of roles/mlflow
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [{ROLE}/defaults/main.yml]
  tasks:
    - name: The role's user tasks
      ansible.builtin.include_tasks: {ROLE}/tasks/users.yml
"""
    )
    extra = server.home / "vars.json"
    extra.write_text(
        json.dumps(
            {
                "mlflow_local_url": server.url,
                "mlflow_admin_user": "admin",
                "mlflow_reader_user": CONNECTIONS["mlflow_reader_user"],
                "mlstack_credentials": {
                    "mlflow_admin_password": server.admin_password,
                    "mlflow_reader_password": reader_password,
                },
            }
        )
    )
    cmd = [str(ansible_bin_dir() / "ansible-playbook"), "-i", "localhost,", str(play), "-e", f"@{extra}",
           "-e", f"ansible_python_interpreter={sys.executable}"]  # fmt: skip
    result = run(cmd, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout.rsplit("PLAY RECAP", 1)[1]


def _client_script(server: Server, user: str, password: str, script: str) -> dict[str, object]:
    """Run `script` with MLflow's own client as `user`; it prints one JSON object."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLSTACK_"))}
    env.update(MLFLOW_TRACKING_URI=server.url, MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    done = subprocess.run(
        [str(server.python), "-c", script], env=env, cwd=server.home, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


PUBLISH = f"""
import json, mlflow
from mlflow import MlflowClient

class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [f"echo:{{x}}" for x in model_input]

mlflow.set_experiment("lp")
with mlflow.start_run() as run:
    mlflow.pyfunc.log_model(name="model", python_model=Echo(), registered_model_name="{MODEL}")
client = MlflowClient()
version = client.search_model_versions("name='{MODEL}'")[0].version
client.set_registered_model_alias("{MODEL}", "production", version)
print(json.dumps({{"version": version, "run_id": run.info.run_id}}))
"""

# What a bundle holding the reader's password might try; each answer is the HTTP status MLflow gave.
AS_READER = f"""
import json, mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

client = MlflowClient()
out = {{"predicted": list(mlflow.pyfunc.load_model("models:/{MODEL}@production").predict(["a", "b"]))}}
version = client.get_model_version_by_alias("{MODEL}", "production")

def status(call):
    try:
        call()
        return 200
    except MlflowException as exc:
        return exc.get_http_status_code()

out["set_alias"] = status(lambda: client.set_registered_model_alias("{MODEL}", "production", "1"))
out["create_version"] = status(
    lambda: client.create_model_version("{MODEL}", version.source, run_id=version.run_id))
out["delete_alias"] = status(lambda: client.delete_registered_model_alias("{MODEL}", "production"))
out["delete_model"] = status(lambda: client.delete_registered_model("{MODEL}"))
out["set_tag"] = status(lambda: client.set_registered_model_tag("{MODEL}", "owner", "me"))
out["log_to_its_run"] = status(lambda: client.log_metric(version.run_id, "accuracy", 1.0))
print(json.dumps(out))
"""


def test_the_role_makes_a_reader_that_loads_models_and_cannot_change_them(server: Server) -> None:
    reader, password = CONNECTIONS["mlflow_reader_user"], secrets.token_hex(16)
    first = _converge(server, password)
    assert " changed=1 " in first, first
    assert " changed=0 " in _converge(server, password), "a second run must change nothing"

    published = _client_script(server, "admin", server.admin_password, PUBLISH)
    tried = _client_script(server, reader, password, AS_READER)
    assert tried["predicted"] == ["echo:a", "echo:b"], tried
    refused = {k: v for k, v in tried.items() if k != "predicted"}
    assert refused == dict.fromkeys(refused, 403), refused

    # What the worker runtime itself asks (services/mlstack/registry.py), with the reader's password.
    client = RegistryClient(server.url, reader, password)
    assert client.production_version(MODEL) == published["version"]

    # A rotated password reaches the server on the next run; the old one no longer opens it.
    rotated = secrets.token_hex(16)
    assert " changed=1 " in _converge(server, rotated)
    old = httpx.get(f"{server.url}/api/2.0/mlflow/registered-models/search", auth=(reader, password))
    assert old.status_code == 401, old.text
    assert RegistryClient(server.url, reader, rotated).production_version(MODEL) == published["version"]
