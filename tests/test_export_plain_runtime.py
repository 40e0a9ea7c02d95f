"""Exports as a user without fmnist meets them: plain ONNX Runtime (or plain torch) and
numpy in a subprocess where importing fmnist fails, compared with fmnist's own predictor
on 1,000 real Fashion-MNIST test images; the prepare_photo.py written next to the model
against fmnist's photo preparation; the README's photo example against `fmnist predict`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from recalibrated import recalibrated

from fmnist.data import load
from fmnist.export import export_model
from fmnist.inference import load_predictor, prepare_photo
from fmnist.models import load_model

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "onnx_photo.py"
NO_FMNIST = "import sys\nsys.modules['fmnist'] = None  # any import of fmnist now fails\n"
REAL_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
PARITY = 1e-5  # max |probability difference|, plain runtime against fmnist


def run_without_fmnist(code: str, *args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", NO_FMNIST + code, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def calibrated_real(real_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """real_run's model with a temperature of 1.7 and flip TTA on, so both must be inside the graph."""
    return recalibrated(real_run, tmp_path_factory.mktemp("calibrated-real"), temperature=1.7, tta_flip=True)


@pytest.fixture(scope="module")
def test_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, Path]:
    """The first 1,000 real test images and labels, and the images saved as .npy."""
    if not all((REAL_FMNIST_DIR / name).is_file() for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")):
        pytest.skip(f"the real dataset is not in {REAL_FMNIST_DIR}")
    test = load("test", REAL_FMNIST_DIR, download=False, progress=False)
    path = tmp_path_factory.mktemp("images") / "images.npy"
    np.save(path, test.images[:1000])
    return test.images[:1000], test.labels[:1000], path


PLAIN_ONNX = """
import numpy as np, onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
images = np.load(sys.argv[2])
probabilities, logits = session.run(["probabilities", "logits"], {"images": images})
channel, _ = session.run(["probabilities", "logits"], {"images": images[:, None]})  # (N, 1, 28, 28)
np.savez(sys.argv[3], probabilities=probabilities, logits=logits, channel=channel)
"""


PLAIN_TORCHSCRIPT = """
import numpy as np, torch
model = torch.jit.load(sys.argv[1])
images = torch.from_numpy(np.load(sys.argv[2]))
with torch.inference_mode():
    probabilities, logits = model(images)
    channel, _ = model(images[:, None])  # (N, 1, 28, 28)
np.savez(sys.argv[3], probabilities=probabilities.numpy(), logits=logits.numpy(), channel=channel.numpy())
"""


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_plain_runtime_matches_fmnist_on_1000_test_images(fmt: str, calibrated_real: Path, test_images, tmp_path: Path):
    images, _, images_file = test_images
    model = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    export_model(calibrated_real, model, fmt=fmt)
    script = PLAIN_ONNX if fmt == "onnx" else PLAIN_TORCHSCRIPT
    run_without_fmnist(script, str(model), str(images_file), str(tmp_path / "out.npz"), cwd=tmp_path)
    plain = np.load(tmp_path / "out.npz")
    predictor = load_predictor(calibrated_real)  # what `fmnist predict` uses
    assert predictor.temperature == 1.7 and predictor.tta_flip
    assert np.abs(plain["probabilities"] - predictor.probabilities(images)).max() < PARITY
    assert np.abs(plain["logits"] - predictor.logits(images)).max() < 1e-4  # logits span about +-20
    np.testing.assert_array_equal(plain["channel"], plain["probabilities"])  # (N, 1, 28, 28) input
    # The same file through fmnist's own backend for it.
    exported = load_predictor(model, backend="onnxruntime" if fmt == "onnx" else "torch")
    assert np.abs(exported.probabilities(images) - plain["probabilities"]).max() < PARITY


def test_plain_onnxruntime_runs_the_int8_export_as_fmnist_does(tiny_run: Path, test_images, tmp_path: Path):
    """int8: the plain runtime and fmnist's backend agree to 1e-5 on the quantized file (its
    distance from the float model is what the export reports, as max |dprob| and accuracy)."""
    images, _, images_file = test_images
    model = tmp_path / "model.int8.onnx"
    result = export_model(tiny_run, model, fmt="onnx", int8=True, data=tiny_run.parent / "data")
    assert result.int8 is not None and 0 <= result.int8.max_probability_difference < 1
    run_without_fmnist(PLAIN_ONNX, str(model), str(images_file), str(tmp_path / "out.npz"), cwd=tmp_path)
    plain = np.load(tmp_path / "out.npz")
    fmnist_int8 = load_predictor(model, backend="onnxruntime").probabilities(images)
    assert np.abs(plain["probabilities"] - fmnist_int8).max() < PARITY
    np.testing.assert_allclose(plain["probabilities"].sum(axis=1), 1, atol=1e-5)


def garment_photo(image: np.ndarray, path: Path, *, scale: int = 9, canvas: tuple[int, int] = (330, 300),
                  background: tuple[int, ...] = (255, 255, 255), mode: str = "RGB") -> Path:
    """A product-style photo of a 28x28 dataset image: dark garment on a plain background,
    upscaled, off-centre on a larger canvas."""
    dark = Image.fromarray(255 - image).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC).convert(mode)
    photo = Image.new(mode, canvas, background)
    mask = None
    if mode == "RGBA":  # a cut-out: the garment opaque, the rest transparent
        mask = Image.fromarray(np.where(np.asarray(dark.convert("L")) < 250, 255, 0).astype(np.uint8))
    photo.paste(dark, (canvas[0] - 28 * scale - 20, 15), mask)
    photo.save(path)
    return path


