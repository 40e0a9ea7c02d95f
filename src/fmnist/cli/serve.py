"""`fmnist serve`: the HTTP prediction service and its web page (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

from fmnist.cli.common import positive_float, positive_int, probability, whole_number
from fmnist.cpus import choose_threads
from fmnist.errors import ConfigError, RunError

BACKEND_CHOICES = ("torch", "onnxruntime")


def non_negative_float(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    return positive_float(text)


def port_number(text: str) -> int:
    return whole_number(text, 0, 65535, what="port number (0: any free port)")


def host_pattern(text: str) -> str:
    """A Host allow-list entry: a name or address, ``*.`` + a domain, or ``*``."""
    pattern = text.strip().lower()
    if not pattern or any(char in pattern for char in " /,") or ("*" in pattern and pattern != "*" and not pattern.startswith("*.")):
        raise argparse.ArgumentTypeError(f"expected a host name such as example.com or *.example.com, got {text!r}")
    return pattern


def origin(text: str) -> str:
    """A CORS origin: scheme://host[:port], no path (what browsers send), or ``*``."""
    value = text.strip().rstrip("/")
    scheme, _, rest = value.partition("://")
    if value != "*" and (scheme not in ("http", "https") or not rest or "/" in rest):
        raise argparse.ArgumentTypeError(f"expected an origin such as https://example.com, got {text!r}")
    return value


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
    from fmnist import extras

    # A missing extra first: it is what a core install meets whatever the port or path.
    uvicorn = extras.require("serve", "uvicorn", "fastapi", "python_multipart", "prometheus_client", feature="fmnist serve")
    if args.backend == "onnxruntime":
        extras.require("export", "onnxruntime", feature="fmnist serve --backend onnxruntime")
    if not Path(args.model).expanduser().exists():  # the common typo, refused before model loading
        raise RunError(f"{args.model}: no such run folder or model file", "check the path")
    # Bind first: a busy port is refused at once, before model loading.
    listener = _listen(args.host, args.port)
    from fmnist.serving.app import ServeSettings, create_app
    from fmnist.serving.model import load_serving_predictor
    from fmnist.serving.uploads import MEGABYTE, Limits

    # The CPUs this process may use (affinity, cgroup quota, OMP_NUM_THREADS), shared out
    # among the workers so they do not oversubscribe them.
    threads = choose_threads(args.threads, share=args.workers).threads
    from PIL import Image

    from fmnist.cpus import available_cpus
    from fmnist.serving.connections import ConnectionLimits, GuardedConfig

    if args.max_pixels > Image.MAX_IMAGE_PIXELS:  # Pillow's own bomb guard would refuse them anyway
        listener.close()
        raise ConfigError(f"--max-pixels {args.max_pixels:,} is over Pillow's limit of {Image.MAX_IMAGE_PIXELS:,}", "pick a smaller --max-pixels")
    token = args.token or os.environ.get("FMNIST_TOKEN") or None
    settings = ServeSettings(
        model=args.model,
        backend=args.backend,
        limits=Limits(
            max_upload_bytes=int(args.max_upload_mb * MEGABYTE),
            max_files=args.max_files,
            max_pixels=args.max_pixels,
            max_decodes=args.decode_threads or max(1, available_cpus() // args.workers),
        ),
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        min_confidence=args.min_confidence,
        threads=threads,
        allowed_hosts=tuple(args.allowed_host or ()),
        cors_origins=tuple(args.cors_origin or ()),
        token=token,
    )
    connection_limits = ConnectionLimits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        max_header_bytes=int(args.max_header_kb * 1024),
        max_connections=args.max_connections,
        max_in_flight=args.limit_concurrency,
        linger_bytes=max(4 * settings.limits.max_upload_bytes, 16 * MEGABYTE),
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
        "backlog": args.backlog,
        "connection_limits": connection_limits,
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
    uvicorn.Server(GuardedConfig(create_app(settings, predictor=predictor), **options)).run(sockets=[listener])
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
        "--threads", type=positive_int, default=None, help="backend threads per process (default: $OMP_NUM_THREADS, else the CPUs this process may use / --workers)"
    )
    serve.add_argument(
        "--decode-threads", type=positive_int, default=None, help="images decoded at once per process (default: the CPUs / --workers)"
    )
    limits = serve.add_argument_group("connection limits (per process)")
    limits.add_argument("--header-timeout", type=positive_float, default=10.0, help="seconds for a request head (408)")
    limits.add_argument("--body-timeout", type=positive_float, default=60.0, help="seconds for a request body after its head (408)")
    limits.add_argument("--keep-alive-timeout", type=positive_float, default=5.0, help="seconds an idle keep-alive connection stays open")
    limits.add_argument("--max-header-kb", type=positive_float, default=32.0, help="largest request line and headers, in KiB (431)")
    limits.add_argument(
        "--max-connections", type=positive_int, default=1000, help="open connections; the longest idle one makes room (also capped by ulimit -n)"
    )
    limits.add_argument("--limit-concurrency", type=positive_int, default=128, help="requests processed at once; more get 503")
    limits.add_argument("--backlog", type=positive_int, default=2048, help="connections waiting to be accepted (the kernel caps it)")
    exposure = serve.add_argument_group("exposure (for --host 0.0.0.0)")
    exposure.add_argument(
        "--allowed-host", action="append", type=host_pattern, metavar="HOST",
        help="serve only requests whose Host is this (repeat; *.example.com matches subdomains); default: any",
    )  # fmt: skip
    exposure.add_argument(
        "--cors-origin", action="append", type=origin, metavar="ORIGIN",
        help="let pages from this origin call the API from a browser (repeat); default: none",
    )  # fmt: skip
    exposure.add_argument(
        "--token", default=None, help="require Authorization: Bearer TOKEN on /v1/* and /metrics (or set FMNIST_TOKEN)"
    )
    serve.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(handler=cmd_serve)
