"""`fmnist export`: self-contained ONNX (uint8 images in, probabilities and logits out, the
contract in its metadata) checked against PyTorch in real ONNX Runtime; TorchScript; int8
with its measured accuracy drop; files of the older float-input format refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import fmnist.export
from fmnist.data import load
from fmnist.errors import RunError
from fmnist.export import export_model
from fmnist.inference import load_predictor
from fmnist.models import ModelCard, create_model, list_models, save_model

IMAGENET_BACKBONES = {"mobilenet_v2", "resnet18"}  # upsample to ImageNet sizes: 1-2 min per export here
SLOW_TO_EXPORT = {"preact_resnet"}  # ~1 min for both formats on a busy 2-core machine


def test_onnx_matches_pytorch_on_1000_test_images(real_run: Path, real_fmnist_dir: Path, tmp_path: Path):
    out = tmp_path / "model.onnx"
    result = export_model(real_run, out, fmt="onnx", data=real_fmnist_dir)
    assert result.max_probability_difference < 1e-4 and result.check_source == "training"
    images = load("test", real_fmnist_dir, download=False, progress=False).images[:1000]
    torch_probabilities = load_predictor(real_run).probabilities(images)
    onnx_probabilities = load_predictor(out, backend="onnxruntime").probabilities(images)
    assert np.abs(onnx_probabilities - torch_probabilities).max() < 1e-4
    assert (onnx_probabilities.argmax(1) == torch_probabilities.argmax(1)).all()


def test_onnx_takes_uint8_images_of_either_rank_and_carries_the_contract(tiny_run: Path, tmp_path: Path):
    out = tmp_path / "model.onnx"
    export_model(tiny_run, out, fmt="onnx", data=tiny_run.parent / "data")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    assert (model_input.name, model_input.type) == ("images", "tensor(uint8)")
    assert [(o.name, o.shape[1]) for o in session.get_outputs()] == [("probabilities", 10), ("logits", 10)]
    images = np.random.default_rng(0).integers(0, 256, (37, 28, 28), dtype=np.uint8)
    for batch in (1, 37):
        probabilities, logits = session.run(None, {"images": images[:batch]})
        assert probabilities.shape == logits.shape == (batch, 10)
        again, _ = session.run(None, {"images": images[:batch, None]})  # (N, 1, 28, 28) too
        np.testing.assert_array_equal(again, probabilities)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-6)
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["fmnist.class_names"])[0] == "T-shirt/top"
    assert float(metadata["fmnist.temperature"]) > 0 and metadata["fmnist.tta_flip"] in ("true", "false")
    assert metadata["fmnist.export_format"] == "2"
    contract = json.loads(metadata["fmnist.preprocessing"])
    assert (contract["image_size"], contract["scale"], contract["background"]) == (28, 1 / 255, "black")
    assert "softmax(logits / temperature)" in contract["description"] and "uint8" in contract["description"]
    assert json.loads(metadata["fmnist.model"])["name"] == "seed_cnn"
    assert (tmp_path / "prepare_photo.py").read_text().startswith("# fmnist photo preparation reference")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_old_float_input_exports_are_refused_with_the_fix(tiny_run: Path, tmp_path: Path, run_fmnist):
    """A file of the first export format (float (N, 1, 28, 28) in, logits out), as older
    versions wrote it: refused in one line naming the fix, never misread."""
    import onnx

    from fmnist.models import load_model

    old = tmp_path / "old.onnx"
    loaded = load_model(tiny_run)
    torch.onnx.export(loaded.module, (torch.zeros(2, 1, 28, 28),), str(old), input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    model = onnx.load(str(old))
    onnx.helper.set_model_props(model, {"fmnist.class_names": json.dumps(loaded.card.class_names), "fmnist.temperature": "1.0"})
    onnx.save(model, str(old))
    with pytest.raises(RunError, match="exported by an older fmnist .*re-export it with `fmnist export` of this version"):
        load_predictor(old, backend="onnxruntime")
    run_fmnist("evaluate", str(old), "--data", str(tiny_run.parent / "data")).error_line("exported by an older fmnist")


def test_evaluate_an_exported_file_like_its_run(tiny_run: Path, tmp_path: Path, run_fmnist):
    from fmnist.evaluation import evaluate_run
    from fmnist.evaluation.evaluate import evaluate_export

    data = tiny_run.parent / "data"
    run_metrics = evaluate_run(tiny_run, data, write=False)[1]
    onnx_file = export_model(tiny_run, tmp_path / "model.onnx", fmt="onnx", data=data).path
    script_file = export_model(tiny_run, tmp_path / "model.pt", fmt="torchscript", data=data).path
    for path in (onnx_file, script_file):
        metrics = evaluate_export(path, data)[1]
        assert metrics["test_accuracy"] == run_metrics["test_accuracy"] and metrics["confusion_matrix"] == run_metrics["confusion_matrix"]
        assert metrics["calibration"]["ece_after"] == pytest.approx(run_metrics["calibration"]["ece_after"], abs=1e-5)
    done = run_fmnist("evaluate", str(onnx_file), "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert f"test accuracy {run_metrics['test_accuracy']:.2%}" in done.stdout and "report:" not in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.pt", "prepare_photo.py"]  # nothing written


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.skip(reason="ImageNet backbone: 1-2 minutes per export on 2 cores"))
        if name in IMAGENET_BACKBONES
        else pytest.param(name, marks=pytest.mark.slow)
        if name in SLOW_TO_EXPORT
        else name
        for name in list_models()
    ],
)
def test_every_registered_model_exports_to_both_formats(name: str, tmp_path: Path):
    torch.manual_seed(0)
    module = create_model(name).eval()
    path = tmp_path / "model.safetensors"
    # A low temperature spreads an untrained model's near-equal probabilities, so the parity
    # check is not met trivially by ~0.1 everywhere.
    save_model(path, module, ModelCard(model=name, temperature=0.05, tta_flip=True))
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        result = export_model(path, tmp_path / f"model{suffix}", fmt=fmt)
        assert result.max_probability_difference < 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_is_self_contained_and_carries_the_metadata(tiny_run: Path, tmp_path: Path):
    out = tmp_path / "model.pt"
    result = export_model(tiny_run, out, fmt="torchscript", data=tiny_run.parent / "data")
    assert result.format == "torchscript" and result.max_probability_difference < 1e-6
    extra = {"fmnist.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    metadata = json.loads(extra["fmnist.json"])
    assert metadata["fmnist.export_format"] == "2" and len(json.loads(metadata["fmnist.class_names"])) == 10
    images = load("test", tiny_run.parent / "data", download=False, progress=False).images
    with torch.inference_mode():
        probabilities, logits = scripted(torch.from_numpy(images))  # uint8 (N, 28, 28) as stored
        again, _ = scripted(torch.from_numpy(images[:, None]))
    expected = load_predictor(tiny_run)
    assert np.abs(probabilities.numpy() - expected.probabilities(images)).max() < 1e-5
    assert np.abs(logits.numpy() - expected.logits(images)).max() < 1e-4
    np.testing.assert_array_equal(again.numpy(), probabilities.numpy())


def test_int8_reports_a_measured_accuracy_drop_and_works_in_onnxruntime(tiny_run: Path, tmp_path: Path, capsys):
    from fmnist.cli import main

    data = tiny_run.parent / "data"
    out = tmp_path / "model.int8.onnx"
    assert main(["export", str(tiny_run), "--format", "onnx", "--int8", "--out", str(out), "--data", str(data)]) == 0
    printed = capsys.readouterr().out
    assert "int8 accuracy drop" in printed and "int8 speed-up" in printed and "on 100 test images" in printed
    test = load("test", data, download=False, progress=False)
    int8_accuracy = (load_predictor(out, backend="onnxruntime").probabilities(test.images).argmax(1) == test.labels).mean()
    float_accuracy = (load_predictor(tiny_run).probabilities(test.images).argmax(1) == test.labels).mean()
    drop = float(printed.split("int8 accuracy drop")[1].split()[0])
    assert drop == pytest.approx(100 * (float_accuracy - int8_accuracy), abs=0.01)
    assert out.stat().st_size < 0.6 * export_model(tiny_run, tmp_path / "f.onnx", fmt="onnx", data=data).path.stat().st_size


@pytest.mark.slow
def test_int8_costs_at_most_half_a_point_on_the_real_model(
    real_run: Path, real_fmnist_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level("WARNING"):
        result = export_model(real_run, tmp_path / "model.int8.onnx", fmt="onnx", int8=True, data=real_fmnist_dir)
    assert result.int8 is not None and result.int8.test_images == 10_000
    assert result.int8.accuracy_drop_points <= 0.5, result.int8
    # fast_cnn's BatchNorm after a max-pool is quantized per channel, without ONNX
    # Runtime's "Axis 1 is out-of-range" fallback to one scale for all channels.
    assert not [r for r in caplog.records if "out-of-range" in r.getMessage()]


def test_a_failed_parity_check_writes_nothing(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(fmnist.export, "PARITY_TOLERANCE", 0.0)  # no export can meet it
    out = tmp_path / "model.onnx"
    with pytest.raises(RunError, match="exported model disagrees with PyTorch"):
        export_model(tiny_run, out, fmt="onnx", data=tiny_run.parent / "data")
    assert list(tmp_path.iterdir()) == []


def test_refusals_are_one_clean_line(run_fmnist, tiny_run: Path, tmp_path: Path, capsys):
    from fmnist.cli import main

    run, out = str(tiny_run), str(tmp_path / "model.onnx")
    cases = [
        (["export", run, "--format", "torchscript", "--int8", "--out", out], "--int8 works with --format onnx only"),
        (["export", run, "--format", "onnx", "--out", str(tmp_path)], "is a folder"),
        (["export", str(tmp_path / "nowhere"), "--format", "onnx", "--out", out], "no such run folder or model file"),
        (["export", run, "--format", "tflite", "--out", out], "invalid choice"),
        (["export", run, "--out", out], "the following arguments are required: --format"),
        (["export", run, "--format", "onnx", "--int8", "--out", out, "--data", str(tmp_path / "none")], "none"),
    ]
    for arguments, fragment in cases:
        capsys.readouterr()
        try:
            status = main(arguments)
        except SystemExit as exit_:
            status = exit_.code
        lines = capsys.readouterr().err.splitlines()
        assert status == 2 and len(lines) == 1 and lines[0].startswith("fmnist: error: "), (arguments, lines)
        assert fragment in lines[0], (fragment, lines[0])
    assert not (tmp_path / "model.onnx").exists()
    run_fmnist("export", str(tmp_path / "nowhere"), "--format", "onnx", "--out", out).error_line("no such run folder")


def test_adaptive_pools_become_plain_pools_with_the_same_windows():
    from torch import nn

    from fmnist.export import exportable_module

    for pool in (nn.AdaptiveMaxPool2d(3), nn.AdaptiveAvgPool2d((3, 1)), nn.AdaptiveMaxPool2d((None, 7))):
        module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), pool)
        sample = torch.randn(5, 1, 7, 7)
        exported = exportable_module(module, sample)
        assert not any(isinstance(child, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)) for child in exported.modules())
        with torch.no_grad():
            torch.testing.assert_close(exported(sample), module(sample), rtol=0, atol=1e-6)  # avg: summation order
    uneven = nn.Sequential(nn.AdaptiveMaxPool2d(4))  # 7 -> 4: windows of 2 and 3 pixels
    with pytest.raises(RunError, match=r"adaptive pooling \(7, 7\) -> \(4, 4\) has uneven windows"):
        exportable_module(uneven, torch.randn(1, 1, 7, 7))
