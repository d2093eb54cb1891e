"""Micro-batching of ``predict`` jobs: which models batch, merging features, splitting the answer.

Only a model whose ``predict`` treats rows independently may be batched, so it is off by default
(max_batch 1); params.conf turns it on per model (``max_batch``, ``max_wait_ms``), the worker
settings MLSTACK_MAX_BATCH / MLSTACK_MAX_WAIT_MS give the default for the others.
A merged call whose answer is not a list of one row per feature is not split: the caller then runs
each job on its own, so a bad job never fails its neighbours (services/DESIGN.md, "Micro-batching").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mlstack.broker import BatchLimit, queue_name
from mlstack.params_conf import ParamsConfError, read_params_conf
from mlstack.settings import WorkerSettings
from mlstack.worker.execution import JobResult

log = logging.getLogger("mlstack.worker")

MAX_BATCH_KEY = "max_batch"
MAX_WAIT_KEY = "max_wait_ms"
MAX_BATCH_LIMIT = 1024  # a bigger batch only delays its first job's answer


def batch_limits(settings: WorkerSettings, model_names: Sequence[str]) -> dict[str, BatchLimit]:
    """Queue name -> its batching, for the models that batch (max_batch > 1); bad values are logged
    and the worker default used."""
    try:
        sections = read_params_conf(settings.bundle_dir)
    except ParamsConfError:
        sections = {}
    limits: dict[str, BatchLimit] = {}
    for name in model_names:
        section = sections.get(name, {})
        size = _setting(name, section, MAX_BATCH_KEY, settings.max_batch, int, 1, MAX_BATCH_LIMIT)
        wait_ms = _setting(name, section, MAX_WAIT_KEY, settings.max_wait_ms, float, 0, 10_000)
        if size > 1:
            limits[queue_name(name)] = BatchLimit(int(size), wait_ms / 1000)
    return limits


def _setting(model: str, section: dict[str, str], key: str, default: float, kind: type, low: float, high: float) -> Any:
    raw = section.get(key, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value
    except ValueError:
        log.error("params.conf [%s] %s=%r is not a number from %g to %g; using %g", model, key, raw, low, high,
                  default)  # fmt: skip
        return default


def batchable(features: Any) -> bool:
    """A job whose features can join a merged call: a non-empty list (anything else runs alone, so
    it gets exactly the answer it would get unbatched)."""
    return isinstance(features, list) and len(features) > 0


def split_result(result: JobResult, sizes: Sequence[int]) -> list[JobResult] | None:
    """The merged call's answer, one slice per job; None when it cannot be split (Error, wrong length)."""
    if result.status != "Done" or not isinstance(result.response, list) or len(result.response) != sum(sizes):
        return None
    parts: list[JobResult] = []
    start = 0
    for size in sizes:
        parts.append(JobResult("Done", result.response[start : start + size], result.model_version))
        start += size
    return parts
