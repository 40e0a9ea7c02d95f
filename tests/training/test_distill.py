"""Knowledge distillation (training/distill.py): a student trained on a teacher run's outputs.

The teacher is a small seed_cnn trained for 12 epochs on the learnable dataset (seed 0);
students train on the same data with the same split."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from resumed_run import whole_and_resumed

from fmnist.augment import (
    AugmentConfig,
    apply_view,
    augment_batch,
    augment_batch_with_views,
    view_count,
)
from fmnist.errors import ConfigError, RunError
from fmnist.inference.predictor import load_predictor, softmax
from fmnist.models.saved import load_model
from fmnist.training import read_config_file, resolve_config, train
from fmnist.training.config import dump_config
from fmnist.training.distill import (
    CACHE_FOLDER,
    DistillFeature,
    distillation_loss,
    teacher_logits,
)


@pytest.fixture(scope="module")
def configure(small_model_toml: str, tmp_path_factory: pytest.TempPathFactory):
    """Configs of the small seed_cnn (seed 0 unless overridden)."""
    path = tmp_path_factory.mktemp("config") / "small.toml"
    path.write_text(small_model_toml)
    values = read_config_file(path)

    def make(settings: dict | None = None, **overrides):
        return resolve_config(file_values=values, overrides={"seed": 0, **overrides}, settings=settings)

    return make


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory: pytest.TempPathFactory, learnable_writer, configure) -> Path:
    """A small seed_cnn trained for 12 epochs on the learnable dataset (seed 0), which it
    learns well; its data is at ``trained_teacher.parent / "data"``."""
    root = tmp_path_factory.mktemp("teacher")
    data = learnable_writer(root / "data")
    train(configure(epochs=12), root / "teacher", data=data)
    return root / "teacher"


@pytest.fixture
def teacher(trained_teacher: Path, tmp_path: Path) -> Path:
    """A copy of the teacher (and of its data, at ``teacher.parent / "data"``), so the
    caches written into it stay with this test."""
    shutil.copytree(trained_teacher, tmp_path / "teacher")
    shutil.copytree(trained_teacher.parent / "data", tmp_path / "data")
    return tmp_path / "teacher"


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_model(run).module.state_dict()


@pytest.mark.parametrize(
    "augment",
    [
        AugmentConfig(rotate_degrees=0.0, shift_fraction=0.0, flip=True),
        AugmentConfig(rotate_degrees=0.0, shift_fraction=0.0, flip=True, crop_padding=2),
        AugmentConfig(rotate_degrees=0.0, shift_fraction=0.0, crop_padding=1),
        AugmentConfig(enabled=False),
    ],
)
def test_each_view_number_remakes_the_augmented_image(augment: AugmentConfig) -> None:
    images = torch.rand(64, 1, 28, 28)
    plain = augment_batch(images, augment, generator=torch.Generator().manual_seed(5))
    viewed, views = augment_batch_with_views(images, augment, generator=torch.Generator().manual_seed(5))
    assert torch.equal(plain, viewed)  # the same random draws: asking for views changes nothing
    assert int(views.min()) >= 0 and int(views.max()) < view_count(augment)
    for index in range(len(images)):
        assert torch.equal(apply_view(images[index : index + 1], augment, int(views[index])), viewed[index : index + 1])


def test_view_counts() -> None:
    assert view_count(AugmentConfig(flip=True, crop_padding=2)) == 50
    assert view_count(AugmentConfig(flip=True)) == 2
    assert view_count(AugmentConfig(enabled=False, flip=True)) == 1


def test_loss_is_the_label_loss_at_weight_zero_and_the_teacher_loss_at_one() -> None:
    logits = torch.randn(16, 10)
    labels = torch.randint(0, 10, (16,))
    targets = torch.softmax(torch.randn(16, 10), dim=1)
    hard = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert torch.allclose(distillation_loss(logits, labels, targets, temperature=3.0, weight=0.0, label_smoothing=0.1), hard)
    soft = 9.0 * (targets * (torch.log(targets) - torch.log_softmax(logits / 3.0, dim=1))).sum(1).mean()
    assert torch.allclose(distillation_loss(logits, labels, targets, temperature=3.0, weight=1.0), soft, atol=1e-6)
    # A student that matches its teachers has no soft loss left.
    matched = torch.log(targets) * 3.0
    assert distillation_loss(matched, labels, targets, temperature=3.0, weight=1.0).abs() < 1e-5


def test_weight_zero_gives_the_from_scratch_model(teacher: Path, tmp_path: Path, configure) -> None:
    data = teacher.parent / "data"
    train(configure(), tmp_path / "scratch", data=data)
    train(configure(teachers=(str(teacher),), distill_weight=0.0), tmp_path / "student", data=data)
    scratch, student = weights(tmp_path / "scratch"), weights(tmp_path / "student")
    assert all(torch.equal(scratch[name], student[name]) for name in scratch)


def test_student_learns_from_the_teacher_and_reuses_its_cached_outputs(teacher: Path, tmp_path: Path, configure) -> None:
    data = teacher.parent / "data"
    config = configure(teachers=(str(teacher),), distill_weight=1.0, distill_temperature=2.0, epochs=8)
    first = train(config, tmp_path / "student", data=data)
    cached = list((teacher / CACHE_FOLDER).glob("*.npz"))
    assert len(cached) == 1
    card = load_model(tmp_path / "student").card.extra["distilled"]
    assert card["cached"] is False and card["output_seconds"] >= 0 and card["flops_per_image"] > 0
    assert card["teachers"] == [str(Path("..") / "teacher")] and card["weight"] == 1.0 and card["temperature"] == 2.0
    assert card["train_seconds"] > 0  # the teacher's own training time, from its epoch log
    # Taught by the teacher alone (weight 1: no label in its loss), it learns the classes
    # (10% is chance), and is scored on validation images neither model trained on.
    teacher_accuracy = json.loads((teacher / "epochs.jsonl").read_text().splitlines()[-1])["val_accuracy"]
    assert teacher_accuracy >= 0.8
    assert first.history[-1]["val_accuracy"] >= 0.6

    train(config, tmp_path / "again", data=data)
    again = load_model(tmp_path / "again").card.extra["distilled"]
    assert again["cached"] is True and again["output_seconds"] == 0
    assert list((teacher / CACHE_FOLDER).glob("*.npz")) == cached
    student, repeat = weights(tmp_path / "student"), weights(tmp_path / "again")
    assert all(torch.equal(student[name], repeat[name]) for name in student)  # the cache is exact


def test_targets_are_the_teachers_probabilities_of_each_view(teacher: Path, tmp_path: Path, configure) -> None:
    from fmnist.training.data_prep import prepare_data

    config = configure(
        {"augment.flip": True}, teachers=(str(teacher), str(teacher)), distill_temperature=3.0
    )
    feature = DistillFeature(config)
    data = prepare_data(config, teacher.parent / "data")
    feature.prepare(data)
    predictor = load_predictor(teacher)
    images = data.train_images.numpy()
    assert feature.targets.shape == (len(images), view_count(config.augment), 10)
    expected = softmax(predictor.logits(images, tta_flip=False), 3.0)
    np.testing.assert_allclose(feature.targets[:, 0].numpy(), expected, atol=1e-5)  # two equal teachers: their mean
    mirrored = softmax(predictor.logits(np.ascontiguousarray(images[..., ::-1]), tta_flip=False), 3.0)
    np.testing.assert_allclose(feature.targets[:, 1].numpy(), mirrored, atol=1e-5)


def test_a_damaged_cache_is_computed_again(teacher: Path, tmp_path: Path, configure) -> None:
    data = teacher.parent / "data"
    config = configure(teachers=(str(teacher),), epochs=1)
    train(config, tmp_path / "one", data=data)
    (cache,) = (teacher / CACHE_FOLDER).glob("*.npz")
    cache.write_bytes(b"not a numpy file")
    train(config, tmp_path / "two", data=data)
    assert load_model(tmp_path / "two").card.extra["distilled"]["cached"] is False
    with np.load(cache, allow_pickle=False) as stored:
        assert stored["logits"].dtype == np.float32


def _npz_claiming(path: Path, shape: tuple[int, ...], data: bytes, *, repeat: int = 1) -> None:
    """An .npz whose logits.npy header claims float32 ``shape``, followed by ``data`` written
    ``repeat`` times, deflated (zeros: a zip bomb)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("logits.npy", "w") as member:
        member.write(header.getvalue())
        for _ in range(repeat):
            member.write(data)


