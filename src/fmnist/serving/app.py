"""The HTTP service: FastAPI app factory. The model is loaded once (in the lifespan, unless
the caller passes a loaded predictor) and shared by all requests through the micro-batcher.

Every refusal is a 4xx JSON reply {"error": ..., "fix": ...}; an unexpected failure is a
JSON 500 without a traceback (the traceback goes to the server log only). Photos are
decoded off the event loop, a bounded number at a time (serving/decoding.py).
"""

from __future__ import annotations

import base64
import gc
import io
import logging
import os
import time
import warnings
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from fmnist import __version__
from fmnist.cpus import available_cpus
from fmnist.errors import FmnistError
from fmnist.inference.photo import (
    WORKING_EDGE,
    ImageTooLargeError,
    decode_opened,
    prepare_image,
)
from fmnist.inference.predictor import Predictor, top_k
from fmnist.serving.batcher import BatcherStopped, MicroBatcher
from fmnist.serving.decoding import DecodePool
from fmnist.serving.metrics import Metrics, MetricsMiddleware
from fmnist.serving.model import load_serving_predictor
from fmnist.serving.schemas import (
    Health,
    ModelInfo,
    PredictReply,
    Readiness,
    error_responses,
)
from fmnist.serving.security import (
    BearerToken,
    HeadAsGet,
    HostAllowList,
    JsonCORSMiddleware,
    SecurityHeaders,
)
from fmnist.serving.settings import ServeSettings
from fmnist.serving.uploads import (
    FIELD,
    SERVED_FORMATS,
    BodyLimitMiddleware,
    Limits,
    RequestRefused,
    Upload,
    open_request_images,
    read_uploads,
)

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("fmnist.serving")


def _png_data_url(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _prepare(uploads: list[Upload], limits: Limits) -> tuple[np.ndarray, list[list[str]]]:
    """uint8 images (n, 28, 28) and per-image warnings; refuses the whole request on a bad
    file. Runs in a decoding thread (DecodePool)."""
    opened = open_request_images(uploads, limits)  # every header checked before any decoding
    images, warnings = [], []
    for index, (upload, image) in enumerate(zip(uploads, opened), start=1):
        try:
            with image:  # the full-size decode is dropped as soon as the reduced copy exists
                decoded = decode_opened(image, f"file {index} ({upload.filename!r})", max_edge=WORKING_EDGE)
            prepared = prepare_image(decoded)
        except ImageTooLargeError as error:
            raise RequestRefused(413, error.problem, "scale the image down before sending it") from None
        except FmnistError as error:
            raise RequestRefused(422, error.problem, error.fix or "send another image") from None
        images.append(prepared.image)
        warnings.append(prepared.warnings)
    return np.stack(images), warnings


PREDICT_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": [FIELD],
                "properties": {
                    FIELD: {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "one or more images (PNG, JPEG, WebP, GIF, BMP); repeat the field for several",
                    }
                },
            }
        }
    },
}


