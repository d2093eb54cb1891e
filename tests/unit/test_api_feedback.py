"""get_feedback's label collection: label cap, byte cap, the streamed cursor closed early."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mlstack.api.feedback import FeedbackTooLarge, LabelCollector, collect_labels, label_bytes
from mlstack.api.validation import feedback_label_error


def test_label_bytes_is_the_compact_utf8_json_size() -> None:
    assert label_bytes("ação") == len('"ação"'.encode())
    assert label_bytes(12) == 2 and label_bytes([1, 2]) == 5 and label_bytes(None) == 4


def test_whole_jobs_only_until_the_label_cap() -> None:
    collector = LabelCollector(max_labels=5, max_bytes=10_000)
    assert collector.add({"response": ["a", "b"], "feedback": ["a", "c"]})
    assert collector.add({"response": "not a list", "feedback": ["x"]})  # skipped, reading goes on
    assert collector.add({"response": ["c", "d"], "feedback": ["c", "d"]})
    assert not collector.add({"response": ["e", "f"], "feedback": ["e", "f"]})  # 6 > 5: stop
    batch = collector.batch()
    assert batch.y_pred == ["a", "b", "c", "d"] and batch.y_true == ["a", "c", "c", "d"]
    assert batch.jobs_computed == 2


def test_jobs_with_labels_a_message_cannot_carry_are_left_out() -> None:
    collector = LabelCollector(max_labels=100, max_bytes=10_000)
    assert collector.add({"response": [float("nan")], "feedback": [1.0]})
    assert collector.add({"response": [1.0], "feedback": [float("inf")]})
    assert collector.add({"response": [2.0], "feedback": [2.0]})
    batch = collector.batch()
    assert (batch.y_pred, batch.y_true, batch.jobs_computed) == ([2.0], [2.0], 1)


def test_byte_cap_raises() -> None:
    collector = LabelCollector(max_labels=30_000, max_bytes=100)
    collector.add({"response": ["x" * 20], "feedback": ["y" * 20]})  # 2 x (22 + 1) bytes
    with pytest.raises(FeedbackTooLarge):
        collector.add({"response": ["x" * 30], "feedback": ["y" * 30]})


def test_collect_labels_closes_the_stream_when_it_stops_early() -> None:
    state: dict[str, Any] = {"yielded": 0, "closed": False}

    async def jobs() -> AsyncIterator[dict[str, Any]]:
        try:
            for i in range(1000):
                state["yielded"] += 1
                yield {"response": [i], "feedback": [i]}
        finally:
            state["closed"] = True

    batch = asyncio.run(collect_labels(jobs(), max_labels=3, max_bytes=10_000))
    assert batch.y_pred == [0, 1, 2] and state["yielded"] == 4 and state["closed"]


def test_feedback_label_cap_names_the_position() -> None:
    assert feedback_label_error(["ok", "z" * 10], max_bytes=100) is None
    text = feedback_label_error(["ok", "z" * 200], max_bytes=100)
    assert text == (
        "O label na posição 1 da lista de feedbacks tem 202 bytes, porém o tamanho máximo permitido "
        "para um label é de 100 bytes"
    )