def _damage(cache: Path, damage: str) -> None:
    good = cache.read_bytes()
    with np.load(cache, allow_pickle=False) as stored:
        logits = stored["logits"]
    if damage == "truncated":
        cache.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        cache.write_bytes(b"")
    elif damage == "not finite":
        logits[0, 0, 0] = np.nan
        np.savez(cache, logits=logits)
    elif damage == "float64":
        np.savez(cache, logits=logits.astype(np.float64))
    elif damage == "pickled":
        np.savez(cache, logits=np.array([{"a": 1}], dtype=object))
    elif damage == "huge shape":  # a header claiming 40 TB over a few bytes
        _npz_claiming(cache, (10**12, *logits.shape[1:]), b"\0" * 64)
    elif damage == "zip bomb":  # 100 MB of zeros in a file of about 100 kB
        _npz_claiming(cache, (2_500_000, *logits.shape[1:]), bytes(1 << 20), repeat=100)


@pytest.mark.parametrize("damage", ["truncated", "empty", "not finite", "float64", "pickled", "huge shape", "zip bomb"])
def test_a_damaged_cache_is_computed_again_in_bounded_memory(teacher: Path, configure, damage: str) -> None:
    from fmnist.training.data_prep import prepare_data

    config = configure(teachers=(str(teacher),))
    images = prepare_data(config, teacher.parent / "data").train_images
    predictor = load_predictor(teacher)
    logits, _, cached = teacher_logits(teacher, predictor, images, config.augment)
    assert not cached
    (cache,) = (teacher / CACHE_FOLDER).glob("*.npz")
    _damage(cache, damage)
    tracemalloc.start()
    try:
        again, _, cached = teacher_logits(teacher, predictor, images, config.augment)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not cached and np.array_equal(again, logits)
    assert peak < 32 * 2**20  # what the file claims is never allocated
    assert teacher_logits(teacher, predictor, images, config.augment)[2]  # the cache was written anew


