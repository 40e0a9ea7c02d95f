"""Request limits of the HTTP service, each refused with a 4xx JSON reply {"error", "fix"}.

What is checked, in order: body size (from Content-Length, then counted while the body
streams in, so a chunked upload cannot slip past), multipart form shape (field names,
number of files, text instead of files), then each file: empty, not one of the served
formats, pixel count read from the image header before any decoding (the
decompression-bomb guard). Connection-level limits (deadlines, header size, connection
counts) are in serving/connections.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from fastapi import Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fmnist.inference.photo import (
    RLE_BMP_COST,
    CorruptImageError,
    ImageTooCostlyError,
    ImageTooLargeError,
    UnsupportedImageError,
    decode_cost,
    open_header,
)

FIELD = "file"  # the multipart field that carries the images
MEGABYTE = 1024 * 1024
# The formats the service documents; any other file is 415 before a Pillow plugin parses it.
SERVED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 10 * MEGABYTE  # whole request body
    max_files: int = 64  # images per request
    max_pixels: int = 24_000_000  # per image (a 6000x4000 photo); decoded RGBA is 4 bytes per pixel
    max_decodes: int | None = None  # requests decoded at once (None: the usable cores); each holds one image
    decode_wait_s: float = 5.0  # longest a request waits for a decoding slot before a 503

    @property
    def max_request_pixels(self) -> int:
        """All images of one request together: many small, highly compressed files must
        not add up to minutes of decoding (64 files at the per-image limit would)."""
        return 2 * self.max_pixels


class RequestRefused(Exception):
    """A request the service will not process: becomes a 4xx JSON reply."""

    def __init__(self, status: int, error: str, fix: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.fix, self.headers = status, error, fix, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "fix": self.fix}, status_code=self.status, headers=self.headers)


@dataclass
class Upload:
    filename: str
    data: bytes


def too_large(limit: int) -> RequestRefused:
    return RequestRefused(
        413,
        f"request body is over the limit of {limit / MEGABYTE:g} MB",
        "send smaller or fewer images, or start the server with a larger --max-upload-mb",
        # The body is not read on: the connection closes after a lingering read (connections.py).
        headers={"Connection": "close"},
    )


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes``: at once from Content-Length, else while streaming.

    A pure ASGI middleware so the check happens before anything buffers the body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    refusal = RequestRefused(400, "invalid Content-Length header", "send a valid request", headers={"Connection": "close"})
                    await refusal.response()(scope, receive, send)
                    return
                if int(value) > self.max_bytes:
                    await too_large(self.max_bytes).response()(scope, receive, send)
                    return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large(self.max_bytes)  # raised inside the endpoint: its handler replies 413
            return message

        await self.app(scope, counted_receive, send)


MAX_TEXT_FIELDS = 16  # text parts per request (none is used; a few are tolerated, then refused)


class _Parser(MultiPartParser):
    """Starlette's parser, noting whether the closing boundary arrived: it silently drops a
    part cut short, which would read as 'no images' rather than as a truncated body."""

    ended = False

    def on_end(self) -> None:
        self.ended = True


def _multipart_refusal(error: MultiPartException, limits: Limits) -> RequestRefused:
    """A limit of the multipart parser as a 413 that names it; anything else a 400."""
    message = error.message.lower()
    cause = str(error.__cause__ or "").lower()  # python-multipart's own reason
    if "files" in message:
        return RequestRefused(413, f"too many files: at most {limits.max_files} per request", "split the images over several requests")
    if "fields" in message:
        return RequestRefused(
            413, f"too many text fields: at most {MAX_TEXT_FIELDS} per request", f"send only files, in the field {FIELD!r}"
        )
    if "exceeded maximum size" in message:
        return RequestRefused(413, "a text form field is over the limit of 1 MB", f"send the images as files in the field {FIELD!r}")
    if "header size" in cause:
        return RequestRefused(
            413, "a part's header line is over the limit of 4 KB (a very long file name?)", "send shorter file names"
        )
    if "header count" in cause:
        return RequestRefused(413, "a part has more than 8 header lines", "send each file with its Content-Disposition and Content-Type only")
    detail = f"{error.message} {error.__cause__}".strip() if error.__cause__ else error.message
    return RequestRefused(400, f"malformed multipart body ({detail[:200]})", "send a valid multipart/form-data body")


async def read_uploads(request: Request, limits: Limits) -> list[Upload]:
    """The files of a multipart request's ``file`` field(s), in the order they were sent."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise RequestRefused(
            415,
            f"expected a multipart/form-data body, got {content_type or 'no Content-Type'!r}",
            f"send the images as multipart form field {FIELD!r}, e.g. curl -F {FIELD}=@shirt.jpg",
        )
    try:
        # The parser itself, not request.form(): that turns parser errors into bare 400s.
        parser = _Parser(request.headers, request.stream(), max_files=limits.max_files, max_fields=MAX_TEXT_FIELDS)
        form = await parser.parse()
    except ClientDisconnect:
        # The client left (or its body deadline passed): nobody reads this reply.
        raise RequestRefused(400, "the client disconnected before the body arrived", "send the whole body") from None
    except MultiPartException as error:
        raise _multipart_refusal(error, limits) from None
    if not parser.ended:
        await form.close()
        raise RequestRefused(
            400,
            "the multipart body is incomplete: its closing boundary never arrived",
            "send the whole body (a Content-Length smaller than the body cuts it short)",
        )
    try:
        unexpected = sorted({name for name in form if name != FIELD})
        items = form.getlist(FIELD)
        if unexpected or not items:
            got = ", ".join(repr(name) for name in unexpected) or "no fields"
            raise RequestRefused(
                422,
                f"expected images in the form field {FIELD!r}, got {got}",
                f"name the field {FIELD!r} (curl -F {FIELD}=@shirt.jpg); repeat it for several images",
            )
        if len(items) > limits.max_files:
            raise RequestRefused(
                413, f"too many files: {len(items)}, at most {limits.max_files} per request", "split the images over several requests"
            )
        uploads = []
        for index, item in enumerate(items, start=1):
            if not isinstance(item, UploadFile):
                raise RequestRefused(
                    422,
                    f"form field {FIELD!r} number {index} is text, not a file",
                    f"upload the image as a file (curl -F {FIELD}=@shirt.jpg, note the @)",
                )
            uploads.append(Upload(item.filename or f"{FIELD}#{index}", await item.read()))
        return uploads
    finally:
        await form.close()


