"""MongoDB job store: the only module that imports pymongo.

Uses pymongo's native asyncio client so the API never blocks its event loop.
Jobs are keyed by ``_id = job_id`` (every per-job lookup is a primary-key hit);
the indexes below serve get_feedback's queries on a real MongoDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bson.errors import BSONError
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

JOBS = "col_jobs"
QUEUE_REGISTRY = "col_queue_registry"
FEEDBACK_LIMITS = "col_feedback_limits"
GLOBAL_LIMIT_KEY = "global"
UNFINISHED = ["Queued", "Running"]

# Everything a store call can raise: the driver's errors, a document BSON cannot encode, and an
# integer BSON cannot hold (pymongo raises a bare OverflowError). Callers map it to the contract's
# database answer, never a 500.
StoreError = (PyMongoError, BSONError, OverflowError)
# Date field the TTL index expires jobs on (a BSON date, as TTL indexes need).
RETENTION_FIELD = "created_at"
RETENTION_INDEX = "idx_jobs_created"
LEGACY_TTL_INDEX = "ttl_jobs_retention"
# Fields of a predict job that get_feedback reads.
FEEDBACK_FIELDS = {"_id": 0, "response": 1, "feedback": 1}
# Fields of a job that the operator dashboard reads.
RECENT_FIELDS = {"_id": 0, "datetime": 1, "status": 1, "total_response_time_sec": 1, "expires_at": 1}
# Most job inserts one group commit writes (a batch is what arrived during one round trip).
GROUP_COMMIT_MAX = 256


def utc_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


class LimitTaken(enum.Enum):
    """Outcome of taking the get_feedback rate limit."""

    TAKEN = "taken"
    MODEL = "model"
    GLOBAL = "global"


class StartOutcome(enum.Enum):
    RUN = "run"
    EXPIRED = "expired"
    FINISHED = "finished"
    UNKNOWN = "unknown"
    LEASED = "leased"  # another worker runs it now (its lease is alive)


LeaseClause = Callable[[float, str], dict[str, Any]]


# The lease conditions a start may take a job under, one per conditional update. Not one ``$or``:
# nx-27017 (the test stand-in) turns an ``_id`` filter with such an ``$or`` into a collection scan
# (270 ms per update at 20k jobs), and a first try on the common case costs one round trip anyway.
def _never_leased(now: float, worker_id: str) -> dict[str, Any]:
    return {"lease_until": {"$exists": False}}


def _lease_expired(now: float, worker_id: str) -> dict[str, Any]:
    return {"lease_until": {"$lte": now}}


def _own_lease(now: float, worker_id: str) -> dict[str, Any]:
    return {"lease_worker": worker_id}  # the same worker again (e.g. restarted): its own lease


def _start_update(
    job_id: str, now: float, worker_id: str, lease_s: float, lease_clause: LeaseClause = _never_leased
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The conditional update that takes a job's lease: refuses a finished, cancelled or expired job
    and one another worker's live lease holds."""
    filter_ = {
        "_id": job_id,
        "status": {"$in": UNFINISHED},
        "expires_at": {"$gt": now},
        **lease_clause(now, worker_id),
    }
    update = {
        "$set": {"status": "Running", "started_at": now, "lease_worker": worker_id, "lease_until": now + lease_s},
        "$inc": {"attempts": 1},
    }
    return filter_, update


@dataclass(frozen=True)
class FeedbackLimits:
    model_next: float
    global_next: float


