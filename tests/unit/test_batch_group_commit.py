"""Group commit of job inserts (jobstore._GroupCommit): concurrent inserts share one insert_many, each
caller gets its own outcome, a lone insert is written at once, and one bad document fails alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bson.errors import InvalidDocument
from mlstack.jobstore import _GroupCommit
from pymongo.errors import AutoReconnect, BulkWriteError, DuplicateKeyError


class _Collection:
    def __init__(self, fail_ids: frozenset[str] = frozenset(), down: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail_ids = fail_ids
        self.down = down

    async def _check(self, documents: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0.01)  # a round trip: inserts arriving meanwhile wait for the next one
        self.calls.append([d["_id"] for d in documents])
        if self.down:
            raise AutoReconnect("down")
        if any(d.get("bad") for d in documents):
            raise InvalidDocument("cannot encode")

    async def insert_one(self, document: dict[str, Any]) -> None:
        await self._check([document])
        if document["_id"] in self.fail_ids:
            raise DuplicateKeyError("dup", 11000)

    async def insert_many(self, documents: list[dict[str, Any]], ordered: bool = True) -> None:
        assert ordered is False
        await self._check(documents)
        errors = [
            {"index": i, "code": 11000, "errmsg": "dup"} for i, d in enumerate(documents) if d["_id"] in self.fail_ids
        ]
        if errors:
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": []})


async def _insert_all(group: _GroupCommit, ids: list[str], bad: str = "") -> list[BaseException | None]:
    async def one(job_id: str) -> BaseException | None:
        try:
            await group.insert({"_id": job_id, "bad": job_id == bad})
        except Exception as exc:
            return exc
        return None

    return list(await asyncio.gather(*(one(i) for i in ids)))


def test_a_lone_insert_is_written_at_once() -> None:
    collection = _Collection()
    assert asyncio.run(_insert_all(_GroupCommit(collection), ["a"])) == [None]
    assert collection.calls == [["a"]]


def test_concurrent_inserts_share_a_round_trip() -> None:
    collection = _Collection()

    async def scenario() -> list[BaseException | None]:
        group = _GroupCommit(collection)
        first = asyncio.ensure_future(_insert_all(group, ["a", "b"]))
        await asyncio.sleep(0.002)  # while a+b are on the wire, c, d and e arrive
        rest = await _insert_all(group, ["c", "d", "e"])
        return [*await first, *rest]

    assert asyncio.run(scenario()) == [None] * 5
    assert collection.calls == [["a", "b"], ["c", "d", "e"]]


def test_a_duplicate_fails_alone() -> None:
    collection = _Collection(fail_ids=frozenset({"b"}))
    outcomes = asyncio.run(_insert_all(_GroupCommit(collection), ["a", "b", "c"]))
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], DuplicateKeyError)


def test_a_document_bson_cannot_carry_fails_alone() -> None:
    collection = _Collection()
    outcomes = asyncio.run(_insert_all(_GroupCommit(collection), ["a", "b", "c"], bad="b"))
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], InvalidDocument)
    assert collection.calls[0] == ["a", "b", "c"]  # tried together first, then one by one


def test_a_database_outage_fails_every_waiting_insert() -> None:
    outcomes = asyncio.run(_insert_all(_GroupCommit(_Collection(down=True)), ["a", "b"]))
    assert all(isinstance(o, AutoReconnect) for o in outcomes), outcomes


@pytest.mark.parametrize("count", [1, 300])
def test_every_insert_is_answered(count: int) -> None:
    collection = _Collection()
    ids = [f"j{i}" for i in range(count)]
    assert asyncio.run(_insert_all(_GroupCommit(collection), ids)) == [None] * count
    assert sorted(i for call in collection.calls for i in call) == sorted(ids)
    assert max(len(call) for call in collection.calls) <= 256