def test_interrupted_student_resumes_to_the_same_weights(teacher: Path, tmp_path: Path, configure) -> None:
    config = configure(teachers=(str(teacher),))
    whole, cut = whole_and_resumed(config, tmp_path, teacher.parent / "data")
    assert all(torch.equal(whole[name], cut[name]) for name in whole)


def test_a_teacher_changed_before_a_resume_is_refused(teacher: Path, tmp_path: Path, configure) -> None:
    from fmnist.training import resume
    from fmnist.training.events import StopTraining

    data = teacher.parent / "data"

    def stop_after_first(end) -> None:
        if end.record["epoch"] == 1:
            raise StopTraining("test")

    student = tmp_path / "student"
    train(configure(teachers=(str(teacher),), epochs=2), student, data=data, on_epoch=stop_after_first)
    recorded = json.loads((student / "run.json").read_text())["teachers"]
    assert [entry["run"] for entry in recorded] == [str(teacher)] and len(recorded[0]["weights"]) == 64
    # The teacher trained again (same data and split, other weights) while the student waited.
    kept = tmp_path / "kept.safetensors"
    shutil.copy(teacher / "model.safetensors", kept)
    train(configure(epochs=1), tmp_path / "retrained", data=data)
    shutil.copy(tmp_path / "retrained" / "model.safetensors", teacher / "model.safetensors")
    with pytest.raises(RunError, match=r"teacher .*teacher is not the model this run started with"):
        resume(student, data=data)
    shutil.copy(kept, teacher / "model.safetensors")  # put back: the resume goes on
    assert [record["epoch"] for record in resume(student, data=data).history] == [1, 2]


def test_a_teacher_with_another_split_is_refused(teacher: Path, tmp_path: Path, configure) -> None:
    config = configure(teachers=(str(teacher),), seed=1)
    with pytest.raises(ConfigError, match="split the data otherwise than this run .*split_seed 0 vs 1"):
        train(config, tmp_path / "student", data=teacher.parent / "data")
    assert not (tmp_path / "student" / "config.json").exists()
    # The same student seed, with the teacher's split: accepted.
    shared = configure(teachers=(str(teacher),), seed=1, split_seed=0, epochs=1)
    train(shared, tmp_path / "shared", data=teacher.parent / "data")


def test_split_seed_decides_the_split_alone(teacher: Path, tmp_path: Path, configure) -> None:
    from fmnist.training.data_prep import prepare_data

    data = teacher.parent / "data"
    own = prepare_data(configure(seed=0), data)
    other_seed = prepare_data(configure(seed=3, split_seed=0), data)
    moved = prepare_data(configure(seed=0, split_seed=3), data)
    assert own.description["split_digest"] == other_seed.description["split_digest"]
    assert own.description["split_digest"] != moved.description["split_digest"]