def open_image_header(upload: Upload, index: int, max_pixels: int) -> Image.Image:
    """The image of ``upload`` with only its header read; refuses empty files, files not in
    SERVED_FORMATS and images over ``max_pixels`` before any pixel is decoded."""
    name = f"file {index} ({upload.filename!r})"
    if not upload.data:
        raise RequestRefused(400, f"{name} is empty", "send a non-empty image file")
    try:
        return open_header(BytesIO(upload.data), name, max_pixels=max_pixels, formats=SERVED_FORMATS)
    except UnsupportedImageError as error:
        raise RequestRefused(415, error.problem, error.fix or "send an image") from None
    except ImageTooCostlyError as error:  # within the pixel limit, but slow or large to read
        raise RequestRefused(422, error.problem, error.fix or "send a PNG") from None
    except ImageTooLargeError as error:
        raise RequestRefused(413, error.problem, "scale the image down before sending it") from None
    except CorruptImageError as error:
        raise RequestRefused(422, error.problem, error.fix or "send a complete image file") from None


def open_request_images(uploads: list[Upload], limits: Limits) -> list[Image.Image]:
    """Every file's image, header read only, after checking all headers and the pixels of
    all images together: nothing is decoded unless the whole request is within limits."""
    images: list[Image.Image] = []
    try:
        for index, upload in enumerate(uploads, start=1):
            images.append(open_image_header(upload, index, limits.max_pixels))
        # Slow formats count for more than their pixels (photo.decode_cost), so many small
        # RLE BMPs cannot add up to seconds of decoding either.
        costs = [decode_cost(image) for image in images]
        if sum(costs) > limits.max_request_pixels:
            slow = any(cost != image.size[0] * image.size[1] for cost, image in zip(costs, images))
            raise RequestRefused(
                413,
                f"the request's images have {sum(costs):,} pixels together, over the limit of {limits.max_request_pixels:,}"
                + (f" (an RLE-compressed BMP's pixels count {RLE_BMP_COST} times)" if slow else ""),
                "send fewer or smaller images per request",
            )
    except RequestRefused:
        for image in images:
            image.close()
        raise
    return images
