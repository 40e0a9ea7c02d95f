"""`fmnist serve` refuses bad settings in one line and stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import socket

from live_server import LiveServer, learnable_images, png

from fmnist.inference.predictor import load_predictor


def test_bad_model_path(run_fmnist, tmp_path):
    run_fmnist("serve", str(tmp_path / "missing")).error_line("missing")
    run_fmnist("serve", str(tmp_path), "--backend", "onnxruntime").error_line("model.onnx", "fmnist export")


def test_port_in_use_and_bad_ports(run_fmnist, tiny_run):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run_fmnist("serve", str(tiny_run), "--port", str(port)).error_line(f"cannot listen on 127.0.0.1:{port}", "--port")
    run_fmnist("serve", str(tiny_run), "--port", "70000").error_line("--port", "65535")


def test_bad_options(run_fmnist, tiny_run):
    run_fmnist("serve", str(tiny_run), "--max-batch", "0").error_line("--max-batch")
    run_fmnist("serve", str(tiny_run), "--max-wait-ms", "-1").error_line("--max-wait-ms")
    run_fmnist("serve", str(tiny_run), "--workers", "0").error_line("--workers")
    run_fmnist("serve", str(tiny_run), "--min-confidence", "2").error_line("--min-confidence")
    run_fmnist("serve", str(tiny_run), "--backend", "tensorflow").error_line("--backend")


def test_sigterm_stops_the_server_with_status_0(tiny_run, tmp_path):
    """Also checks --min-confidence: the least confident test image is answered "uncertain"."""
    images, _ = learnable_images(tiny_run)
    confidence = load_predictor(tiny_run).probabilities(images).max(axis=1)
    doubtful = int(confidence.argmin())
    threshold = (float(confidence[doubtful]) + 1) / 2
    live = LiveServer(tiny_run, "--min-confidence", f"{threshold:.6f}", log=tmp_path / "server.log")
    try:
        prediction = live.predict([("file", "a.png", png(images[doubtful]))]).json()["predictions"][0]
        assert prediction["label"] == "uncertain" and prediction["class_id"] is None, prediction
        assert prediction["top_k"][0]["probability"] == prediction["probability"] < threshold
    finally:
        returncode = live.stop(signal.SIGTERM)
    log = live.log.read_text()
    assert returncode == 0, log
    assert "Traceback" not in log and "ERROR" not in log, log
    with socket.socket() as probe:  # the port is free again
        probe.bind(("127.0.0.1", live.port))