def test_bad_teachers_are_refused_before_training(teacher: Path, tmp_path: Path, configure) -> None:
    data = teacher.parent / "data"
    with pytest.raises(RunError, match="not an fmnist run folder"):
        train(configure(teachers=(str(tmp_path),)), tmp_path / "a", data=data)
    (teacher / "model.safetensors").rename(teacher / "kept.safetensors")
    with pytest.raises(RunError, match="no model.safetensors"):
        train(configure(teachers=(str(teacher),)), tmp_path / "b", data=data)
    for values, message in (
        ({"distill_weight": 1.5}, "distill_weight must be in"),
        ({"distill_temperature": 0.0}, "distill_temperature must be in"),
        ({"distill_temperature": 1e-37}, "distill_temperature must be in"),  # logits / T would overflow
    ):
        with pytest.raises(ConfigError, match=message):
            configure(teachers=(str(teacher),), **values).validate()
    assert not any((tmp_path / name).exists() for name in ("a", "b"))


def test_a_teacher_with_damaged_run_files_is_refused(teacher: Path, tmp_path: Path, configure) -> None:
    data = teacher.parent / "data"
    teacher = Path(shutil.copytree(teacher, tmp_path / "damaged-teacher"))  # the shared teacher stays intact
    run_json, config_json = teacher / "run.json", teacher / "config.json"
    document, values = json.loads(run_json.read_text()), json.loads(config_json.read_text())
    for key in ("content_digest", "split_digest"):
        run_json.write_text(json.dumps({**document, "data": {**document["data"], key: 7}}))
        with pytest.raises(RunError, match=rf"run.json: data.{key} is not a digest \(int\)"):
            train(configure(teachers=(str(teacher),)), tmp_path / key, data=data)
    run_json.write_text(json.dumps(document))
    config_json.write_text(json.dumps({**values, "base_run": 5}))
    with pytest.raises(RunError, match=r"config.json: base_run is not a folder name \(int\)"):
        train(configure(teachers=(str(teacher),)), tmp_path / "base", data=data)


def test_relative_teachers_of_a_config_file_are_stored_absolute(
    teacher: Path, small_model_toml: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fmnist.cli import build_parser
    from fmnist.cli.train import config_from_args

    monkeypatch.chdir(teacher.parent)
    (teacher.parent / "student.toml").write_text(f'teachers = ["{teacher.name}"]\n{small_model_toml}')
    args = build_parser().parse_args(["train", "--config", "student.toml"])
    # As --teacher is: a resumed run must find the same teacher from any working directory.
    assert config_from_args(args).teachers == (str(teacher.resolve()),)


def test_teachers_travel_through_config_files(teacher: Path, tmp_path: Path, configure) -> None:
    config = configure(teachers=(str(teacher),), distill_weight=0.5)
    dumped = tmp_path / "config.json"
    dumped.write_text(dump_config(config))
    assert json.loads(dumped.read_text())["teachers"] == [str(teacher)]
    again = resolve_config(file_values=read_config_file(dumped))
    assert again.teachers == (str(teacher),) and dataclasses.asdict(again) == dataclasses.asdict(config)


@pytest.mark.slow  # CLI subprocesses: ~6-16 s; CI runs it
def test_cli_distils_and_refuses_in_one_line(teacher: Path, run_fmnist, small_model_toml: str) -> None:
    data = str(teacher.parent / "data")
    small = teacher.parent / "small.toml"
    small.write_text(small_model_toml)
    done = run_fmnist(
        "train", "--config", str(small), "--data", data, "--teacher", str(teacher), "--distill-weight", "0.5",
        "--epochs", "1", "--out", "student", "--quiet",
    )
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout
    refused = run_fmnist("train", "--config", str(small), "--data", data, "--teacher", "nowhere", "--out", "x")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "not an fmnist run folder" in refused.stderr
    mismatched = run_fmnist("train", "--config", str(small), "--data", data, "--teacher", str(teacher), "--seed", "2")
    assert mismatched.returncode == 2 and "split the data otherwise" in mismatched.stderr
    assert "--set split_seed" in mismatched.stderr
