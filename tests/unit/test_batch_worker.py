"""Micro-batching without outside systems: params.conf batch settings, splitting a merged answer,
which acks go out as one `multiple` ack, and the per-job fallback when a merged call fails."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pika
import pytest
from mlstack import broker
from mlstack.broker import ACK, WAIT, BatchLimit, Delivery, JobConsumer, Outcome, Verdict
from mlstack.settings import WorkerSettings
from mlstack.worker.batch import batch_limits, batchable, split_result
from mlstack.worker.execution import JobResult
from mlstack.worker.jobs import JobHandler


def _settings(tmp_path: Path, params: str, **env: str) -> WorkerSettings:
    (tmp_path / "params.conf").write_text(params, encoding="utf-8")
    return WorkerSettings.from_env(
        {
            "MLSTACK_ENV_FILE": "/nonexistent/unit.env",
            "MLSTACK_API_URL": "http://127.0.0.1:1",
            "MLSTACK_WORKER_TOKEN": "t",
            "MLSTACK_BUNDLE_DIR": str(tmp_path),
            "MLSTACK_WORKER_ID": "w1",
            "MLSTACK_STATE_DIR": str(tmp_path / "state"),
            "MLSTACK_RESULT_RETRY_S": "1",
            **env,
        }
    )


# ---- settings ------------------------------------------------------------------------------------------
def test_params_conf_turns_batching_on_per_model(tmp_path: Path) -> None:
    params = "[A]\nmax_batch = 8\nmax_wait_ms = 5\n[B]\nx = 1\n[C]\nmax_batch = nope\n[D]\nmax_batch = 0\n"
    limits = batch_limits(_settings(tmp_path, params), ["A", "B", "C", "D"])
    assert limits == {broker.queue_name("A"): BatchLimit(8, 0.005)}


def test_worker_settings_give_the_default(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "[A]\n[B]\nmax_batch = 1\n", MLSTACK_MAX_BATCH="4", MLSTACK_MAX_WAIT_MS="1")
    assert batch_limits(settings, ["A", "B"]) == {broker.queue_name("A"): BatchLimit(4, 0.001)}
    assert _settings(tmp_path, "[A]\n").max_batch == 1  # off unless asked for


# ---- splitting ------------------------------------------------------------------------------------------
def test_split_result_slices_per_job() -> None:
    merged = JobResult("Done", ["a", "b", "c", "d"], "v1")
    assert split_result(merged, [1, 3]) == [JobResult("Done", ["a"], "v1"), JobResult("Done", ["b", "c", "d"], "v1")]


@pytest.mark.parametrize(
    "merged",
    [
        JobResult("Done", ["a", "b"], "v1"),  # one row short
        JobResult("Done", ["a", "b", "c", "d", "e"], "v1"),
        JobResult("Error", "O modelo falhou", ""),
        JobResult("Done", {"a": 1}, "v1"),
    ],
)
def test_an_answer_that_cannot_be_split_is_refused(merged: JobResult) -> None:
    assert split_result(merged, [1, 3]) is None


@pytest.mark.parametrize(("features", "ok"), [([1], True), ([], False), (None, False), ("abc", False), ({}, False)])
def test_only_non_empty_lists_join_a_batch(features: Any, ok: bool) -> None:
    assert batchable(features) is ok


# ---- acks -----------------------------------------------------------------------------------------------
class _Channel:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool]] = []
        self.is_open = True

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.calls.append(("ack", tag, multiple))

    def basic_publish(self, *args: Any) -> None:
        self.calls.append(("publish", 0, False))

    def basic_nack(self, tag: int, requeue: bool = True) -> None:
        self.calls.append(("nack", tag, False))


def _settle(unsettled: set[int], verdicts: dict[int, Verdict]) -> list[tuple[str, int, bool]]:
    consumer = JobConsumer("amqp://guest:guest@127.0.0.1:1/%2F", ["q"], lambda d: ACK)
    consumer._unsettled = set(unsettled)
    channel = _Channel()
    settled = [
        (broker._Waiting(tag, Delivery("q", b"{}", False), pika.BasicProperties(), 0.0), verdict)
        for tag, verdict in verdicts.items()
    ]
    consumer._settle_batch(channel, settled)  # type: ignore[arg-type]
    assert consumer._unsettled == unsettled - set(verdicts)
    return channel.calls


def test_contiguous_acks_from_the_lowest_unsettled_tag_go_as_one() -> None:
    assert _settle({3, 4, 5, 9}, {3: ACK, 4: ACK, 5: ACK}) == [("ack", 5, True)]


def test_a_gap_below_keeps_acks_one_by_one() -> None:
    # Tag 2 (another queue's message, still running) must not be acked by a `multiple` ack.
    assert _settle({2, 3, 4}, {3: ACK, 4: ACK}) == [("ack", 3, False), ("ack", 4, False)]


def test_other_verdicts_settle_alone_and_the_rest_still_goes_together() -> None:
    calls = _settle({1, 2, 3, 4}, {1: ACK, 2: Verdict(Outcome.DEAD, "x"), 3: ACK, 4: ACK})
    assert calls[:2] == [("publish", 0, False), ("ack", 2, False)]  # the dead letter first, then its ack
    assert calls[2:] == [("ack", 4, True)]  # 1 is the lowest unsettled, 1..4 are all settled now


def test_a_gap_inside_the_run_stops_it() -> None:
    assert _settle({1, 2, 3, 4}, {1: ACK, 2: ACK, 4: ACK}) == [("ack", 2, True), ("ack", 4, False)]


# ---- the per-job fallback -----------------------------------------------------------------------------------
class _Api:
    def __init__(self, refused: dict[str, str] | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.refused = refused or {}  # job id -> the API's reason for not starting it
        self.starts: list[list[str]] = []

    def start(self, *args: Any) -> tuple[bool, str]:
        raise AssertionError("a micro-batch takes its leases in one start_many call")

    def start_many(self, job_ids: list[str], worker_id: str, lease_s: float) -> list[tuple[bool, str]]:
        self.starts.append(list(job_ids))
        return [(job_id not in self.refused, self.refused.get(job_id, "")) for job_id in job_ids]

    def renew(self, *args: Any) -> bool:
        return True

    def results(self, payloads: list[dict[str, Any]]) -> list[tuple[bool, str]]:
        self.batches.append(payloads)
        return [(True, "")] * len(payloads)


class _RowModel:
    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def predict(self, dataset: list[Any]) -> list[Any]:
        self.calls.append(list(dataset))
        if "bad" in dataset:
            raise ValueError("linha ruim")
        return [f"r{row}" for row in dataset]

    def get_model_version(self) -> str:
        return "v1"


def _delivery(job_id: str, features: Any, method: str = "predict") -> Delivery:
    body = {"job_id": job_id, "model_name": "M", "method": method, "datetime": time.time(), "ttl_ms": 90_000}
    body["features"] = features
    return Delivery(broker.queue_name("M"), json.dumps(body).encode(), False)


def test_a_bad_job_falls_back_to_per_job_calls_and_fails_alone(tmp_path: Path) -> None:
    api, model = _Api(), _RowModel()
    handler = JobHandler(_settings(tmp_path, "[M]\n"), api, {"M": model}, {}, threading.Event())  # type: ignore[arg-type]
    verdicts = handler.handle_batch([_delivery("a", [1, 2]), _delivery("b", ["bad"]), _delivery("c", [3])])
    assert verdicts == [ACK, ACK, ACK]
    assert model.calls == [[1, 2, "bad", 3], [1, 2], ["bad"], [3]]  # merged, then one by one
    [payloads] = api.batches
    assert [(p["job_id"], p["status"]) for p in payloads] == [("a", "Done"), ("b", "Error"), ("c", "Done")]
    assert payloads[0]["response"] == ["r1", "r2"] and payloads[2]["response"] == ["r3"]


def test_a_good_batch_is_one_call_and_one_report(tmp_path: Path) -> None:
    api, model = _Api(), _RowModel()
    handler = JobHandler(_settings(tmp_path, "[M]\n"), api, {"M": model}, {}, threading.Event())  # type: ignore[arg-type]
    verdicts = handler.handle_batch([_delivery("a", [1]), _delivery("b", [2, 3])])
    assert verdicts == [ACK, ACK]
    assert model.calls == [[1, 2, 3]]
    assert [(p["job_id"], p["response"]) for p in api.batches[0]] == [("a", ["r1"]), ("b", ["r2", "r3"])]


def test_a_batch_takes_every_lease_in_one_call_before_its_model_runs(tmp_path: Path) -> None:
    # "b" was cancelled (the API answers "finished"), "c" is leased to another worker: neither runs.
    api, model = _Api(refused={"b": "finished", "c": "leased"}), _RowModel()
    handler = JobHandler(_settings(tmp_path, "[M]\n"), api, {"M": model}, {}, threading.Event())  # type: ignore[arg-type]
    deliveries = [_delivery("a", [1]), _delivery("b", [2]), _delivery("c", [3]), _delivery("d", [4])]
    verdicts = handler.handle_batch(deliveries)
    assert api.starts == [["a", "b", "c", "d"]]
    assert verdicts == [ACK, ACK, WAIT, ACK]  # refused: acked without running; leased: looked at again later
    assert model.calls == [[1, 4]]
    assert [(p["job_id"], p["response"]) for p in api.batches[0]] == [("a", ["r1"]), ("d", ["r4"])]


def test_a_batch_whose_leases_are_all_refused_runs_nothing(tmp_path: Path) -> None:
    api, model = _Api(refused={"a": "expired", "b": "finished"}), _RowModel()
    handler = JobHandler(_settings(tmp_path, "[M]\n"), api, {"M": model}, {}, threading.Event())  # type: ignore[arg-type]
    assert handler.handle_batch([_delivery("a", [1]), _delivery("b", [2])]) == [ACK, ACK]
    assert model.calls == [] and api.batches == []
