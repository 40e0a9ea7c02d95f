"""The same API answers with the ONNX Runtime backend, matching PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from live_server import LiveServer, learnable_images, png, preview_pixels

from fmnist.export import export_model
from fmnist.inference.predictor import load_predictor


@pytest.mark.slow  # an ONNX export and a second server: about 20 s on a busy 2-core machine
def test_onnxruntime_backend_serves_the_torch_answers(tiny_run, tmp_path):
    onnx_path = tmp_path / "tiny.onnx"
    export_model(tiny_run, onnx_path, fmt="onnx", data=tiny_run.parent / "data")
    images, _ = learnable_images(tiny_run)
    live = LiveServer(onnx_path, "--backend", "onnxruntime", log=tmp_path / "server.log")
    try:
        assert live.request("GET", "/v1/model").json()["backend"] == "onnxruntime"
        document = live.predict([("file", f"{i}.png", png(images[i])) for i in range(4)], "?top_k=10&preview=1").json()
    finally:
        assert live.stop() == 0, live.log.read_text()
    assert document["backend"] == "onnxruntime"
    predictor = load_predictor(tiny_run)
    seen = np.stack([preview_pixels(prediction) for prediction in document["predictions"]])
    expected = predictor.probabilities(seen)  # PyTorch on the very images ONNX Runtime saw
    for row, prediction in zip(expected, document["predictions"]):
        served = {entry["label"]: entry["probability"] for entry in prediction["top_k"]}
        np.testing.assert_allclose([served[name] for name in predictor.class_names], row, atol=1e-4)
