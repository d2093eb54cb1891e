"""Metric labels stay bounded; refusal reasons come from the contract texts; dashboard series."""

from __future__ import annotations

from mlstack import messages, metrics
from mlstack.api import operator_view
from prometheus_client import REGISTRY


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_refusal_reasons() -> None:
    assert metrics.refusal_reason(messages.MODEL_NOT_FOUND) == "model_not_found"
    assert metrics.refusal_reason(messages.no_workers("M")) == "no_workers"
    assert metrics.refusal_reason(messages.queue_full("M")) == "queue_full"
    assert metrics.refusal_reason(messages.BROKER_UNREACHABLE) == "broker_unreachable"
    assert metrics.refusal_reason(messages.DB_JOB_CREATE_FAILED) == "database"
    assert metrics.refusal_reason(messages.wrong_method("x")) == "invalid_request"
    assert metrics.refusal_reason(messages.model_interval_not_respected("01/01/2030 às 00:00:00")) == "rate_limited"


def test_unknown_models_and_methods_do_not_grow_the_series() -> None:
    before = _value("mlstack_jobs_refused_total", model="", method="other", reason="model_not_found")
    metrics.job_refused("some-name-a-client-made-up", "whatever", "model_not_found")
    after = _value("mlstack_jobs_refused_total", model="", method="other", reason="model_not_found")
    assert after == before + 1
    assert _value("mlstack_jobs_refused_total", model="some-name-a-client-made-up", method="other",
                  reason="model_not_found") == 0  # fmt: skip


def test_job_finished_observes_queue_run_and_total() -> None:
    metrics.job_finished("UNIT_M", "predict", "Done", queue_s=0.2, total_s=0.5)
    assert _value("mlstack_job_total_seconds_count", model="UNIT_M", method="predict") == 1
    assert _value("mlstack_job_queue_seconds_sum", model="UNIT_M", method="predict") == 0.2
    assert abs(_value("mlstack_job_run_seconds_sum", model="UNIT_M", method="predict") - 0.3) < 1e-9
    metrics.job_finished("UNIT_M", "predict", "Error", queue_s=-1, total_s=0.1)  # queue time unknown
    assert _value("mlstack_job_queue_seconds_count", model="UNIT_M", method="predict") == 1
    assert _value("mlstack_jobs_finished_total", model="UNIT_M", method="predict", status="Error") == 1


def test_p95() -> None:
    assert operator_view.p95([]) is None
    assert operator_view.p95([3.0]) == 3.0
    assert operator_view.p95([float(i) for i in range(1, 101)]) == 95.0


def test_series_buckets_the_last_hour() -> None:
    now = 10_000.0
    jobs = [
        {"datetime": now - 30, "status": "Done", "total_response_time_sec": 0.5},
        {"datetime": now - 30, "status": "Error", "total_response_time_sec": 0.1},
        {"datetime": now - 90, "status": "Queued", "expires_at": now - 1},  # expired: an error
        {"datetime": now - 4000, "status": "Done", "total_response_time_sec": 9},  # outside the hour
        {"datetime": "garbage", "status": "Done"},
    ]
    s = operator_view.series(jobs, now)
    assert len(s["jobs"]) == 60
    assert s["jobs"][-1] == 2 and s["jobs"][-2] == 1 and sum(s["jobs"]) == 3
    assert s["errors"][-1] == 1 and s["errors"][-2] == 1
    assert s["p95_s"][-1] == 0.5 and s["p95_s"][-2] is None


def test_workers_state() -> None:
    now = 1000.0
    doc = {"workers": {"w1": {"seen": now - 5, "version": "3", "production_version": "4", "state": "stale"},
                       "w2": {"seen": now - 500, "version": "3"}, "w3": "not a dict"}}  # fmt: skip
    found = {w.worker_id: w for w in operator_view.workers_of(doc, now)}
    assert (found["w1"].loaded_version, found["w1"].production_version, found["w1"].state) == ("3", "4", "stale")
    assert found["w2"].state == "silent"
    assert found["w3"].state == "silent" and found["w3"].loaded_version == ""


def test_result_exchanges_are_observed_only_when_accepted() -> None:
    from mlstack.api.result_metrics import observe

    one = b'{"status": "Done", "method": "info", "datetime": 100.0, "queue_response_time_sec": 0.5, '
    one += b'"model_name": "UNIT_R"}'
    assert observe(one, b'{"accepted": true}', 101.0) == 1
    assert observe(one, b'{"accepted": false, "reason": "finished"}', 101.0) == 0
    assert observe(b"not json", b'{"accepted": true}', 101.0) == 0
    batch = b'{"results": [{"status": "Done", "method": "info", "datetime": 100.0}, {"status": "Error"}]}'
    assert observe(batch, b'{"results": [{"accepted": true}, {"accepted": true}]}', 101.0) == 1
    assert _value("mlstack_job_total_seconds_count", model="UNIT_R", method="info") == 1
    assert _value("mlstack_job_total_seconds_count", model="unknown", method="info") >= 1
