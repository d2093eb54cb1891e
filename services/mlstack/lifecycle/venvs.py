"""Virtualenvs of bundle parts: created from the part's requirements.txt plus the mlstack runtime.

A venv is reused while what it was built from is unchanged: the requirements, the
interpreter and the mlstack sources (their digest is stored in the venv, written last, so
an interrupted build is redone). A venv someone else built (e.g. bin/test's) is topped up
with ``pip install -r`` (a no-op when everything is there) instead of being rebuilt.
Parts with the same requirements share one default venv: it holds the same packages.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mlstack
from mlstack.lifecycle import LifecycleError

STAMP = ".mlstack-lifecycle.sha256"
PIP_LOG = ".mlstack-pip.log"
# The module every venv must be able to run (the retrain runner); proves the runtime is installed.
PROBE_MODULE = "mlstack.lifecycle.retrain_runner"


def services_source() -> Path | None:
    """The ``services`` folder mlstack is installed from (pip installs it into bundle venvs)."""
    configured = os.environ.get("MLSTACK_SOURCE_DIR", "").strip()
    candidates = [Path(configured)] if configured else []
    candidates.append(Path(mlstack.__file__).resolve().parents[1])
    for folder in candidates:
        if (folder / "pyproject.toml").is_file() and (folder / "mlstack" / "__init__.py").is_file():
            return folder.resolve()
    return None


def _sources_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((source / "mlstack").rglob("*.py")):
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    digest.update((source / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def default_venv_dir(bundle: Path, requirements: Path) -> Path:
    """``$MLSTACK_VENV_DIR/<bundle>-<digest of the requirements>`` (default root ~/.cache/mlstack/venvs)."""
    root = os.environ.get("MLSTACK_VENV_DIR", "").strip()
    if not root:
        cache = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
        root = str(Path(cache) / "mlstack" / "venvs")
    text = requirements.read_bytes() if requirements.is_file() else b""
    return Path(root).expanduser().resolve() / f"{bundle.resolve().name}-{hashlib.sha256(text).hexdigest()[:12]}"


def pip_site_args() -> list[str]:
    """The site's extra ``pip install`` arguments (MLSTACK_PIP_ARGS, shell words), e.g. the
    wheelhouse of a host without internet (``--no-index --find-links DIR``) or a mirror."""
    return shlex.split(os.environ.get("MLSTACK_PIP_ARGS", ""))


def _base_python() -> str:
    return os.environ.get("MLSTACK_PYTHON", "").strip() or sys.executable


def _run(argv: list[str], log_file: Path, what: str) -> None:
    with open(log_file, "ab") as log:
        log.write(f"\n===== {' '.join(argv)}\n".encode())
        log.flush()
        result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
        raise LifecycleError(f"{what} failed (exit {result.returncode}); last lines of {log_file}:\n{tail}")


def _probe(python: Path) -> str | None:
    """Where the venv's mlstack lives, or None when the runtime is not importable there."""
    result = subprocess.run(
        [str(python), "-c", f"import {PROBE_MODULE}, mlstack; print(mlstack.__file__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_venv(venv: Path, requirements: Path, say: Callable[[str], None] = lambda _: None) -> Path:
    """The python of ``venv``, made (or brought up to date) with ``requirements`` + ``mlstack[worker]``."""
    source = services_source()
    if source is None:
        raise LifecycleError(
            "cannot find the mlstack sources (services/pyproject.toml) to install into the bundle's venv; "
            "set MLSTACK_SOURCE_DIR to the 'services' folder, or pass --venv with a ready venv"
        )
    venv = venv.expanduser().resolve()
    python = venv / "bin" / "python"
    req_text = requirements.read_bytes() if requirements.is_file() else b""
    want = hashlib.sha256(
        b"\0".join([req_text, _sources_digest(source).encode(), sys.version.encode(), str(venv).encode()])
    ).hexdigest()
    stamp = venv / STAMP
    if python.exists() and stamp.is_file() and stamp.read_text().strip() == want:
        return python

    log_file = venv / PIP_LOG
    if not python.exists():
        say(f"creating virtualenv {venv} (log: {log_file})")
        venv.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([_base_python(), "-m", "venv", str(venv)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LifecycleError(f"cannot create the virtualenv {venv}: {result.stderr.strip()[-500:]}")
    else:
        say(f"updating virtualenv {venv} (log: {log_file})")
    stamp.unlink(missing_ok=True)
    pip = [str(python), "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--progress-bar", "off"]
    pip += pip_site_args()
    if requirements.is_file():
        _run([*pip, "-r", str(requirements)], log_file, f"pip install -r {requirements}")
    installed = _probe(python)
    # An editable install of these very sources stays current by itself; anything else is (re)installed.
    if installed is None or not Path(installed).resolve().is_relative_to(source):
        _run([*pip, f"{source}[worker]"], log_file, f"pip install {source}[worker]")
        if _probe(python) is None:
            raise LifecycleError(f"{venv}: mlstack is installed but {PROBE_MODULE} cannot be imported")
    stamp.write_text(want + "\n")
    return python
