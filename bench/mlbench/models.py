"""The model the end-to-end phases serve: the example bundle's real scikit-learn CLF_IRIS, renamed
BENCH_IRIS (its own queue, apart from the dev stack's workers), when the dev stack built its venv
and trained it; else BENCH_ECHO (bench/worker_pub), which echoes its input.

Batching is set by the worker environment (MLSTACK_MAX_BATCH), so the copy's params.conf drops the
example's max_batch / max_wait_ms lines: the same run measures batching on and off."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

BENCH_ROOT = Path(__file__).resolve().parents[1]
REPO = BENCH_ROOT.parent
ECHO_BUNDLE = BENCH_ROOT / "worker_pub"
EXAMPLE_BUNDLE = REPO / "example_bundle" / "worker_pub"
EXAMPLE_VENV_PYTHON = REPO / ".dev" / "venvs" / "example_bundle-pub" / "bin" / "python"
EXAMPLE_ARTIFACTS = (REPO / ".dev" / "artifacts" / "CLF_IRIS", REPO / "example_bundle" / "training_model" / "artifacts")
EXAMPLE_MODEL, BENCH_MODEL = "CLF_IRIS", "BENCH_IRIS"
BATCH_KEYS = ("max_batch", "max_wait_ms")


@dataclass(frozen=True)
class E2eModel:
    name: str
    bundle_dir: Path
    python: str
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""


def echo(python: str) -> E2eModel:
    return E2eModel("BENCH_ECHO", ECHO_BUNDLE, python, {}, "BENCH_ECHO (predict echoes its input)")


def example(workdir: Path) -> E2eModel | None:
    """The example model in a copy under workdir; None when its venv or trained artifacts are missing."""
    artifacts = next((d for d in EXAMPLE_ARTIFACTS if (d / "metadata.json").is_file()), None)
    if not EXAMPLE_VENV_PYTHON.exists() or artifacts is None:
        return None
    bundle = workdir / "example_pub"
    shutil.copytree(EXAMPLE_BUNDLE, bundle, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    lines = (bundle / "params.conf").read_text(encoding="utf-8").splitlines()
    kept = [
        f"[{BENCH_MODEL}]" if line.strip() == f"[{EXAMPLE_MODEL}]" else line
        for line in lines
        if line.split("=", 1)[0].strip() not in BATCH_KEYS
    ]
    (bundle / "params.conf").write_text("\n".join(kept) + "\n", encoding="utf-8")
    model_dir = workdir / "example_artifacts"
    shutil.copytree(artifacts, model_dir)
    metadata = json.loads((model_dir / "metadata.json").read_text())
    metadata["model_name"] = BENCH_MODEL
    (model_dir / "metadata.json").write_text(json.dumps(metadata))
    env = {f"{BENCH_MODEL}_PROVIDER": "local", "MLSTACK_LOCAL_MODEL_DIR": str(model_dir)}
    return E2eModel(BENCH_MODEL, bundle, str(EXAMPLE_VENV_PYTHON), env, "example CLF_IRIS (scikit-learn)")
