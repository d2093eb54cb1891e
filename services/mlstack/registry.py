"""MLflow Model Registry client over MLflow's REST API (stdlib only).

The only module that talks to MLflow. It needs no mlflow package, so the worker
runtime can ask "which version is production?" from inside any bundle's
virtualenv without adding dependencies to the model.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

PRODUCTION_ALIAS = "production"


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


@dataclass(frozen=True)
class Run:
    run_id: str
    name: str
    start_ms: int
    artifact_uri: str


def _version(data: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        name=str(data.get("name", "")),
        version=str(data.get("version", "")),
        run_id=str(data.get("run_id", "")),
        source=str(data.get("source", "")),
        created_ms=int(data.get("creation_timestamp", 0)),
        aliases=list(data.get("aliases", [])),
        status=str(data.get("status", "")),
    )


class RegistryClient:
    def __init__(self, url: str, username: str = "", password: str = "", timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._headers = {"Content-Type": "application/json"}
        if username:
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

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
            if exc.code in (401, 403):
                raise RegistryAuthError(
                    f"MLflow at {self.url} refused the credentials (HTTP {exc.code}); "
                    "check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
                ) from None
            if exc.code == 404 or "RESOURCE_DOES_NOT_EXIST" in detail:
                raise NotFound(detail) from None
            raise RegistryError(f"MLflow {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnreachable(f"MLflow at {self.url} is unreachable: {reason}") from None
        try:
            return json.loads(body) if body else {}  # type: ignore[no-any-return]
        except ValueError:
            raise RegistryError(f"MLflow {path}: the answer is not JSON") from None

    # ---- reading ------------------------------------------------------------------
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

    def versions(self, name: str) -> list[ModelVersion]:
        """All versions of a registered model, oldest first. Raises NotFound for an unknown model."""
        self._call("GET", "registered-models/get", {"name": name})
        answer = self._call(
            "GET", "model-versions/search", {"filter": f"name='{_quote(name)}'", "max_results": 10000}
        )
        found = [_version(v) for v in answer.get("model_versions", [])]
        return sorted(found, key=lambda v: int(v.version) if v.version.isdigit() else 0)

    def latest_run(self, experiment_name: str) -> Run:
        try:
            experiment = self._call("GET", "experiments/get-by-name", {"experiment_name": experiment_name})
        except NotFound:
            raise NotFound(f"experiment '{experiment_name}' does not exist") from None
        experiment_id = experiment["experiment"]["experiment_id"]
        answer = self._call(
            "POST",
            "runs/search",
            {"experiment_ids": [experiment_id], "order_by": ["attributes.start_time DESC"], "max_results": 1},
        )
        runs = answer.get("runs", [])
        if not runs:
            raise NotFound(f"experiment '{experiment_name}' has no run")
        return self._run(runs[0])

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
        )

    # ---- writing -----------------------------------------------------------------------
    def set_production(self, name: str, version: str) -> None:
        self._call("POST", "registered-models/alias", {"name": name, "alias": PRODUCTION_ALIAS, "version": version})

    def register_run(self, name: str, run: Run, artifact_path: str = "model") -> ModelVersion:
        """The version made from ``run``; registers it (and the model) when it is not yet registered."""
        try:
            existing = self.versions(name)
        except NotFound:
            self._call("POST", "registered-models/create", {"name": name})
            existing = []
        for version in existing:
            if version.run_id == run.run_id:
                return version
        answer = self._call(
            "POST",
            "model-versions/create",
            {"name": name, "source": f"{run.artifact_uri}/{artifact_path}", "run_id": run.run_id},
        )
        return _version(answer["model_version"])


def _quote(value: str) -> str:
    return value.replace("'", "\\'")
