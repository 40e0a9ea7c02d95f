"""The HTTP API of `fmnist serve`, over real HTTP against a real server process."""

from __future__ import annotations

import numpy as np
from live_server import learnable_images, png, preview_pixels
from PIL import Image

from fmnist.inference.predictor import load_predictor


def test_health_and_readiness(server):
    assert server.request("GET", "/healthz").json() == {"status": "ok"}
    ready = server.request("GET", "/readyz")
    assert ready.status == 200
    document = ready.json()
    assert document == {"status": "ready", "model": "run", "pid": server.process.pid}  # tiny_run's folder is "run"


def test_predict_reply_shape(server, tiny_run):
    images, _ = learnable_images(tiny_run)
    reply = server.predict([("file", "a.png", png(images[0]))])
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    document = reply.json()
    assert set(document) == {"predictions", "model", "backend", "latency_ms"}
    assert document["model"] == "run" and document["backend"] == "torch"
    assert 0 < document["latency_ms"] < 10_000
    [prediction] = document["predictions"]
    assert set(prediction) == {"filename", "label", "class_id", "probability", "top_k"}
    class_names = load_predictor(tiny_run).class_names
    assert prediction["label"] == class_names[prediction["class_id"]]
    assert len(prediction["top_k"]) == 5
    assert prediction["top_k"][0] == {"label": prediction["label"], "probability": prediction["probability"]}
    ranked = [entry["probability"] for entry in prediction["top_k"]]
    assert ranked == sorted(ranked, reverse=True)
    assert server.predict([("file", "a.png", png(images[0]))], "?top_k=2").json()["predictions"][0]["top_k"][1:] == (
        prediction["top_k"][1:2]
    )


def test_predictions_come_back_in_input_order_and_match_the_library(server, tiny_run):
    """Four different images in one request: each answer is the in-process predictor's answer
    for the image at the same position (the previews are the 28x28 images the model saw)."""
    images, labels = learnable_images(tiny_run)
    chosen = [int(np.flatnonzero(labels == label)[0]) for label in (3, 0, 7, 5)]
    files = [("file", f"image{position}.png", png(images[index])) for position, index in enumerate(chosen)]
    document = server.predict(files, "?preview=true&top_k=10").json()
    predictions = document["predictions"]
    assert [p["filename"] for p in predictions] == [f"image{position}.png" for position in range(4)]
    seen = np.stack([preview_pixels(p) for p in predictions])
    assert seen.shape == (4, 28, 28) and seen.dtype == np.uint8
    np.testing.assert_array_equal(seen, images[chosen])  # dataset-style inputs pass through unchanged
    predictor = load_predictor(tiny_run)
    expected = predictor.probabilities(images[chosen])
    for row, prediction in zip(expected, predictions):
        served = {entry["label"]: entry["probability"] for entry in prediction["top_k"]}
        np.testing.assert_allclose([served[name] for name in predictor.class_names], row, atol=2e-6)
    assert [p["class_id"] for p in predictions] == list(expected.argmax(axis=1))


def test_photo_is_converted_and_warnings_are_returned(server):
    """A dark shirt-like block on a white photo is trimmed, negated and centred."""
    photo = Image.new("RGB", (300, 200), "white")
    photo.paste((40, 40, 40), (100, 20, 200, 180))
    prediction = server.predict([("file", "photo.png", png(photo))], "?preview=1").json()["predictions"][0]
    seen = preview_pixels(prediction)
    assert seen[14, 14] > 150 and seen[0, 0] < 30  # light garment on black, as the dataset

    blank = Image.new("RGB", (64, 64), "white")
    prediction = server.predict([("file", "blank.png", png(blank))]).json()["predictions"][0]
    assert any("no object" in warning for warning in prediction["warnings"])


def test_metrics_count_requests_by_status(server, tiny_run):
    images, _ = learnable_images(tiny_run)
    before = server.metrics()
    server.predict([("file", "a.png", png(images[0]))])
    server.predict([("file", "a.txt", b"not an image")])
    after = server.metrics()
    ok = 'fmnist_http_requests_total{route="/v1/predict",status="200"}'
    refused = 'fmnist_http_requests_total{route="/v1/predict",status="415"}'
    assert after[ok] == before.get(ok, 0) + 1
    assert after[refused] == before.get(refused, 0) + 1
    assert after['fmnist_http_request_duration_seconds_count{route="/v1/predict"}'] >= 2
    assert after["fmnist_batch_size_count"] >= 1
    assert after["fmnist_predictions_total"] >= 1
    assert server.request("GET", "/metrics").headers["content-type"].startswith("text/plain")


def test_openapi_docs_and_model_info(server):
    docs = server.request("GET", "/docs")
    assert docs.status == 200 and b"swagger" in docs.body.lower()
    schema = server.request("GET", "/openapi.json").json()
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"]
    info = server.request("GET", "/v1/model").json()
    assert len(info["class_names"]) == 10
    assert info["limits"] == {
        "max_upload_bytes": 1024 * 1024,
        "max_files": 4,
        "max_pixels": 250_000,
        "field": "file",
        "formats": ["PNG", "JPEG", "WEBP", "GIF", "BMP"],
    }


def test_web_page_and_its_assets_are_served(server):
    page = server.request("GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    text = page.body.decode()
    assert "http://" not in text and "https://" not in text  # no CDN: works offline
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in text
        reply = server.request("GET", asset)
        assert reply.status == 200 and len(reply.body) > 100