class _GroupCommit:
    """Job inserts of concurrent requests go out together: one ``insert_many`` (unordered) carries
    every insert that arrived while the previous one was on the wire, and each caller returns only
    once its own document is written (or raises its own error). One request alone is written at
    once, as before; under load one round trip serves many (the database's CPU per job drops)."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def insert(self, document: dict[str, Any]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((document, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        batch: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[:GROUP_COMMIT_MAX], self._pending[GROUP_COMMIT_MAX:]
                await self._write(batch)
        except BaseException:  # cancelled at shutdown: nobody waits forever
            for _, future in [*batch, *self._pending]:
                _settle(future, PyMongoError("the job store is closing"))
            self._pending = []
            raise
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        try:
            if len(batch) == 1:
                await self._collection.insert_one(batch[0][0])
            else:
                await self._collection.insert_many([document for document, _ in batch], ordered=False)
        except BulkWriteError as exc:
            details = exc.details or {}
            failed = {int(e["index"]): e for e in details.get("writeErrors", [])}
            unsure = bool(details.get("writeConcernErrors"))
            for index, (_, future) in enumerate(batch):
                error = failed.get(index)
                if error is not None:
                    code = error.get("code")
                    cls = DuplicateKeyError if code == 11000 else OperationFailure
                    _settle(future, cls(str(error.get("errmsg", "")), code))
                else:
                    _settle(future, exc if unsure else None)
        except (BSONError, OverflowError) as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
            else:  # one document BSON cannot carry: the others must not fail with it
                for item in batch:
                    await self._write([item])
        except Exception as exc:
            for _, future in batch:
                _settle(future, exc)
        else:
            for _, future in batch:
                _settle(future, None)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return  # the request was cancelled meanwhile
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class JobStore:
    def __init__(self, uri: str, database: str, timeout_ms: int = 2000, retention_days: int = 120) -> None:
        self._retention_s = retention_days * 86400
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=max(timeout_ms * 5, 10_000),
            appname="mlstack-api",
        )
        db = self._client[database]
        self._jobs = db[JOBS]
        self._inserts = _GroupCommit(self._jobs)
        self._registry = db[QUEUE_REGISTRY]
        self._limits = db[FEEDBACK_LIMITS]

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> bool:
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    async def ensure_indexes(self) -> None:
        await self._ensure_retention_index()
        await self._jobs.create_index([("job_id", ASCENDING)], name="idx_jobid")
        await self._jobs.create_index(
            [("model_name", ASCENDING), ("method", ASCENDING), ("status", ASCENDING)], name="idx_jobs_pred_done"
        )
        await self._jobs.create_index(
            [
                ("model_name", ASCENDING),
                ("method", ASCENDING),
                ("status", ASCENDING),
                ("has_feedback", ASCENDING),
                ("datetime", ASCENDING),
            ],
            name="idx_getfeedback",
        )
        # The operator dashboard reads a model's jobs of the last hour.
        await self._jobs.create_index([("model_name", ASCENDING), ("datetime", DESCENDING)], name="idx_model_recent")

    async def _ensure_retention_index(self) -> None:
        """A plain index on ``created_at`` for the retention purge.

        Not a TTL index: nx-27017 (the test stand-in) filters TTL-expired documents on every read,
        which turns each ``_id`` lookup into a collection scan (20 ms at 20k jobs instead of 0.5 ms).
        A purge the API runs itself works the same on MongoDB and on the stand-in, so it is tested.
        """
        with contextlib.suppress(OperationFailure):  # a TTL index of an older release: replaced
            await self._jobs.drop_index(LEGACY_TTL_INDEX)
        await self._jobs.create_index([(RETENTION_FIELD, ASCENDING)], name=RETENTION_INDEX)

    async def purge_expired_jobs(self, now: float) -> int:
        """Delete jobs created more than the retention period before ``now``; returns how many."""
        result = await self._jobs.delete_many({RETENTION_FIELD: {"$lt": utc_datetime(now - self._retention_s)}})
        return int(result.deleted_count)

    # ---- jobs -------------------------------------------------------------------
    async def insert_job(self, job: dict[str, Any]) -> None:
        """Store a new job; ``created_at`` (for the retention purge) is derived from ``datetime``."""
        await self._inserts.insert({**job, RETENTION_FIELD: utc_datetime(float(job["datetime"]))})

    async def delete_job(self, job_id: str) -> None:
        await self._jobs.delete_one({"_id": job_id})

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        return await self._jobs.find_one({"_id": job_id})

    async def start_job(self, job_id: str, now: float, worker_id: str = "", lease_s: float = 30.0) -> StartOutcome:
        """Mark a job Running and lease it to a worker, unless it expired, finished (or was cancelled),
        or another worker's lease on it is alive (conditional updates: two workers cannot both win)."""
        result = await self._jobs.update_one(*_start_update(job_id, now, worker_id, lease_s))
        if result.matched_count:
            return StartOutcome.RUN
        return await self._start_leased_before(job_id, now, worker_id, lease_s)

    async def _start_leased_before(self, job_id: str, now: float, worker_id: str, lease_s: float) -> StartOutcome:
        """A job that was leased before: take it if that lease expired or is this worker's own."""
        job = await self._jobs.find_one({"_id": job_id}, {"lease_until": 1, "lease_worker": 1})
        if job is not None and "lease_until" in job:
            clause: LeaseClause | None
            if float(job["lease_until"]) <= now:
                clause = _lease_expired
            elif job.get("lease_worker") == worker_id:
                clause = _own_lease
            else:
                clause = None  # another worker's lease is alive
            if clause is not None:
                result = await self._jobs.update_one(*_start_update(job_id, now, worker_id, lease_s, clause))
                if result.matched_count:
                    return StartOutcome.RUN
        return await self._why_not_runnable(job_id, now, leases=True)

    async def start_jobs(self, job_ids: list[str], now: float, worker_id: str, lease_s: float) -> list[StartOutcome]:
        """``start_job`` for a worker's micro-batch in one round trip (each update conditional as there).

        When not every job was taken, a job whose stored lease is this worker's with this call's
        ``started_at`` was taken by it; the others are asked why not."""
        updates = [UpdateOne(*_start_update(job_id, now, worker_id, lease_s)) for job_id in job_ids]
        written = await self._jobs.bulk_write(updates, ordered=False)
        if written.matched_count == len(job_ids):
            return [StartOutcome.RUN] * len(job_ids)
        outcomes: list[StartOutcome] = []
        for job_id in job_ids:
            stored = await self._jobs.find_one({"_id": job_id}, {"started_at": 1, "lease_worker": 1})
            if stored is not None and stored.get("started_at") == now and stored.get("lease_worker") == worker_id:
                outcomes.append(StartOutcome.RUN)
            else:
                outcomes.append(await self._start_leased_before(job_id, now, worker_id, lease_s))
        return outcomes

    async def renew_lease(self, job_id: str, worker_id: str, now: float, lease_s: float) -> bool:
        """Extend a running job's lease; False when the worker no longer holds it."""
        result = await self._jobs.update_one(
            {"_id": job_id, "status": {"$in": UNFINISHED}, "lease_worker": worker_id},
            {"$set": {"lease_until": now + lease_s}},
        )
        return bool(result.matched_count)

    async def finish_job(self, job_id: str, fields: dict[str, Any], now: float) -> StartOutcome:
        """Store a worker's result once; a late or repeated result is not applied."""
        result = await self._jobs.update_one(
            {"_id": job_id, "status": {"$in": UNFINISHED}, "expires_at": {"$gt": now}}, {"$set": fields}
        )
        if result.matched_count:
            return StartOutcome.RUN
        return await self._why_not_runnable(job_id, now)

    async def finish_jobs(self, results: list[tuple[str, dict[str, Any]]], now: float) -> list[StartOutcome]:
        """``finish_job`` for a worker's micro-batch in one round trip (each result conditional as there).

        ``fields`` must hold ``finished_at``: when not every result applied, a job whose stored
        ``finished_at`` is this batch's was finished by it, the others are asked why not."""
        updates = [
            UpdateOne({"_id": job_id, "status": {"$in": UNFINISHED}, "expires_at": {"$gt": now}}, {"$set": fields})
            for job_id, fields in results
        ]
        written = await self._jobs.bulk_write(updates, ordered=False)
        if written.matched_count == len(results):
            return [StartOutcome.RUN] * len(results)
        outcomes: list[StartOutcome] = []
        for job_id, fields in results:
            stored = await self._jobs.find_one({"_id": job_id}, {"finished_at": 1})
            if stored is not None and stored.get("finished_at") == fields["finished_at"]:
                outcomes.append(StartOutcome.RUN)
            else:
                outcomes.append(await self._why_not_runnable(job_id, now))
        return outcomes

    async def _why_not_runnable(self, job_id: str, now: float, leases: bool = False) -> StartOutcome:
        job = await self._jobs.find_one({"_id": job_id}, {"status": 1, "expires_at": 1, "lease_until": 1})
        if job is None:
            return StartOutcome.UNKNOWN
        if job.get("status") in UNFINISHED:
            if float(job.get("expires_at", 0)) <= now:
                return StartOutcome.EXPIRED
            if leases:  # unfinished, not expired, yet not taken: another worker's lease is alive
                return StartOutcome.LEASED
        return StartOutcome.FINISHED

    async def expire_job(self, job_id: str, response: str, now: float) -> None:
        await self._jobs.update_one(
            {"_id": job_id, "status": {"$in": UNFINISHED}},
            {"$set": {"status": "Error", "response": response, "expired_at": now}},
        )

    async def cancel_job(self, job_id: str, response: str, now: float) -> bool:
        """End a job that is still Queued (and not expired) as Error; False when it is not.

        One conditional update, so a cancel and a worker's start or result cannot both win: once
        the job is Error, start_job and finish_job (both conditional on Queued/Running) refuse it.
        """
        result = await self._jobs.update_one(
            {"_id": job_id, "status": "Queued", "expires_at": {"$gt": now}},
            {"$set": {"status": "Error", "response": response, "cancelled_at": now}},
        )
        return bool(result.matched_count)

    async def set_feedback(self, job_id: str, feedback: list[Any], now: float) -> None:
        await self._jobs.update_one(
            {"_id": job_id}, {"$set": {"feedback": feedback, "has_feedback": True, "feedback_at": now}}
        )

    # ---- get_feedback -------------------------------------------------------------
    @staticmethod
    def _feedback_filter(model_name: str, start: float, end: float) -> dict[str, Any]:
        return {
            "model_name": model_name,
            "method": "predict",
            "status": "Done",
            "has_feedback": True,
            "datetime": {"$gte": start, "$lt": end},
        }

    async def count_feedback_jobs(self, model_name: str, start: float, end: float) -> int:
        return await self._jobs.count_documents(self._feedback_filter(model_name, start, end))

    async def count_predict_done(self, model_name: str) -> int:
        return await self._jobs.count_documents({"model_name": model_name, "method": "predict", "status": "Done"})

    async def feedback_jobs(
        self, model_name: str, start: float, end: float, limit: int, batch_size: int = 500
    ) -> AsyncIterator[dict[str, Any]]:
        """Newest first, only the labels, streamed in batches (never the whole result in memory)."""
        cursor = (
            self._jobs.find(self._feedback_filter(model_name, start, end), FEEDBACK_FIELDS)
            .sort("datetime", DESCENDING)
            .limit(limit)
            .batch_size(batch_size)
        )
        try:
            async for job in cursor:
                yield job
        finally:
            await cursor.close()

    async def get_limits(self, model_name: str) -> FeedbackLimits:
        docs = await self._limits.find({"_id": {"$in": [f"model:{model_name}", GLOBAL_LIMIT_KEY]}}).to_list(None)
        by_id = {d["_id"]: float(d.get("next", 0.0)) for d in docs}
        return FeedbackLimits(by_id.get(f"model:{model_name}", 0.0), by_id.get(GLOBAL_LIMIT_KEY, 0.0))

    async def _take(self, key: str, now: float, next_time: float) -> bool:
        """One conditional update: set ``next`` only if it has passed, or create the document.

        When the limit is still on, the filter matches nothing and the upsert's insert hits the
        existing ``_id``: DuplicateKeyError means someone else holds the slot. Two processes
        racing on a missing document meet the same way, so exactly one of them takes it.
        """
        try:
            await self._limits.update_one(
                {"_id": key, "next": {"$lte": now}}, {"$set": {"next": next_time}}, upsert=True
            )
        except DuplicateKeyError:
            return False
        return True

    async def take_feedback_limits(
        self, model_name: str, now: float, model_next: float, global_next: float, model_before: float = 0.0
    ) -> LimitTaken:
        """Take this model's and the global get_feedback slot, each with one conditional update.

        The model's slot is taken first; if the global one is not free, the model's is given back
        (set to ``model_before``, the value read before, only while it still holds ours), so a
        refused request leaves no limit behind.
        """
        model_key = f"model:{model_name}"
        if not await self._take(model_key, now, model_next):
            return LimitTaken.MODEL
        if not await self._take(GLOBAL_LIMIT_KEY, now, global_next):
            await self._limits.update_one({"_id": model_key, "next": model_next}, {"$set": {"next": model_before}})
            return LimitTaken.GLOBAL
        return LimitTaken.TAKEN

    # ---- model registry -------------------------------------------------------------
    async def register_worker(
        self, worker_id: str, models: list[tuple[str, str, str, str]], queues: dict[str, str], now: float
    ) -> None:
        """Record a worker's heartbeat per model: (name, loaded version, production version, state),
        stored under ``workers.<id>`` as ``version``, ``production_version`` and ``state`` (operators'
        views read those keys)."""
        for name, version, production_version, state in models:
            entry = {"seen": now, "version": version, "production_version": production_version, "state": state}
            try:
                await self._registry.update_one(
                    {"_id": name}, {"$set": {"queue": queues[name], f"workers.{worker_id}": entry}}, upsert=True
                )
            except DuplicateKeyError:  # two workers registering the same new model at once
                await self._registry.update_one({"_id": name}, {"$set": {f"workers.{worker_id}": entry}})

    async def deregister_worker(self, worker_id: str) -> None:
        await self._registry.update_many({}, {"$unset": {f"workers.{worker_id}": ""}})

    async def registered_models(self) -> list[dict[str, Any]]:
        """Every registered model with its workers ({worker_id: {seen, version, ...}}), for operators."""
        return await self._registry.find({}).sort("_id", ASCENDING).to_list(1000)

    # ---- operator views (dashboard) ---------------------------------------------------
    async def recent_jobs(self, model_name: str, since: float, limit: int) -> list[dict[str, Any]]:
        """The newest jobs of a model since ``since``: only the fields the dashboard charts need."""
        cursor = (
            self._jobs.find({"model_name": model_name, "datetime": {"$gte": since}}, RECENT_FIELDS)
            .sort("datetime", DESCENDING)
            .limit(limit)
        )
        return await cursor.to_list(limit)

    async def count_queued(self, model_name: str, now: float) -> int:
        """Jobs of a model still waiting in its queue (Queued, not expired)."""
        return await self._jobs.count_documents(
            {"model_name": model_name, "status": "Queued", "expires_at": {"$gt": now}}
        )

    async def registered_queue(self, model_name: str) -> str | None:
        doc = await self._registry.find_one({"_id": model_name}, {"queue": 1})
        return None if doc is None else str(doc.get("queue") or "")
