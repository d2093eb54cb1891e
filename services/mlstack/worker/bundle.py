"""Loads the models of a bundle's ``worker_pub`` folder (params.conf + models/<source_file>.py).

Bundles written for mllibprodest run unchanged: the model module is imported as
``models.<source_file>`` with the working directory holding ``params.conf`` and
``models/``, exactly as the original worker did. The working directory is a
writable per-worker folder (the bundle itself may be read-only) that links to the
bundle's files, because mllibprodest writes ``temp_area/`` next to params.conf.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlstack.params_conf import ParamsConfError, read_params_conf

PUB_MODEL_CLASS = "ModeloCLF"


class BundleError(Exception):
    """The bundle cannot be loaded; the message says why."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source_file: str
    model_class: str
    provider: str


def read_params(bundle_dir: Path) -> list[ModelSpec]:
    try:
        sections = read_params_conf(bundle_dir)
    except ParamsConfError as exc:
        raise BundleError(str(exc)) from exc
    specs: list[ModelSpec] = []
    problems: list[str] = []
    for name, section in sections.items():
        missing = [key for key in ("source_file", "model_class", "model_provider_name") if not section.get(key)]
        if missing:
            problems.append(f"[{name}] lacks {', '.join(missing)}")
            continue
        specs.append(ModelSpec(name, section["source_file"], section["model_class"], section["model_provider_name"]))
    if problems:
        raise BundleError(f"{bundle_dir / 'params.conf'}: " + "; ".join(problems))
    return specs


def prepare_workdir(bundle_dir: Path, workdir: Path) -> None:
    """Link every top-level entry of the bundle into the writable working directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    for entry in bundle_dir.iterdir():
        link = workdir / entry.name
        if link.is_symlink() and Path(os.readlink(link)) == entry:
            continue
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.exists():
            continue  # a directory the model wrote (e.g. temp_area): leave it
        link.symlink_to(entry)


def instantiate(spec: ModelSpec) -> Any:
    module_name = f"models.{spec.source_file}"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise BundleError(f"model {spec.name}: cannot import {module_name}: {exc.__class__.__name__}: {exc}") from exc
    cls = getattr(module, spec.model_class, None)
    if not callable(cls):
        raise BundleError(f"model {spec.name}: {module_name} has no class {spec.model_class}")
    try:
        return cls(model_name=spec.name, model_provider_name=spec.provider)
    except Exception as exc:
        raise BundleError(f"model {spec.name}: {spec.model_class}() failed: {exc.__class__.__name__}: {exc}") from exc


def pub_specs(bundle_dir: Path) -> dict[str, ModelSpec]:
    specs = {s.name: s for s in read_params(bundle_dir) if s.model_class == PUB_MODEL_CLASS}
    if not specs:
        raise BundleError(f"{bundle_dir / 'params.conf'}: no model with model_class = {PUB_MODEL_CLASS}")
    return specs


def enter_workdir(bundle_dir: Path, workdir: Path) -> None:
    """Work in ``workdir`` and make the bundle's ``models`` package importable from there."""
    prepare_workdir(bundle_dir, workdir)
    os.chdir(workdir)
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))


def load_pub_models(specs: dict[str, ModelSpec], bundle_dir: Path, workdir: Path) -> dict[str, Any]:
    """Instantiate every ``ModeloCLF`` model of the bundle, working in ``workdir``."""
    enter_workdir(bundle_dir, workdir)
    return {name: instantiate(spec) for name, spec in specs.items()}