PREPARE = """
import numpy as np
sys.path.insert(0, sys.argv[1])
from prepare_photo import prepare_photo
np.save(sys.argv[3], np.stack([prepare_photo(path) for path in sys.argv[2].split(",")]))
"""


def test_prepare_photo_next_to_the_export_matches_fmnist(tiny_run: Path, tmp_path: Path):
    """The reference file, run without fmnist, gives fmnist's own prepared images exactly
    (tolerance 0 grey levels) on generated photos of every kind the steps treat apart."""
    export = tmp_path / "export"
    export.mkdir()
    result = export_model(tiny_run, export / "model.onnx", fmt="onnx", data=tiny_run.parent / "data")
    assert "prepare_photo.py" in result.summary()["photo preparation"]
    rng = np.random.default_rng(0)
    garment = np.zeros((28, 28), np.uint8)
    garment[4:25, 8:20] = rng.integers(120, 255, (21, 12))
    photos = [
        garment_photo(garment, tmp_path / "white.png"),
        garment_photo(garment, tmp_path / "grey.jpg", background=(226, 222, 218)),
        garment_photo(garment, tmp_path / "large.jpg", scale=80, canvas=(2600, 2300)),  # reduced while decoding
        garment_photo(garment, tmp_path / "cutout.png", background=(0, 0, 0, 0), mode="RGBA"),
        garment_photo(garment, tmp_path / "dark.png", background=(20, 20, 30)),
    ]
    Image.fromarray(garment).save(tmp_path / "dataset-style.png")  # passes through unchanged
    photos.append(tmp_path / "dataset-style.png")
    run_without_fmnist(PREPARE, str(export), ",".join(map(str, photos)), str(tmp_path / "prepared.npy"), cwd=tmp_path)
    plain = np.load(tmp_path / "prepared.npy")
    expected = np.stack([prepare_photo(path).image for path in photos])
    np.testing.assert_array_equal(plain, expected)
    assert plain[-1].tolist() == garment.tolist()
    # A file of that name that fmnist did not write is left alone.
    (export / "prepare_photo.py").write_text("# my own\n")
    result = export_model(tiny_run, export / "again.onnx", fmt="onnx", data=tiny_run.parent / "data")
    assert "left as it is" in result.summary()["photo preparation"]
    assert (export / "prepare_photo.py").read_text() == "# my own\n"


def test_the_readme_photo_example_answers_like_fmnist_predict(real_run: Path, test_images, tmp_path: Path, run_fmnist):
    images, labels, _ = test_images
    export = tmp_path / "export"
    export.mkdir()
    export_model(real_run, export / "model.onnx", fmt="onnx")
    names = load_model(real_run).card.class_names
    predictor = load_predictor(real_run)
    right = np.flatnonzero(predictor.probabilities(images).argmax(1) == labels)
    chosen = [int(right[labels[right] == label][0]) for label in (9, 1, 8)]  # an ankle boot, trousers, a bag
    photos = [garment_photo(images[index], tmp_path / f"photo-{index}.jpg") for index in chosen]
    done = run_fmnist("predict", str(real_run), *map(str, photos), "--format", "json")
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    code = f"import runpy\nsys.argv = [{str(EXAMPLE)!r}, *sys.argv[1:]]\nrunpy.run_path({str(EXAMPLE)!r}, run_name='__main__')\n"
    for index, photo, answer in zip(chosen, photos, answers):
        label, probability = run_without_fmnist(code, str(export / "model.onnx"), str(photo), cwd=tmp_path).strip().rsplit(" ", 1)
        assert label == answer["label"] == names[labels[index]], (index, label, answer)
        assert float(probability) == pytest.approx(answer["probability"], abs=1e-4)


def test_the_readme_shows_the_tested_example():
    readme = (ROOT / "README.md").read_text()
    body = EXAMPLE.read_text().split('"""', 2)[2].strip()
    assert body in readme, "README's plain-onnxruntime photo example must be examples/onnx_photo.py's code"