def create_app(settings: ServeSettings, *, predictor: Predictor | None = None) -> FastAPI:
    """The service for ``settings.model``; pass ``predictor`` when it is already loaded."""
    metrics = Metrics()
    decoder = DecodePool(settings.limits.max_decodes or available_cpus(), wait_s=settings.limits.decode_wait_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Pillow warns (and carries on) between its own bomb limit and twice it: refuse
        # those images like the ones it raises for. The server's process, its filter.
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
        decoder.start()
        loaded = predictor or await run_in_threadpool(load_serving_predictor, settings)
        batcher = MicroBatcher(
            loaded.probabilities,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            on_batch=metrics.batch_size.observe,
        )
        batcher.start()
        app.state.predictor, app.state.batcher = loaded, batcher
        # Everything loaded so far (the libraries, the model) lives as long as the server:
        # keep it out of the garbage collector's full passes, which would otherwise scan
        # those objects while requests wait.
        gc.freeze()
        app.state.model_name = loaded.name
        try:
            yield
        finally:
            app.state.predictor = None
            await batcher.stop()
            decoder.stop()

    app = FastAPI(
        title="fmnist",
        version=__version__,
        summary="Classify photos of clothing into the 10 Fashion-MNIST classes.",
        lifespan=lifespan,
    )
    app.state.predictor = None
    # Added innermost first. A refusal by any of them is counted by the metrics and carries
    # the security headers; CORS answers preflights before the token is asked for.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_upload_bytes)
    app.add_middleware(HeadAsGet)
    if settings.token:
        app.add_middleware(BearerToken, token=settings.token)
    if settings.cors_origins:
        app.add_middleware(
            JsonCORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)
    if settings.allowed_hosts:
        app.add_middleware(HostAllowList, allowed=tuple(settings.allowed_hosts))
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts every reply

    @app.exception_handler(RequestRefused)
    async def refused(request: Request, error: RequestRefused) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return RequestRefused(422, f"{where}: {first.get('msg', 'invalid request')}", "see /docs for the parameters").response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        fixes = {404: "see / for the web page and /docs for the API", 405: "see /docs for the methods of each path"}
        return JSONResponse(
            {"error": str(error.detail), "fix": fixes.get(error.status_code, "see /docs")},
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(BatcherStopped)
    async def stopping(request: Request, error: BatcherStopped) -> JSONResponse:
        return JSONResponse({"error": str(error), "fix": "retry in a moment"}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(FmnistError)
    async def model_fault(request: Request, error: FmnistError) -> JSONResponse:
        # Uploads are refused (4xx) before they reach the model, so an FmnistError here is
        # the served model's own fault (outputs NaN or infinite): said as it is, in JSON,
        # with one log line and no traceback; never a NaN in the reply.
        log.error("%s %s: %s", request.method, request.url.path, error)
        return JSONResponse({"error": error.problem, "fix": error.fix or "check the model file"}, status_code=500)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error", "fix": "see the server log; report it if it persists"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", summary="The process is alive", response_model=Health)
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="The model is loaded and requests are served",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "the model is still loading"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        if request.app.state.predictor is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        # The process id tells apart the workers of `fmnist serve --workers N`.
        return JSONResponse({"status": "ready", "model": request.app.state.model_name, "pid": os.getpid()})

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}, **error_responses(401)},
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get(
        "/v1/model",
        summary="The served model, its classes and the request limits",
        response_model=ModelInfo,
        responses=error_responses(401),
    )
    async def model_info(request: Request) -> dict:
        loaded = request.app.state.predictor
        return {
            "model": request.app.state.model_name,
            "backend": loaded.backend,
            "class_names": list(loaded.class_names),
            "min_confidence": settings.min_confidence,
            "limits": {
                "max_upload_bytes": settings.limits.max_upload_bytes,
                "max_files": settings.limits.max_files,
                "max_pixels": settings.limits.max_pixels,
                "field": FIELD,
                "formats": list(SERVED_FORMATS),
            },
        }

    @app.post(
        "/v1/predict",
        summary="Classify one or more images",
        openapi_extra={"requestBody": PREDICT_REQUEST_BODY},
        response_model=PredictReply,
        responses=error_responses(400, 401, 408, 413, 415, 422, 431, 503),
    )
    async def predict(
        request: Request,
        top: int = Query(5, alias="top_k", ge=1, le=10, description="classes listed per image"),
        preview: bool = Query(False, description="add the 28x28 image the model saw (PNG data URL) to each prediction"),
    ) -> JSONResponse:
        started = time.perf_counter()
        uploads = await read_uploads(request, settings.limits)
        images, notes = await decoder.run(_prepare, uploads, settings.limits, abandoned=request.is_disconnected)
        probabilities = await request.app.state.batcher.predict(images)
        metrics.predictions.inc(len(images))
        loaded = request.app.state.predictor
        predictions = []
        for index, prediction in enumerate(
            top_k(probabilities, loaded.class_names, k=top, min_confidence=settings.min_confidence)
        ):
            entry = {"filename": uploads[index].filename, **prediction.to_dict()}
            if notes[index]:
                entry["warnings"] = notes[index]
            if preview:
                entry["image"] = _png_data_url(images[index])
            predictions.append(entry)
        # A JSONResponse directly: the reply is plain data, FastAPI's encoder pass would only cost time.
        return JSONResponse(
            {
                "predictions": predictions,
                "model": request.app.state.model_name,
                "backend": loaded.backend,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )

    return app
