"""What a server is started with: the model and the serving knobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fmnist.serving.uploads import Limits


@dataclass(frozen=True)
class ServeSettings:
    model: str | Path  # run folder, model file or ONNX file
    backend: str = "torch"  # torch | onnxruntime
    limits: Limits = field(default_factory=Limits)
    max_batch: int = 256  # images per forward pass
    max_wait_ms: float = 2.0  # longest the first request of a batch waits for company
    min_confidence: float = 0.0  # below this the answer is "uncertain"
    threads: int | None = None  # backend threads (None: the library default)
    allowed_hosts: tuple[str, ...] = ()  # Host header values served ("*.example.com" too); () = any
    cors_origins: tuple[str, ...] = ()  # origins whose pages may call the API from a browser
    token: str | None = None  # bearer token required on /v1/* and /metrics
