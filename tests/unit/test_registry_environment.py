"""Where the CLI's registry commands find MLflow credentials once the API's env file holds none:
the registry env file (retrain.env beside the mlstack env file, or MLSTACK_REGISTRY_ENV_FILE)."""

from __future__ import annotations

from pathlib import Path

from mlstack.settings import merged_environment, registry_environment


def _write(path: Path, **values: str) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return path


def test_retrain_env_beside_the_mlstack_env_file_gives_the_writer(tmp_path: Path) -> None:
    api = _write(tmp_path / "mlstack.env", MLSTACK_API_TOKEN="t", MLFLOW_TRACKING_URI="http://old:5000")
    _write(tmp_path / "retrain.env", MLFLOW_TRACKING_URI="http://reg:5000", MLFLOW_TRACKING_USERNAME="admin")
    env = registry_environment({"MLSTACK_ENV_FILE": str(api)})
    assert env["MLFLOW_TRACKING_URI"] == "http://reg:5000" and env["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert env["MLSTACK_API_TOKEN"] == "t"
    # Only the registry commands read it: the API's own settings never see the writer.
    assert "MLFLOW_TRACKING_USERNAME" not in merged_environment({"MLSTACK_ENV_FILE": str(api)})


def test_explicit_file_and_environment_win(tmp_path: Path) -> None:
    other = _write(tmp_path / "registry.env", MLFLOW_TRACKING_URI="http://x:5000", MLFLOW_TRACKING_PASSWORD="p")
    base = {"MLSTACK_ENV_FILE": str(tmp_path / "none.env"), "MLSTACK_REGISTRY_ENV_FILE": str(other)}
    assert registry_environment(base)["MLFLOW_TRACKING_URI"] == "http://x:5000"
    env = registry_environment({**base, "MLFLOW_TRACKING_URI": "http://mine:5000"})
    assert env["MLFLOW_TRACKING_URI"] == "http://mine:5000" and env["MLFLOW_TRACKING_PASSWORD"] == "p"

