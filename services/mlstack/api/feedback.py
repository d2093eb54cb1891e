"""get_feedback date rules and API metrics (pure functions)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlstack import messages

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


def collect_labels(jobs: list[dict[str, Any]], max_labels: int = messages.MAX_FEEDBACK_LABELS) -> FeedbackBatch:
    """Newest jobs first, whole jobs only, until the label cap would be passed."""
    y_pred: list[Any] = []
    y_true: list[Any] = []
    computed = 0
    for job in jobs:
        response, feedback = job.get("response"), job.get("feedback")
        if not isinstance(response, list) or not isinstance(feedback, list):
            continue
        if len(y_pred) + len(response) > max_labels:
            break
        y_pred += response
        y_true += feedback
        computed += 1
    return FeedbackBatch(y_pred, y_true, computed)


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
