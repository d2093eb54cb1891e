"""Where the parts of a model bundle are, and what their params.conf says."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlstack.lifecycle import LifecycleError
from mlstack.params_conf import ParamsConfError, read_params_conf

PARTS = {"train": "training_model", "pub": "worker_pub", "retrain": "worker_retrain"}


@dataclass(frozen=True)
class ModelSection:
    name: str
    model_class: str
    experiment_name: str
    provider: str
    dataset_provider: str


def part_dir(bundle: Path, part: str) -> Path:
    """``bundle/<part folder>``; a part folder given directly is accepted too."""
    folder = PARTS[part]
    marker = "train.py" if part == "train" else "params.conf"
    for candidate in (bundle / folder, bundle):
        if (candidate / marker).is_file():
            return candidate.resolve()
    raise LifecycleError(f"{bundle} is not a model bundle: no {folder}/{marker} in it")


def read_sections(part: Path) -> list[ModelSection]:
    try:
        sections = read_params_conf(part)
    except ParamsConfError as exc:
        raise LifecycleError(str(exc)) from None
    return [
        ModelSection(
            name=name,
            model_class=section.get("model_class", ""),
            experiment_name=section.get("experiment_name", ""),
            provider=section.get("model_provider_name", ""),
            dataset_provider=section.get("dataset_provider_name", ""),
        )
        for name, section in sections.items()
    ]


def experiments(bundle: Path) -> list[str]:
    """Experiment names the bundle's pub and retrain parts name (where its training logs runs)."""
    names: set[str] = set()
    for part in ("pub", "retrain"):
        try:
            names |= {s.experiment_name for s in read_sections(part_dir(bundle, part)) if s.experiment_name}
        except LifecycleError:
            continue
    return sorted(names)
