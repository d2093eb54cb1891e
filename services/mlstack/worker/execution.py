"""Runs one job on a model and checks what it returned, as the contract says (no I/O).

``ModelRunner`` adds the model time limit: the call runs on a thread of its own, and a
call past its limit is abandoned (Python cannot kill a thread) and reported as an Error;
the worker reads ``wedged_for()`` to exit once an abandoned call outlives its grace period.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from mlstack import messages

log = logging.getLogger(__name__)

# method -> (model attribute, name shown in messages, allowed return type name)
_METHODS: dict[str, tuple[str, str, type]] = {
    "predict": ("predict", "predict", list),
    "evaluate": ("evaluate", "evaluate", dict),
    "info": ("get_model_info", "get_model_info", dict),
    "get_feedback": ("get_feedback", "get_feedback", dict),
}


@dataclass(frozen=True)
class JobResult:
    status: str  # "Done" or "Error"
    response: Any
    model_version: str


def _call(model: Any, method: str, message: dict[str, Any]) -> Any:
    if method == "predict":
        return model.predict(dataset=message["features"])
    if method == "evaluate":
        return model.evaluate(data_features=message["features"], data_targets=message["targets"])
    if method == "get_feedback":
        return model.get_feedback(y_pred=message["y_pred"], y_true=message["y_true"])
    return model.get_model_info()


def _json_ready(value: Any) -> Any:
    """numpy scalars/arrays become plain JSON values; anything else unserialisable raises TypeError."""

    def convert(obj: Any) -> Any:
        for attr in ("tolist", "item"):
            if callable(getattr(obj, attr, None)):
                return getattr(obj, attr)()
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    return json.loads(json.dumps(value, default=convert, allow_nan=False))


def run_job(model: Any, model_name: str, message: dict[str, Any]) -> JobResult:
    """Never raises: a failing model becomes an Error result the client can read."""
    method = message.get("method", "")
    if method not in _METHODS:
        return JobResult("Error", f"Método desconhecido: '{method}'", "")
    _, shown_name, allowed = _METHODS[method]
    try:
        returned = _call(model, method, message)
        version = model.get_model_version()
    except Exception as exc:
        log.warning("model %s raised %s in %s", model_name, exc.__class__.__name__, method)
        return JobResult("Error", messages.model_raised(model_name, exc), "")
    if not isinstance(version, str):
        return JobResult("Error", messages.wrong_version_type(type(version).__name__), "")
    if isinstance(returned, str):
        return JobResult("Error", returned, version)
    if type(returned) is not allowed:
        text = messages.wrong_return_type(shown_name, allowed.__name__, type(returned).__name__)
        return JobResult("Error", text, version)
    try:
        return JobResult("Done", _json_ready(returned), version)
    except (TypeError, ValueError) as exc:
        text = f"O retorno do método '{shown_name}' não pode ser convertido para JSON: {exc}"
        return JobResult("Error", text, version)


class _CallThread:
    """One daemon thread that runs model calls in turn (a model may keep per-thread state)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[JobResult], Any, str, dict[str, Any]]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="model-call", daemon=True)
        self.thread.start()

    def submit(self, model: Any, model_name: str, message: dict[str, Any]) -> Future[JobResult]:
        future: Future[JobResult] = Future()
        self._calls.put((future, model, model_name, message))
        return future

    def _loop(self) -> None:
        while True:
            future, model, model_name, message = self._calls.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(run_job(model, model_name, message))
                except BaseException as exc:  # run_job never raises; a BaseException (SystemExit) might
                    future.set_exception(exc)


class ModelRunner:
    """Runs jobs with a time limit; a call past it is abandoned and its thread replaced."""

    def __init__(self) -> None:
        self._thread = _CallThread()
        self._abandoned: list[tuple[float, Future[JobResult]]] = []  # (monotonic time abandoned, call)
        self._lock = threading.Lock()  # the job thread abandons calls, the heartbeat thread reads them

    def run(self, model: Any, model_name: str, message: dict[str, Any], time_limit_s: float) -> JobResult:
        future = self._thread.submit(model, model_name, message)
        try:
            return future.result(timeout=time_limit_s)
        except TimeoutError:
            pass
        method = str(message.get("method", ""))
        log.error(
            "model %s exceeded its time limit of %gs in %s; abandoning the call", model_name, time_limit_s, method
        )
        with self._lock:
            self._abandoned.append((time.monotonic(), future))
        self._thread = _CallThread()
        return JobResult("Error", messages.model_time_limit(model_name, time_limit_s, method), "")

    def wedged_for(self) -> float:
        """Seconds since the oldest abandoned call that is still running was abandoned (0: none)."""
        with self._lock:
            self._abandoned = [(t, f) for t, f in self._abandoned if not f.done()]
            oldest = self._abandoned[0][0] if self._abandoned else None
        return 0.0 if oldest is None else time.monotonic() - oldest
