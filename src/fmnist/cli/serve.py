"""`fmnist serve`: the HTTP prediction service and its web page (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

from fmnist.cli.common import positive_float, positive_int, probability, whole_number
from fmnist.errors import ConfigError, RunError

BACKEND_CHOICES = ("torch", "onnxruntime")


def non_negative_float(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    return positive_float(text)


def port_number(text: str) -> int:
    return whole_number(text, 0, 65535, what="port number (0: any free port)")


def _listen(host: str, port: int) -> socket.socket:
    """Bind here, before uvicorn, so a busy port is a one-line error rather than a server log."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restarts reuse TIME_WAIT ports
    try:
        listener.bind((host, port))
    except (OSError, OverflowError) as error:
        listener.close()
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(f"cannot listen on {host}:{port} ({reason})", "pick another --port, or stop what uses it") from None
    return listener


def _exit_cleanly(signum: int, frame: object) -> None:
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal for the previous
    # handler: this one, which ends the process with status 0 instead of "killed by SIGTERM".
    raise SystemExit(0)


def cmd_serve(args: argparse.Namespace) -> int:
    if not Path(args.model).expanduser().exists():  # the common typo, refused before the slow imports
        raise RunError(f"{args.model}: no such run folder or model file", "check the path")
    # Bind first: a busy port is refused at once, before the slow imports and model loading.
    listener = _listen(args.host, args.port)
    try:
        import uvicorn

        from fmnist.serving.app import ServeSettings, create_app
        from fmnist.serving.limits import MEGABYTE, Limits
        from fmnist.serving.model import load_serving_predictor
    except ImportError:
        raise ConfigError("serving needs FastAPI and uvicorn", "pip install 'fmnist[serve]'") from None

    threads = args.threads
    if threads is None and args.workers > 1:
        threads = max(1, (os.cpu_count() or 1) // args.workers)  # the cores shared out, not oversubscribed
    settings = ServeSettings(
        model=args.model,
        backend=args.backend,
        limits=Limits(
            max_upload_bytes=int(args.max_upload_mb * MEGABYTE), max_files=args.max_files, max_pixels=args.max_pixels
        ),
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        min_confidence=args.min_confidence,
        threads=threads,
    )
    try:
        predictor = load_serving_predictor(settings)  # a bad model path fails here, in one line
    except BaseException:
        listener.close()
        raise
    options = {
        "log_level": args.log_level,
        "timeout_graceful_shutdown": 10,
        "access_log": args.log_level in ("info", "debug"),
    }
    host, port = listener.getsockname()[:2]
    processes = f", {args.workers} worker processes" if args.workers > 1 else ""
    print(
        f"serving {args.model} ({args.backend}{processes}) on http://{host}:{port}/ (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    if args.workers > 1:
        from fmnist.serving.workers import serve_with_workers

        del predictor  # checked; each worker loads its own
        serve_with_workers(settings, listener, workers=args.workers, **options)
        return 0
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.Server(uvicorn.Config(create_app(settings, predictor=predictor), **options)).run(sockets=[listener])
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="HTTP prediction service with a web page")
    serve.add_argument("model", metavar="RUN_DIR_OR_MODEL", help="run folder, model file, or ONNX file (--backend onnxruntime)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=port_number, default=8000, help="0 picks a free port")
    serve.add_argument("--backend", choices=BACKEND_CHOICES, default="torch")
    serve.add_argument("--max-batch", type=positive_int, default=256, help="most images per forward pass")
    serve.add_argument(
        "--max-wait-ms", type=non_negative_float, default=2.0, help="longest a request waits for others to share its batch"
    )
    serve.add_argument("--max-upload-mb", type=positive_float, default=10.0, help="largest request body, in MB")
    serve.add_argument("--max-files", type=positive_int, default=64, help="most images per request")
    serve.add_argument("--max-pixels", type=positive_int, default=24_000_000, help="most pixels per image (bomb guard)")
    serve.add_argument("--min-confidence", type=probability, default=0.0, help="answer 'uncertain' below this probability")
    serve.add_argument(
        "--workers", type=positive_int, default=1, help="server processes sharing the port (each loads the model)"
    )
    serve.add_argument(
        "--threads", type=positive_int, default=None, help="backend threads per process (default: the cores / --workers)"
    )
    serve.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(handler=cmd_serve)
