"""Request bodies. Field shapes match the original stack, so FastAPI's 422 answers do too."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class InferenceRequest(BaseModel):
    model_name: str
    method: str
    features: list[Any] | None = None
    targets: list[Any] | None = None


class StatusRequest(BaseModel):
    job_id: str


class FeedbackRequest(BaseModel):
    job_id: str
    feedback: list[Any]


class GetFeedbackRequest(BaseModel):
    model_name: str
    initial_date: str
    end_date: str


class WorkerModel(BaseModel):
    name: str
    version: str = ""


class RegisterRequest(BaseModel):
    worker_id: str
    models: list[WorkerModel]


class DeregisterRequest(BaseModel):
    worker_id: str


class StartRequest(BaseModel):
    worker_id: str = ""
    # How long the job stays leased to this worker unless renewed (workers renew every third of it).
    lease_s: float = Field(default=30.0, ge=1.0, le=3600.0)


class ResultRequest(BaseModel):
    status: str
    response: Any = None
    model_version: str = ""
    queue_response_time_sec: float = -1.0
    # Echoed from the job message, so storing a result needs no read of the job first.
    method: str = ""
    datetime: float | None = None
