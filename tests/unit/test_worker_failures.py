"""Worker failure handling without outside systems: message validation, the model time limit,
how a verdict settles a message (retry / wait / dead letter), and the handler's failure policy."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pika
import pytest
from mlstack import broker, messages
from mlstack.broker import ACK, WAIT, Delivery, Outcome, Verdict, republish_and_ack
from mlstack.settings import WorkerSettings
from mlstack.worker.api_client import ApiRejected, ApiUnavailable
from mlstack.worker.execution import ModelRunner
from mlstack.worker.job_message import PoisonMessage, parse_job_message
from mlstack.worker.jobs import JobHandler

QUEUE = broker.queue_name("M")


def _message(**overrides: Any) -> dict[str, Any]:
    body = {"job_id": "j1", "model_name": "M", "method": "predict", "datetime": time.time(), "ttl_ms": 90_000}
    body["features"] = [1]
    body.update(overrides)
    return body


# ---- validation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "job_id", "field"),
    [
        (b"not json", None, None),
        (b"\xff\xfe", None, None),
        (b"[1, 2]", None, None),
        (json.dumps({"model_name": "M"}).encode(), None, "job_id"),
        (json.dumps(_message(job_id="")).encode(), None, "job_id"),
        (json.dumps(_message(job_id=7)).encode(), None, "job_id"),
        (json.dumps(_message(datetime="ontem")).encode(), "j1", "datetime"),
        (json.dumps(_message(datetime=True)).encode(), "j1", "datetime"),
        (b'{"job_id": "j1", "model_name": "M", "method": "predict", "datetime": NaN, "ttl_ms": 1}', "j1", "datetime"),
        (json.dumps(_message(ttl_ms=-1)).encode(), "j1", "ttl_ms"),
        (json.dumps({k: v for k, v in _message().items() if k != "method"}).encode(), "j1", "method"),
        (json.dumps(_message(model_name=["M"])).encode(), "j1", "model_name"),
    ],
)
def test_messages_that_can_never_run_are_poison(raw: bytes, job_id: str | None, field: str | None) -> None:
    with pytest.raises(PoisonMessage) as caught:
        parse_job_message(raw)
    assert caught.value.job_id == job_id
    if field:
        assert f"'{field}'" in caught.value.reason


def test_a_good_message_parses() -> None:
    job = parse_job_message(json.dumps(_message()).encode())
    assert (job.job_id, job.model_name, job.method, job.ttl_ms) == ("j1", "M", "predict", 90_000)
    assert job.body["features"] == [1]


# ---- time limit -----------------------------------------------------------------------------------------
class SleepyModel:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.release = threading.Event()

    def predict(self, dataset: list) -> list:
        self.release.wait(self.seconds)
        return dataset

    def get_model_version(self) -> str:
        return "1"


def test_a_call_past_its_time_limit_is_an_error_and_the_runner_goes_on() -> None:
    runner = ModelRunner()
    stuck = SleepyModel(10)
    result = runner.run(stuck, "M", _message(), 0.2)
    assert (result.status, result.response) == ("Error", messages.model_time_limit("M", 0.2, "predict"))
    assert result.response == "O modelo 'M' excedeu o tempo limite de 0.2 segundos para executar o método 'predict'"
    assert runner.wedged_for() > 0
    assert runner.run(SleepyModel(0), "M", _message(), 1).status == "Done"  # a fresh thread serves it
    stuck.release.set()
    deadline = time.monotonic() + 2
    while runner.wedged_for() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.wedged_for() == 0.0


# ---- settling a message ---------------------------------------------------------------------------------
class RecordingChannel:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def basic_publish(self, exchange: str, routing_key: str, body: bytes, properties: Any) -> None:
        self.calls.append(("publish", exchange, routing_key, body, dict(properties.headers or {})))

    def basic_ack(self, tag: int) -> None:
        self.calls.append(("ack", tag))


def _delivery(headers: dict[str, Any] | None = None, redelivered: bool = False) -> Delivery:
    return Delivery(QUEUE, b"body", redelivered, headers)


@pytest.mark.parametrize(
    ("verdict", "exchange", "routing_key", "attempt"),
    [
        (Verdict(Outcome.RETRY, "api down"), broker.RETRY_EXCHANGE, QUEUE, 3),
        (WAIT, broker.RETRY_EXCHANGE, QUEUE, 2),
        (Verdict(Outcome.DEAD, "bad"), "", broker.DEAD_LETTER_QUEUE, 2),
    ],
)
def test_a_copy_is_published_before_the_ack(verdict: Verdict, exchange: str, routing_key: str, attempt: int) -> None:
    channel = RecordingChannel()
    republish_and_ack(channel, 7, _delivery({broker.ATTEMPT_HEADER: 2}), pika.BasicProperties(), verdict)
    (publish, ack) = channel.calls
    assert publish[:4] == ("publish", exchange, routing_key, b"body") and ack == ("ack", 7)
    headers = publish[4]
    assert headers[broker.ATTEMPT_HEADER] == attempt and headers[broker.REPUBLISHED_HEADER] == 1
    if verdict.reason:
        assert headers[broker.REASON_HEADER] == verdict.reason
    if verdict.outcome is Outcome.DEAD:
        assert headers[broker.SOURCE_QUEUE_HEADER] == QUEUE


def test_ack_only_acks() -> None:
    channel = RecordingChannel()
    republish_and_ack(channel, 1, _delivery(), pika.BasicProperties(), ACK)
    assert channel.calls == [("ack", 1)]


def test_a_republished_copy_counts_as_redelivered() -> None:
    assert not _delivery().redelivered
    assert _delivery({broker.REPUBLISHED_HEADER: 1}).redelivered
    assert _delivery({"x-death": []}).redelivered
    assert _delivery({broker.ATTEMPT_HEADER: "x"}).attempt == 0


# ---- the handler's policy -----------------------------------------------------------------------------------
class FakeApi:
    def __init__(self) -> None:
        self.results: list[tuple[str, dict[str, Any]]] = []
        self.start_answer: tuple[bool, str] | Exception = (True, "")
        self.result_error: Exception | None = None

    def start(self, job_id: str, worker_id: str, lease_s: float) -> tuple[bool, str]:
        if isinstance(self.start_answer, Exception):
            raise self.start_answer
        return self.start_answer

    def renew(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        return True

    def result(self, job_id: str, payload: dict[str, Any]) -> tuple[bool, str]:
        if self.result_error is not None and payload["status"] == "Done":
            raise self.result_error
        self.results.append((job_id, payload))
        return True, ""


class EchoModel:
    def predict(self, dataset: list) -> list:
        return dataset

    def get_model_version(self) -> str:
        return "1"


@pytest.fixture
def handler(tmp_path: Path) -> tuple[JobHandler, FakeApi]:
    (tmp_path / "params.conf").write_text("[M]\n")
    settings = WorkerSettings.from_env(
        {
            "MLSTACK_ENV_FILE": "/nonexistent/unit.env",
            "MLSTACK_API_URL": "http://127.0.0.1:1",
            "MLSTACK_WORKER_TOKEN": "t",
            "MLSTACK_BUNDLE_DIR": str(tmp_path),
            "MLSTACK_WORKER_ID": "w1",
            "MLSTACK_RESULT_RETRY_S": "1",
            "MLSTACK_MAX_ATTEMPTS": "3",
        }
    )
    api = FakeApi()
    return JobHandler(settings, api, {"M": EchoModel()}, {}, threading.Event()), api  # type: ignore[arg-type]


def _body(**overrides: Any) -> bytes:
    return json.dumps(_message(**overrides)).encode()


def test_a_normal_job_is_reported_and_acked(handler: tuple[JobHandler, FakeApi]) -> None:
    jobs, api = handler
    assert jobs.handle(Delivery(QUEUE, _body(), False)) == ACK
    assert api.results[0][1]["status"] == "Done" and api.results[0][1]["response"] == [1]


def test_poison_with_a_job_id_ends_the_job_error_and_is_dead_lettered(handler: tuple[JobHandler, FakeApi]) -> None:
    jobs, api = handler
    verdict = jobs.handle(Delivery(QUEUE, _body(datetime="ontem"), False))
    assert verdict.outcome is Outcome.DEAD and "'datetime'" in verdict.reason
    (job_id, payload) = api.results[0]
    assert job_id == "j1" and payload["status"] == "Error"
    assert payload["response"] == messages.worker_cannot_process(verdict.reason)


def test_a_message_in_another_models_queue_is_poison(handler: tuple[JobHandler, FakeApi]) -> None:
    jobs, _api = handler
    assert jobs.handle(Delivery(broker.queue_name("OTHER"), _body(), False)).outcome is Outcome.DEAD


def test_a_refused_result_ends_the_job_error_instead_of_looping(handler: tuple[JobHandler, FakeApi]) -> None:
    jobs, api = handler
    api.result_error = ApiRejected("/result: HTTP 413", 413)
    verdict = jobs.handle(Delivery(QUEUE, _body(), False))
    assert verdict.outcome is Outcome.DEAD
    assert api.results[0][1]["response"] == messages.worker_cannot_process(messages.result_rejected(413))


def test_an_unreachable_api_is_retried_a_bounded_number_of_times(handler: tuple[JobHandler, FakeApi]) -> None:
    jobs, api = handler
    api.result_error = ApiUnavailable("down")
    assert jobs.handle(Delivery(QUEUE, _body(), False)).outcome is Outcome.RETRY
    last = Delivery(QUEUE, _body(), False, {broker.ATTEMPT_HEADER: 2})  # the third of MLSTACK_MAX_ATTEMPTS=3
    assert jobs.handle(last).outcome is Outcome.DEAD


def test_a_redelivered_job_leased_elsewhere_waits_and_a_finished_one_is_acked(
    handler: tuple[JobHandler, FakeApi],
) -> None:
    jobs, api = handler
    api.start_answer = (False, "leased")
    assert jobs.handle(Delivery(QUEUE, _body(), True)) == WAIT
    api.start_answer = (False, "finished")
    assert jobs.handle(Delivery(QUEUE, _body(), True)) == ACK
    assert api.results == []


@pytest.mark.parametrize("reason", ["finished", "expired", "unknown"])
def test_a_first_delivery_takes_its_lease_before_running(handler: tuple[JobHandler, FakeApi], reason: str) -> None:
    # A job cancelled (the API says "finished") while it waited in the queue is acked and never runs.
    jobs, api = handler
    ran: list[Any] = []
    jobs.models["M"] = type("Spy", (EchoModel,), {"predict": lambda self, d: ran.append(d) or d})()
    api.start_answer = (False, reason)
    assert jobs.handle(Delivery(QUEUE, _body(), False)) == ACK
    assert ran == [] and api.results == []
    api.start_answer = (False, "leased")  # a copy another worker holds: looked at again later
    assert jobs.handle(Delivery(QUEUE, _body(), False)) == WAIT
    api.start_answer = ApiUnavailable("down")  # no lease, no run: retried later
    assert jobs.handle(Delivery(QUEUE, _body(), False)).outcome is Outcome.RETRY
    assert ran == []
