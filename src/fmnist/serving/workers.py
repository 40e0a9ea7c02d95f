"""Several server processes on one listening socket, supervised by uvicorn.

One process parses HTTP, multipart bodies and photos on one Python thread, so on a
machine with spare cores more processes answer more requests per second. uvicorn's
supervisor starts the workers (spawned, so each loads its own model), restarts any that
die and stops them all on SIGTERM or Ctrl-C. Each worker batches its own requests.

Prometheus counters of all workers are added up through prometheus_client's
multiprocess mode: every worker writes its samples to files in one shared folder, and
``GET /metrics`` on any worker reads them all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from fastapi import FastAPI

from fmnist.serving.app import ServeSettings, create_app
from fmnist.serving.metrics import MULTIPROCESS_DIR_ENV
from fmnist.serving.uploads import Limits

SETTINGS_ENV = "FMNIST_SERVE_SETTINGS"  # the workers' ServeSettings, as JSON


def encode_settings(settings: ServeSettings) -> str:
    values = dataclasses.asdict(settings)
    values["model"] = str(settings.model)
    return json.dumps(values)


def decode_settings(text: str) -> ServeSettings:
    values = json.loads(text)
    lists = {name: tuple(values[name]) for name in ("allowed_hosts", "cors_origins")}  # JSON has no tuples
    return ServeSettings(**{**values, **lists, "limits": Limits(**values["limits"])})


def create_worker_app() -> FastAPI:
    """The app of one worker (uvicorn calls this factory in each spawned process)."""
    return create_app(decode_settings(os.environ[SETTINGS_ENV]))


def serve_with_workers(settings: ServeSettings, listener: socket.socket, *, workers: int, **uvicorn_options) -> None:
    """Serve ``settings`` from ``workers`` processes sharing ``listener`` until SIGTERM/SIGINT."""
    from uvicorn.supervisors import Multiprocess

    from fmnist.serving.connections import GuardedConfig

    metrics_dir = Path(tempfile.mkdtemp(prefix="fmnist-metrics-"))
    # Set before any worker starts: spawned processes inherit the environment.
    os.environ[SETTINGS_ENV] = encode_settings(settings)
    os.environ[MULTIPROCESS_DIR_ENV] = str(metrics_dir)
    # A worker that does not answer the supervisor's ping within this many seconds is killed
    # and replaced. uvicorn's 5 s is shorter than importing torch on a busy machine, where
    # starting workers were killed over and over; a worker that died is still noticed at once.
    uvicorn_options.setdefault("timeout_worker_healthcheck", 30)
    # GuardedConfig pickles into each spawned worker with its ConnectionLimits.
    config = GuardedConfig("fmnist.serving.workers:create_worker_app", factory=True, workers=workers, **uvicorn_options)
    try:
        Multiprocess(config, sockets=[listener]).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
