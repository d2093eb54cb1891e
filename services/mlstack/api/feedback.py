"""get_feedback date rules and API metrics (pure functions)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlstack import messages
from mlstack.api.jsonsafe import value_problem

DAY_S = 86400
DATE_FORMAT = "%d/%m/%Y"


@dataclass(frozen=True)
class DateRange:
    start: float
    end_exclusive: float


def parse_range(initial_date: str, end_date: str) -> DateRange | str:
    """Epoch range [initial, end + 1 day) or the contract's error text.

    Dates are local-time midnights, as in the original (datetime.timestamp on naive values).
    """
    try:
        start = datetime.strptime(initial_date, DATE_FORMAT).timestamp()
    except ValueError as exc:
        return messages.bad_initial_date(str(exc))
    try:
        end = datetime.strptime(end_date, DATE_FORMAT).timestamp()
    except ValueError as exc:
        return messages.bad_end_date(str(exc))
    if start > end:
        return messages.initial_after_end(initial_date, end_date)
    end_exclusive = end + DAY_S
    days = int((end_exclusive - start) / DAY_S)
    if days > messages.MAX_FEEDBACK_DAYS:
        return messages.span_too_long(initial_date, end_date, days - 1)
    return DateRange(start, end_exclusive)


def format_next_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("dia %d/%m/%Y a partir das %H:%M:%S hs")


@dataclass(frozen=True)
class FeedbackBatch:
    y_pred: list[Any]
    y_true: list[Any]
    jobs_computed: int


class FeedbackTooLarge(Exception):
    """The labels would make a get_feedback message over the byte cap."""


def label_bytes(label: Any) -> int:
    """Bytes a label takes in the job message (compact JSON, UTF-8)."""
    return len(json.dumps(label, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8", "replace"))


class LabelCollector:
    """Newest jobs first, whole jobs only, until the label cap would be passed; counts message bytes."""

    def __init__(self, max_labels: int, max_bytes: int) -> None:
        self.max_labels = max_labels
        self.max_bytes = max_bytes
        self.y_pred: list[Any] = []
        self.y_true: list[Any] = []
        self.computed = 0
        self.bytes = 0

    def add(self, job: dict[str, Any]) -> bool:
        """Take one job's labels; False once the label cap is reached (stop reading).

        Raises FeedbackTooLarge when the labels pass the byte cap.
        """
        response, feedback = job.get("response"), job.get("feedback")
        if not isinstance(response, list) or not isinstance(feedback, list):
            return True
        if value_problem(response) or value_problem(feedback):
            # e.g. a NaN a model predicted, stored by a real MongoDB: it cannot go into the
            # message, and one such job must not block the model's get_feedback for 90 days.
            return True
        if len(self.y_pred) + len(response) > self.max_labels:
            return False
        # +1 per label: the comma that separates it in the message.
        self.bytes += sum(label_bytes(label) + 1 for label in (*response, *feedback))
        if self.bytes > self.max_bytes:
            raise FeedbackTooLarge
        self.y_pred += response
        self.y_true += feedback
        self.computed += 1
        return True

    def batch(self) -> FeedbackBatch:
        return FeedbackBatch(self.y_pred, self.y_true, self.computed)


async def collect_labels(
    jobs: AsyncIterable[dict[str, Any]],
    max_labels: int = messages.MAX_FEEDBACK_LABELS,
    max_bytes: int = 8 * 1024 * 1024,
) -> FeedbackBatch:
    """Read streamed jobs into one batch (see LabelCollector)."""
    collector = LabelCollector(max_labels, max_bytes)
    try:
        async for job in jobs:
            if not collector.add(job):
                break
    finally:
        aclose = getattr(jobs, "aclose", None)
        if aclose is not None:  # closes the database cursor now, not when garbage collected
            await aclose()
    return collector.batch()


def _distinct_labels(labels: list[Any]) -> list[Any]:
    distinct: list[Any] = []
    seen: set[Any] = set()
    for label in labels:
        key = (type(label).__name__, label if isinstance(label, (str, int, float, bool)) else repr(label))
        if key not in seen:
            seen.add(key)
            distinct.append(label)
    with contextlib.suppress(TypeError):  # mixed label types stay unsorted, as in the original
        distinct.sort()
    return distinct


def api_metrics(batch: FeedbackBatch, predict_done: int, has_feedback: int) -> dict[str, Any]:
    return {
        "feedback_labels_types": _distinct_labels(batch.y_true),
        "qty_computed_labels": len(batch.y_pred),
        "total_jobs_predict_done": predict_done,
        "total_jobs_has_feedback": has_feedback,
        "total_jobs_computed_feedback": batch.jobs_computed,
        "additional_info": messages.feedback_additional_info(predict_done, has_feedback, batch.jobs_computed),
    }
