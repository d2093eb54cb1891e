"""/metrics on a real stack: counters summed over gunicorn's worker processes (multiprocess mode),
refusals by reason, latency histograms, queue and worker figures read at scrape time."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families
from support.procs import wait_for
from support.stack import Stack


def _scrape(stack: Stack) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = httpx.get(f"{stack.apis[0].url}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def _get(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_accepted_jobs_are_counted_over_all_api_processes(main_stack: Stack) -> None:
    client = main_stack.client()
    before = _scrape(main_stack)
    n = 12  # spread over the API's two processes by the kernel: a per-process count would fall short
    ids = [client.submit("TEST_ECHO", "predict", [f"m{i}"]) for i in range(n)]
    for job_id in ids:
        client.wait_done(job_id)
    after = _scrape(main_stack)
    labels = {"model": "TEST_ECHO", "method": "predict"}
    assert (
        _get(after, "mlstack_jobs_accepted_total", **labels) - _get(before, "mlstack_jobs_accepted_total", **labels)
        == n
    )
    confirms = _get(after, "mlstack_publish_confirm_seconds_count") - _get(
        before, "mlstack_publish_confirm_seconds_count"
    )
    assert confirms >= n


def test_refusals_are_counted_by_reason(main_stack: Stack) -> None:
    client = main_stack.client()
    before = _scrape(main_stack)
    client.inference("NO_SUCH_MODEL_FOR_METRICS", "predict", ["x"])
    client.inference("TEST_ECHO", "predict_wrong", ["x"])
    after = _scrape(main_stack)

    def delta(**labels: str) -> float:
        return _get(after, "mlstack_jobs_refused_total", **labels) - _get(
            before, "mlstack_jobs_refused_total", **labels
        )

    assert delta(model="", method="predict", reason="model_not_found") == 1
    assert delta(model="TEST_ECHO", method="other", reason="invalid_request") == 1
    assert "NO_SUCH_MODEL_FOR_METRICS" not in str(after)


def test_queue_and_worker_figures(main_stack: Stack) -> None:
    samples = _scrape(main_stack)
    assert _get(samples, "mlstack_queue_consumers", model="TEST_ECHO") == 1
    assert ("mlstack_queue_depth", frozenset({("model", "TEST_ECHO")})) in samples
    workers = [labels for (name, labels) in samples if name == "mlstack_worker_info"]
    echo = [dict(labels) for labels in workers if ("model", "TEST_ECHO") in labels]
    assert echo and echo[0]["loaded_version"] == "echo-3" and echo[0]["state"] == "ok"


def test_latency_histograms_after_results(main_stack: Stack) -> None:
    """Job latencies are observed when the API accepts a worker's result (labelled by model when the
    worker echoes model_name in it, ``unknown`` otherwise)."""
    client = main_stack.client()
    client.run("TEST_ECHO", "predict", ["lat"])

    def observed() -> float | None:
        text = httpx.get(f"{main_stack.apis[0].url}/metrics", timeout=10).text
        counts = re.findall(r'^mlstack_job_total_seconds_count\{[^}]*method="predict"[^}]*\} (\S+)$', text, re.M)
        total = sum(float(c) for c in counts)
        return total or None

    assert wait_for(observed, 10, "a total-latency observation") >= 1


def test_grafana_dashboard_uses_only_exported_metrics(main_stack: Stack) -> None:
    from support.infra import REPO

    dashboard = (REPO / "docs" / "grafana" / "mlstack.json").read_text()
    used = set(re.findall(r"\b(mlstack_[a-z_]+)", dashboard))
    text = httpx.get(f"{main_stack.apis[0].url}/metrics", timeout=10).text
    # A counter or histogram shows in a multiprocess scrape once some process updated it: the
    # API's own definitions name the rest (the same module the API runs).
    import mlstack.metrics  # noqa: F401
    from prometheus_client import REGISTRY

    exported = set(re.findall(r"^# TYPE (\S+)", text, re.M)) | {m.name for m in REGISTRY.collect()}
    exported |= {f"{name}{suffix}" for name in exported for suffix in ("_total", "_bucket", "_count", "_sum")}
    assert used and used <= exported, used - exported
