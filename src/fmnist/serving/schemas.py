"""The JSON bodies of the HTTP API as pydantic models: what /openapi.json documents.

The endpoints build their replies as plain dicts (the encoder pass would only cost time);
tests/serving/test_openapi.py checks real replies against these schemas.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorReply(BaseModel):
    """Every refusal (4xx) and failure (5xx)."""

    error: str = Field(description="what is wrong, in one line")
    fix: str = Field(description="what to do about it")


class RankedClass(BaseModel):
    label: str
    probability: float


class ImagePrediction(BaseModel):
    filename: str
    label: str = Field(description='the most probable class, or "uncertain" below --min-confidence')
    class_id: int | None = Field(description="index of label in class_names; null when uncertain")
    probability: float
    top_k: list[RankedClass]
    warnings: list[str] | None = Field(None, description="present when the photo is unlike the data")
    image: str | None = Field(None, description="with preview=true: the 28x28 image the model saw, a PNG data URL")


class PredictReply(BaseModel):
    predictions: list[ImagePrediction] = Field(description="one per file, in the order sent")
    model: str
    backend: str
    latency_ms: float


class RequestLimits(BaseModel):
    max_upload_bytes: int
    max_files: int
    max_pixels: int
    field: str
    formats: list[str]


class ModelInfo(BaseModel):
    model: str
    backend: str
    class_names: list[str]
    min_confidence: float
    limits: RequestLimits


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description='"ready", or "loading" (with status 503)')
    model: str | None = None
    pid: int | None = Field(None, description="the answering process: tells the workers of --workers N apart")


def error_responses(*statuses: int) -> dict[int, dict]:
    """OpenAPI ``responses`` entries with the error shape, for ``statuses``."""
    return {status: {"model": ErrorReply, "description": DESCRIPTIONS[status]} for status in statuses}


DESCRIPTIONS = {
    400: "malformed request, empty file or a Host not allowed",
    401: "missing or wrong bearer token (--token)",
    408: "request head or body too slow",
    413: "body, file count or pixels over the limits",
    415: "not multipart/form-data, or a file that is not a served image format",
    422: "bad form fields or query parameters, or a corrupt image",
    431: "request head over the limit",
    503: "busy (connections, requests or decoding slots) or shutting down",
}
