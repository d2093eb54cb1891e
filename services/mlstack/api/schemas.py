"""Request bodies. Field shapes match the original stack, so FastAPI's 422 answers do too.

Every client value also passes ``jsonsafe.value_problem``: what JSON or BSON cannot carry is a
422 (type ``json_value``) in FastAPI's usual shape, before any write.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from mlstack import messages
from mlstack.api.jsonsafe import value_problem

INVALID_VALUE_TYPE = "json_value"


def _storable(value: Any) -> Any:
    problem = value_problem(value)
    if problem:
        raise PydanticCustomError(INVALID_VALUE_TYPE, messages.INVALID_JSON_VALUE, {"problem": problem})
    return value


Text = Annotated[str, AfterValidator(_storable)]
Items = Annotated[list[Any], AfterValidator(_storable)]


class InferenceRequest(BaseModel):
    model_name: Text
    method: Text
    features: Items | None = None
    targets: Items | None = None


class StatusRequest(BaseModel):
    job_id: Text


class CancelRequest(BaseModel):
    job_id: Text


class FeedbackRequest(BaseModel):
    job_id: Text
    feedback: Items


class GetFeedbackRequest(BaseModel):
    model_name: Text
    initial_date: Text
    end_date: Text


class WorkerModel(BaseModel):
    name: str
    version: str = ""
    # Optional, for operators (/metrics, /dashboard): the version the registry's production alias
    # points to as the worker last saw it, and the model's state there (worker/status.py: "ok",
    # "loading", "degraded", "stale", "unknown").
    production_version: str = ""
    state: str = ""


class RegisterRequest(BaseModel):
    worker_id: str
    models: list[WorkerModel]


class DeregisterRequest(BaseModel):
    worker_id: str


class StartRequest(BaseModel):
    worker_id: str = ""
    # How long the job stays leased to this worker unless renewed (workers renew every third of it).
    lease_s: float = Field(default=30.0, ge=1.0, le=3600.0)


class StartBatchRequest(StartRequest):
    # A worker's micro-batch (at most its max_batch, itself at most 1024): every lease in one call.
    job_ids: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(min_length=1, max_length=1024)


class ResultRequest(BaseModel):
    status: str
    # A response BSON cannot store (e.g. an integer past 2^63) is a 422: the worker then reports an Error.
    response: Annotated[Any, AfterValidator(_storable)] = None
    model_version: str = ""
    queue_response_time_sec: float = -1.0
    # Echoed from the job message, so storing a result needs no read of the job first.
    method: str = ""
    datetime: float | None = None
    # Optional, echoed from the job message: labels the latency figures of /metrics.
    model_name: str = ""


class BatchResult(ResultRequest):
    job_id: str = Field(min_length=1, max_length=100)


class BatchResultsRequest(BaseModel):
    # One micro-batch of a worker (at most its max_batch, itself at most 1024).
    results: list[BatchResult] = Field(min_length=1, max_length=1024)
