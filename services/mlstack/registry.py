"""MLflow Model Registry client over MLflow's REST API (stdlib only).

The only module that talks to MLflow. It needs no mlflow package, so the worker
runtime can ask "which version is production?" from inside any bundle's
virtualenv without adding dependencies to the model.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PRODUCTION_ALIAS = "production"
READY = "READY"


class RegistryError(Exception):
    """A registry request failed; the message is meant for the operator."""


class RegistryUnreachable(RegistryError):
    pass


class RegistryAuthError(RegistryError):
    pass


class NotFound(RegistryError):
    pass


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    run_id: str
    source: str
    created_ms: int
    aliases: list[str] = field(default_factory=list)
    status: str = ""
    status_message: str = ""


@dataclass(frozen=True)
class Run:
    run_id: str
    name: str
    start_ms: int
    artifact_uri: str
    experiment_id: str = ""
    status: str = ""


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    tags: dict[str, str]
    aliases: dict[str, str]  # alias -> version
    created_ms: int = 0


def _version(data: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        name=str(data.get("name", "")),
        version=str(data.get("version", "")),
        run_id=str(data.get("run_id", "")),
        source=str(data.get("source", "")),
        created_ms=int(data.get("creation_timestamp", 0)),
        aliases=list(data.get("aliases", [])),
        status=str(data.get("status", "")),
        status_message=str(data.get("status_message", "")),
    )


class RegistryClient:
    def __init__(self, url: str, username: str = "", password: str = "", timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._headers = {"Content-Type": "application/json"}
        self._has_credentials = bool(username)
        if username:
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    @classmethod
    def from_env(cls, env: Mapping[str, str], timeout_s: float = 10.0) -> RegistryClient:
        """The client MLflow's own variables describe (MLFLOW_TRACKING_URI/USERNAME/PASSWORD)."""
        url = env.get("MLFLOW_TRACKING_URI", "").strip()
        if not url:
            raise RegistryError(
                "MLFLOW_TRACKING_URI is not set: it must name the MLflow server, e.g. http://127.0.0.1:5000"
            )
        if not url.startswith(("http://", "https://")):
            raise RegistryError(f"MLFLOW_TRACKING_URI must be the http(s) URL of the MLflow server, got {url!r}")
        return cls(
            url, env.get("MLFLOW_TRACKING_USERNAME", "").strip(), env.get("MLFLOW_TRACKING_PASSWORD", ""), timeout_s
        )

    def _call(self, method: str, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.url}/api/2.0/mlflow/{path}"
        data = None
        if method == "GET" and params:
            url += "?" + urllib.parse.urlencode(params)
        elif params is not None:
            data = json.dumps(params).encode()
        request = urllib.request.Request(url, data=data, headers=self._headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            if exc.code == 401:
                hint = (
                    "check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
                    if self._has_credentials
                    else "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD are not set"
                )
                raise RegistryAuthError(f"MLflow at {self.url} refused the credentials (HTTP 401); {hint}") from None
            if exc.code == 403:
                raise RegistryAuthError(
                    f"MLflow at {self.url}: the user in MLFLOW_TRACKING_USERNAME may not do this ({path}, HTTP 403)"
                ) from None
            if exc.code == 404 or "RESOURCE_DOES_NOT_EXIST" in detail or _missing_alias(exc.code, detail):
                raise NotFound(detail) from None
            raise RegistryError(f"MLflow {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnreachable(f"MLflow at {self.url} is unreachable: {reason}") from None
        try:
            return json.loads(body) if body else {}  # type: ignore[no-any-return]
        except ValueError:
            raise RegistryError(f"MLflow {path}: the answer is not JSON (is {self.url} an MLflow server?)") from None

    # ---- reading ------------------------------------------------------------------
    def check(self) -> None:
        """One cheap authenticated request: raises when the server is unreachable or refuses us."""
        self._call("GET", "registered-models/search", {"max_results": 1})

    def production_version(self, name: str) -> str | None:
        """Version number the ``production`` alias points to, or None when it is not set."""
        try:
            answer = self._call("GET", "registered-models/alias", {"name": name, "alias": PRODUCTION_ALIAS})
        except NotFound:
            return None
        return str(answer.get("model_version", {}).get("version") or "") or None

    def model_names(self) -> list[str]:
        names: list[str] = []
        token = ""
        while True:
            params: dict[str, Any] = {"max_results": 1000}
            if token:
                params["page_token"] = token
            answer = self._call("GET", "registered-models/search", params)
            names += [m["name"] for m in answer.get("registered_models", [])]
            token = answer.get("next_page_token", "")
            if not token:
                return sorted(names)

    def get_model(self, name: str) -> RegisteredModel:
        try:
            data = self._call("GET", "registered-models/get", {"name": name})["registered_model"]
        except NotFound:
            raise NotFound(f"model '{name}' is not registered in MLflow at {self.url}") from None
        return RegisteredModel(
            name=str(data.get("name", name)),
            tags={str(t["key"]): str(t.get("value", "")) for t in data.get("tags", [])},
            aliases={str(a["alias"]): str(a["version"]) for a in data.get("aliases", [])},
            created_ms=int(data.get("creation_timestamp", 0)),
        )

    def versions(self, name: str) -> list[ModelVersion]:
        """All versions of a registered model, oldest first. Raises NotFound for an unknown model."""
        self.get_model(name)
        found: list[ModelVersion] = []
        token = ""
        while True:
            params: dict[str, Any] = {"filter": f"name='{_quote(name)}'", "max_results": 10000}
            if token:
                params["page_token"] = token
            answer = self._call("GET", "model-versions/search", params)
            found += [_version(v) for v in answer.get("model_versions", [])]
            token = answer.get("next_page_token", "")
            if not token:
                return sorted(found, key=lambda v: int(v.version) if v.version.isdigit() else 0)

    def versions_of_run(self, run_id: str) -> list[ModelVersion]:
        """Versions (of any model) registered from one run."""
        answer = self._call(
            "GET", "model-versions/search", {"filter": f"run_id='{_quote(run_id)}'", "max_results": 1000}
        )
        return [_version(v) for v in answer.get("model_versions", [])]

    def get_version(self, name: str, version: str) -> ModelVersion:
        try:
            answer = self._call("GET", "model-versions/get", {"name": name, "version": version})
            return _version(answer["model_version"])
        except NotFound:
            self.get_model(name)  # a clearer message when the model itself is unknown
            raise NotFound(f"model '{name}' has no version {version}") from None

    def experiment_id(self, experiment_name: str) -> str:
        try:
            experiment = self._call("GET", "experiments/get-by-name", {"experiment_name": experiment_name})
        except NotFound:
            raise NotFound(f"experiment '{experiment_name}' does not exist in MLflow at {self.url}") from None
        return str(experiment["experiment"]["experiment_id"])

    def experiment_name(self, experiment_id: str) -> str:
        try:
            experiment = self._call("GET", "experiments/get", {"experiment_id": experiment_id})
        except NotFound:
            raise NotFound(f"experiment {experiment_id} does not exist in MLflow at {self.url}") from None
        return str(experiment["experiment"]["name"])

    def runs(self, experiment_name: str, max_results: int = 100, run_name: str | None = None) -> list[Run]:
        """Finished runs of an experiment, newest first."""
        experiment_id = self.experiment_id(experiment_name)
        flt = "attributes.status = 'FINISHED'"
        if run_name is not None:
            flt += f" and attributes.run_name = '{_quote(run_name)}'"
        answer = self._call(
            "POST",
            "runs/search",
            {
                "experiment_ids": [experiment_id],
                "filter": flt,
                "order_by": ["attributes.start_time DESC"],
                "max_results": max_results,
            },
        )
        return [self._run(r) for r in answer.get("runs", [])]

    def latest_run(self, experiment_name: str) -> Run:
        runs = self.runs(experiment_name, max_results=1)
        if not runs:
            raise NotFound(f"experiment '{experiment_name}' has no finished run")
        return runs[0]

    def get_run(self, run_id: str) -> Run:
        try:
            return self._run(self._call("GET", "runs/get", {"run_id": run_id})["run"])
        except NotFound:
            raise NotFound(f"run '{run_id}' does not exist") from None

    @staticmethod
    def _run(data: dict[str, Any]) -> Run:
        info = data.get("info", {})
        return Run(
            run_id=str(info.get("run_id", "")),
            name=str(info.get("run_name", "")),
            start_ms=int(info.get("start_time", 0)),
            artifact_uri=str(info.get("artifact_uri", "")),
            experiment_id=str(info.get("experiment_id", "")),
            status=str(info.get("status", "")),
        )

    def logged_model_id(self, run: Run, artifact_path: str = "model") -> str | None:
        """The MLflow 3 logged model a run produced (``log_model(name=...)``), preferring ``artifact_path``."""
        answer = self._call(
            "POST",
            "logged-models/search",
            {"experiment_ids": [run.experiment_id], "filter": f"source_run_id = '{_quote(run.run_id)}'"},
        )
        models = [m.get("info", {}) for m in answer.get("models", [])]
        models.sort(key=lambda m: (m.get("name") != artifact_path, -int(m.get("creation_timestamp_ms", 0))))
        return str(models[0]["model_id"]) if models else None

    def _run_has_artifact(self, run: Run, path: str) -> bool:
        try:
            answer = self._call("GET", "artifacts/list", {"run_id": run.run_id, "path": path})
        except NotFound:
            return False
        return any(f.get("path", "").endswith("/MLmodel") for f in answer.get("files", []))

    # ---- writing -----------------------------------------------------------------------
    def set_production(self, name: str, version: str) -> None:
        self._call("POST", "registered-models/alias", {"name": name, "alias": PRODUCTION_ALIAS, "version": version})

    def delete_production(self, name: str) -> None:
        self._call("DELETE", "registered-models/alias", {"name": name, "alias": PRODUCTION_ALIAS})

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self._call("POST", "registered-models/set-tag", {"name": name, "key": key, "value": value})

    def create_version(self, name: str, source: str, run_id: str, model_id: str | None = None) -> ModelVersion:
        """A new version from ``source`` (registers the model name first when needed)."""
        try:
            self.get_model(name)
        except NotFound:
            self._call("POST", "registered-models/create", {"name": name})
        body: dict[str, Any] = {"name": name, "source": source, "run_id": run_id}
        if model_id:
            body["model_id"] = model_id
        return _version(self._call("POST", "model-versions/create", body)["model_version"])

    def register_run(self, name: str, run: Run, artifact_path: str = "model") -> tuple[ModelVersion, bool]:
        """The version made from ``run``, and whether it was registered just now.

        Models logged by MLflow 3 clients live apart from the run (``models:/<model id>``); those of
        older clients at ``<run artifacts>/<artifact_path>``. Either is registered as it is."""
        try:
            existing = self.versions(name)
        except NotFound:
            existing = []
        for version in reversed(existing):
            if version.run_id == run.run_id:
                return version, False
        model_id = self.logged_model_id(run, artifact_path)
        if model_id:
            return self.create_version(name, f"models:/{model_id}", run.run_id, model_id), True
        if self._run_has_artifact(run, artifact_path):
            return self.create_version(name, f"{run.artifact_uri}/{artifact_path}", run.run_id), True
        raise NotFound(f"run {run.run_id} ('{run.name}') logged no model (no '{artifact_path}') to register")

    def wait_ready(self, name: str, version: str, timeout_s: float = 60.0) -> ModelVersion:
        """Model versions are created asynchronously by some stores: wait for READY."""
        deadline = time.monotonic() + timeout_s
        while True:
            mv = self.get_version(name, version)
            if mv.status in (READY, ""):
                return mv
            if mv.status == "FAILED_REGISTRATION":
                raise RegistryError(f"{name} v{version} failed to register: {mv.status_message or 'no reason given'}")
            if time.monotonic() > deadline:
                raise RegistryError(f"{name} v{version} is still {mv.status} after {timeout_s:.0f}s")
            time.sleep(0.5)


def _missing_alias(code: int, detail: str) -> bool:
    # MLflow 3 answers a registered model without the alias with 400 INVALID_PARAMETER_VALUE, not 404.
    return code == 400 and "alias" in detail and "not found" in detail


def _quote(value: str) -> str:
    return value.replace("'", "\\'")
