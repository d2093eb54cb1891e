"""The registry service as bin/mlstack-registry runs it, the CLI's errors, and the retrain rules:
return types checked as the original retrain script checks them, and retraining never promotes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
from lifecycle_support import BUNDLES, EXAMPLE, LAUNCHER, MODEL, Registry, cli_env, mlstack, ok
from support.procs import free_port


def one_clear_line(result: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlstack: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_registry_requires_credentials_and_has_no_open_signup(registry: Registry) -> None:
    url = registry.url
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    anonymous = [
        httpx.get(f"{url}/api/2.0/mlflow/registered-models/search", timeout=10),
        httpx.post(f"{url}/api/2.0/mlflow/users/create", json={"username": "eve", "password": "x" * 16}, timeout=10),
        httpx.get(f"{url}/signup", timeout=10),
    ]
    assert [r.status_code for r in anonymous] == [401, 401, 401], [(r.url, r.status_code) for r in anonymous]
    user, password = registry.env["MLFLOW_TRACKING_USERNAME"], registry.env["MLFLOW_TRACKING_PASSWORD"]
    assert len(password) >= 12
    wrong = httpx.get(f"{url}/api/2.0/mlflow/registered-models/search", auth=(user, password + "x"), timeout=10)
    assert wrong.status_code == 401
    right = httpx.get(f"{url}/api/2.0/mlflow/registered-models/search", auth=(user, password), timeout=10)
    assert right.status_code == 200

    status = subprocess.run(
        ["bash", str(LAUNCHER), "status", "--state", str(registry.state)], capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0 and "healthy" in status.stdout, status
    # The secrets never reach the launcher's output or the server's command line.
    assert password not in status.stdout + status.stderr
    assert password not in (registry.state / "logs" / "mlflow.log").read_text(errors="replace")


def test_cli_errors_are_one_clear_line(registry: Registry, bundle_venv: Path) -> None:
    bad = {"MLFLOW_TRACKING_PASSWORD": "wrong-password-123"}
    for args in (("models", "list"), ("models", "promote", MODEL), ("models", "rollback", MODEL)):
        one_clear_line(mlstack(*args, registry=registry, **bad), 4, "refused the credentials", "PASSWORD")
    started = time.monotonic()
    train = mlstack("train", str(EXAMPLE), "--venv", str(bundle_venv), registry=registry, **bad)
    one_clear_line(train, 4, "refused the credentials")
    assert time.monotonic() - started < 30, "train must check the registry before training"
    retrain = mlstack("retrain", str(EXAMPLE), "--venv", str(bundle_venv), registry=registry, **bad)
    one_clear_line(retrain, 4, "refused the credentials")
    no_user = {"MLFLOW_TRACKING_USERNAME": "", "MLFLOW_TRACKING_PASSWORD": ""}
    one_clear_line(mlstack("models", "list", registry=registry, **no_user), 4, "are not set")

    down = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    one_clear_line(mlstack("models", "list", registry=registry, **down), 3, "unreachable")
    one_clear_line(mlstack("models", "list", registry=None), 1, "MLFLOW_TRACKING_URI is not set")

    one_clear_line(mlstack("models", "promote", "NO_SUCH_MODEL", registry=registry), 1, "'NO_SUCH_MODEL'")
    one_clear_line(mlstack("models", "rollback", "NO_SUCH_MODEL", registry=registry), 1, "not registered")
    one_clear_line(mlstack("models", "list", "NO_SUCH_MODEL", registry=registry), 1, "not registered")
    one_clear_line(mlstack("models", "promote", MODEL, "--run", "f" * 32, registry=registry), 1, "does not exist")


def test_retrain_refuses_wrong_return_types_model_by_model(bundle_venv: Path) -> None:
    # Both models use the local provider: no registry involved.
    result = mlstack("retrain", str(BUNDLES / "badtypes"), "--venv", str(bundle_venv), registry=None)
    assert result.returncode == 1, result
    assert (
        "LC_BAD_EVALUATE: FAILED: 'evaluate' must return ('bool', 'dict'), but returned ('str', 'dict')"
        in result.stdout
    ), result.stdout
    assert "LC_BAD_PARAMS: FAILED: 'load_production_params' must return 'dict', but returned 'list'" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "mlstack: retrain failed for LC_BAD_EVALUATE, LC_BAD_PARAMS"
    assert "Traceback" not in result.stderr


def test_retrain_never_promotes(registry: Registry, bundle_venv: Path) -> None:
    env = cli_env(registry)
    auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    api = f"{registry.url}/api/2.0/mlflow"
    experiment = httpx.post(f"{api}/experiments/create", json={"name": "lc_promoter"}, auth=auth, timeout=10)
    assert experiment.status_code == 200, experiment.text
    run = httpx.post(
        f"{api}/runs/create", json={"experiment_id": experiment.json()["experiment_id"]}, auth=auth, timeout=10
    )
    run_id = run.json()["run"]["info"]["run_id"]
    client = registry.client()
    first = client.create_version("LC_PROMOTER", f"runs:/{run_id}/model", run_id).version
    second = client.create_version("LC_PROMOTER", f"runs:/{run_id}/model", run_id).version
    client.set_production("LC_PROMOTER", first)

    result = mlstack(
        "retrain", str(BUNDLES / "promoter"), "--venv", str(bundle_venv), registry=registry, LC_PROMOTER_TARGET=second
    )
    assert result.returncode == 1, result
    assert f"moved 'production' from v{first} to v{second}" in result.stdout, result.stdout
    assert f"put back to v{first}" in result.stdout, result.stdout
    assert client.production_version("LC_PROMOTER") == first
    assert ok(mlstack("models", "list", "LC_PROMOTER", registry=registry)).startswith(
        f"LC_PROMOTER  (production: v{first})"
    )


def test_promote_and_rollback_keep_a_history_stack(registry: Registry) -> None:
    """Rollback after rollback walks back through earlier production versions, one per call, and a
    version moved to production outside mlstack (MLflow UI) is taken into the history."""
    env = cli_env(registry)
    auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    api = f"{registry.url}/api/2.0/mlflow"
    experiment = httpx.post(f"{api}/experiments/create", json={"name": "lc_history"}, auth=auth, timeout=10)
    run = httpx.post(
        f"{api}/runs/create", json={"experiment_id": experiment.json()["experiment_id"]}, auth=auth, timeout=10
    )
    run_id = run.json()["run"]["info"]["run_id"]
    client = registry.client()
    versions = [client.create_version("LC_HISTORY", f"runs:/{run_id}/model", run_id).version for _ in range(4)]
    assert versions == ["1", "2", "3", "4"]

    def cli(*args: str) -> str:
        return ok(mlstack("models", *args, "LC_HISTORY", registry=registry)).strip()

    for version in ("1", "2", "3"):
        cli("promote", "--version", version)
    assert cli("promote", "--version", "3") == "LC_HISTORY: v3 already is production"
    client.set_production("LC_HISTORY", "4")  # someone used the MLflow UI
    assert cli("rollback") == "LC_HISTORY: production is now v3 (rolled back from v4)"
    assert cli("rollback") == "LC_HISTORY: production is now v2 (rolled back from v3)"
    assert cli("rollback") == "LC_HISTORY: production is now v1 (rolled back from v2)"
    last = mlstack("models", "rollback", "LC_HISTORY", registry=registry)
    assert last.returncode == 1 and "no earlier production version than v1" in last.stderr, last
    assert client.production_version("LC_HISTORY") == "1"
    # Promoting again starts a new branch on top of what is left.
    cli("promote", "--version", "4")
    assert cli("rollback") == "LC_HISTORY: production is now v1 (rolled back from v4)"
