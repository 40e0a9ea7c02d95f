"""The web page at / in real headless Chromium against a real `fmnist serve` process."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from live_server import LiveServer, png

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]

# Conditions are written as functions, not bare expressions: Playwright polls an expression
# with eval() inside the page, which the page's Content-Security-Policy (script-src 'self')
# forbids, so a condition not already true at its first check failed on a slow machine.
MODEL_INFO_SHOWN = "() => document.getElementById('model-info').textContent.startsWith('Model ')"

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt install chromium)")


@pytest.fixture(scope="module")
def server(real_run, tmp_path_factory):
    live = LiveServer(real_run, log=tmp_path_factory.mktemp("e2e-server") / "server.log")
    yield live
    assert live.stop() == 0, live.log.read_text()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """The page, loaded; fails the test on any JavaScript error or request off the server."""
    page = browser.new_page()
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # A refused upload logs "Failed to load resource ... status of 4xx": that one is expected.
    page.on(
        "console",
        lambda message: message.type == "error" and "status of 4" not in message.text
        and problems.append(f"console: {message.text}"),
    )
    page.on(
        "request",
        lambda request: request.url.startswith("http") and not request.url.startswith(server.url)
        and problems.append(f"off-server request: {request.url}"),
    )
    page.goto(server.url + "/")
    page.wait_for_function(MODEL_INFO_SHOWN)
    yield page
    page.close()
    assert not problems, problems


@pytest.fixture
def confident_examples(real_run, real_fmnist_dir) -> list[tuple[np.ndarray, str]]:
    """Three test images of different classes that the run classifies correctly by a wide
    margin (chosen by running the model here, not by hand): for each class, the correct
    prediction with the largest lead over the runner-up, kept if that lead is over 0.5.
    (A margin, not a probability: label smoothing caps the run's top probability near 0.9.)"""
    from fmnist.data import load_split
    from fmnist.inference.predictor import load_predictor

    images, labels = load_split("test", real_fmnist_dir)
    predictor = load_predictor(real_run)
    probabilities = predictor.probabilities(images[:300])
    ranked = np.sort(probabilities, axis=1)
    margins = np.where(probabilities.argmax(1) == labels[:300], ranked[:, -1] - ranked[:, -2], 0.0)
    best_by_class = {}
    for index in np.flatnonzero(margins > 0.5):
        label = int(labels[index])
        if label not in best_by_class or margins[index] > margins[best_by_class[label]]:
            best_by_class[label] = index
    chosen = sorted(best_by_class.values(), key=lambda index: -margins[index])[:3]
    assert len(chosen) == 3, "the real run should be sure of three classes among 300 test images"
    return [(images[index], predictor.class_names[int(labels[index])]) for index in chosen]


def wait_for_answer(page) -> str:
    page.wait_for_selector("#result:not([hidden])")
    page.wait_for_function("() => document.getElementById('status').textContent === ''")
    return page.inner_text("#result-label")


def test_uploaded_images_get_the_right_label(page, confident_examples, tmp_path):
    for number, (image, class_name) in enumerate(confident_examples):
        path = tmp_path / f"example{number}.png"
        path.write_bytes(png(image))
        page.set_input_files("#file-input", str(path))
        page.wait_for_function(
            "name => document.getElementById('result-label').textContent === name", arg=class_name, timeout=20_000
        )
        assert wait_for_answer(page) == class_name
        assert page.locator("#bars li").count() == 5
        assert page.locator("#bars li").first.locator(".name").inner_text() == class_name
        preview = page.get_attribute("#preview", "src")
        assert preview.startswith("data:image/png;base64,")
        assert base64.b64decode(preview.split(",", 1)[1]) == png(image)  # the 28x28 the model saw: unchanged


def test_drag_and_drop(page, confident_examples):
    image, class_name = confident_examples[0]
    transfer = page.evaluate_handle(
        """encoded => {
            const bytes = Uint8Array.from(atob(encoded), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
            return transfer;
        }""",
        base64.b64encode(png(image)).decode(),
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    assert wait_for_answer(page) == class_name


def test_drawing_gets_a_prediction(page):
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + 80, box["y"] + 40)
    page.mouse.down()
    for x, y in [(200, 40), (200, 240), (80, 240), (80, 40), (120, 120), (160, 200), (200, 120)]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
    page.mouse.up()
    page.click("#predict-drawing")
    label = wait_for_answer(page)
    class_names = page.evaluate("fetch('/v1/model').then(r => r.json()).then(info => info.class_names)")
    assert label in class_names
    assert page.locator("#bars li").count() == 5
    assert page.get_attribute("#preview", "src").startswith("data:image/png;base64,")


def test_a_refused_upload_shows_the_error_and_clears_the_previous_answer(page, confident_examples, tmp_path):
    """Before: the previous image's prediction stayed on the page under the error."""
    image, class_name = confident_examples[0]
    good = tmp_path / "good.png"
    good.write_bytes(png(image))
    page.set_input_files("#file-input", str(good))
    assert wait_for_answer(page) == class_name
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#error:not([hidden])")
    assert "not a supported image" in page.inner_text("#error")
    assert page.locator("#result").is_hidden()
    assert page.locator("#bars li").count() == 0 and page.get_attribute("#preview", "src") is None


def test_the_page_works_under_its_content_security_policy(page, server):
    """The server sends a CSP without 'unsafe-inline': the page must need no inline code.
    (A blocked script or style would show up as a console error, failing the fixture.)"""
    policy = server.request("GET", "/").headers["content-security-policy"]
    assert "unsafe-inline" not in policy
    assert page.evaluate("document.querySelectorAll('script:not([src]), style, [style]').length") == 0


@pytest.fixture(scope="module")
def token_server(real_run, tmp_path_factory):
    live = LiveServer(real_run, log=tmp_path_factory.mktemp("e2e-token") / "server.log", env={"FMNIST_TOKEN": "page-token"})
    yield live
    assert live.stop() == 0, live.log.read_text()


def test_a_token_in_the_address_fragment_is_used_and_removed(browser, token_server, confident_examples, tmp_path):
    image, class_name = confident_examples[0]
    path = tmp_path / "good.png"
    path.write_bytes(png(image))
    page = browser.new_page()
    try:
        page.goto(token_server.url + "/#token=page-token")
        page.wait_for_function(MODEL_INFO_SHOWN)
        assert "token" not in page.url
        page.set_input_files("#file-input", str(path))
        assert wait_for_answer(page) == class_name
    finally:
        page.close()
