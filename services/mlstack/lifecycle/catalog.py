"""``mlstack models list``: every registered model, its versions, and which one is production."""

from __future__ import annotations

import time
from typing import Any

from mlstack.lifecycle.promote import read_history
from mlstack.registry import NotFound, RegistryClient


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ms / 1000)) if ms else ""


def describe(client: RegistryClient, names: list[str] | None = None) -> list[dict[str, Any]]:
    """One dict per model (JSON-ready); raises NotFound for a name that is not registered."""
    models = []
    run_names: dict[str, str] = {}
    for name in names or client.model_names():
        model = client.get_model(name)
        production = model.aliases.get("production")
        versions = []
        for v in client.versions(name):
            if v.run_id and v.run_id not in run_names:
                try:
                    run_names[v.run_id] = client.get_run(v.run_id).name
                except NotFound:
                    run_names[v.run_id] = ""
            versions.append(
                {
                    "version": v.version,
                    "production": v.version == production,
                    "aliases": sorted(v.aliases),
                    "status": v.status,
                    "run_id": v.run_id,
                    "run_name": run_names.get(v.run_id, ""),
                    "created": _iso(v.created_ms),
                    "created_ms": v.created_ms,
                }
            )
        models.append(
            {
                "name": name,
                "production_version": production,
                "production_history": read_history(model),
                "versions": versions,
            }
        )
    return models


def render(models: list[dict[str, Any]]) -> str:
    if not models:
        return "no registered model"
    blocks = []
    for m in models:
        production = f"v{m['production_version']}" if m["production_version"] else "none"
        lines = [f"{m['name']}  (production: {production})"]
        rows = [("VERSION", "PROD", "STATUS", "RUN ID", "RUN NAME", "CREATED")]
        rows += [
            (v["version"], "*" if v["production"] else "", v["status"], v["run_id"], v["run_name"], v["created"])
            for v in m["versions"]
        ]
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        lines += ["  " + "  ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
        if len(rows) == 1:
            lines.append("  (no version)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
