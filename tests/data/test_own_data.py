"""The user's own data: image folders, .npz files and classes.txt next to IDX/CSV files,
read from real files generated here (Pillow, numpy), and the one-line refusals of bad ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from own_data_files import SHAPES, write_image_folder, write_npz
from PIL import Image

from fmnist.data import load, locate_data
from fmnist.data.classes import CLASS_NAMES
from fmnist.data.official import content_digest
from fmnist.errors import DataError


def test_image_folder_loads_with_sorted_class_names_and_interleaved_order(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "shapes")
    train = load("train", root)
    assert train.class_names == SHAPES
    assert train.images.shape == (60, 28, 28) and train.images.dtype == np.uint8
    assert train.class_counts == [20, 20, 20]
    # Interleaved: the first images hold every class, so a --subset run sees them all.
    assert train.labels[:6].tolist() == [0, 1, 2, 0, 1, 2]
    # Dataset-style 28x28 images are taken as they are.
    first = np.asarray(Image.open(root / "train" / "circle" / "000.png"))
    assert np.array_equal(train.images[0], first)
    test = load("test", root)
    assert test.class_counts == [5, 5, 5]
    described = train.describe()
    assert described["format"] == "images" and described["class_names"] == list(SHAPES)
    assert described["content_digest"] == content_digest(train.images, train.labels)


def test_image_folder_photos_are_prepared_like_predict(tmp_path: Path) -> None:
    """A photo (dark garment on a light background, any size) becomes what `fmnist predict`
    would make of it: the same 28x28 array."""
    from fmnist.inference.photo import prepare_photo

    root = tmp_path / "photos"
    for split in ("train", "test"):
        for name in ("dark", "light"):
            (root / split / name).mkdir(parents=True)
            photo = np.full((60, 40, 3), 235, dtype=np.uint8)
            photo[10:50, 8:32] = 30 if name == "dark" else 150
            Image.fromarray(photo).save(root / split / name / "a.jpg", quality=95)
    train = load("train", root)
    assert np.array_equal(train.images[0], prepare_photo(root / "train" / "dark" / "a.jpg").image)
    assert train.images[0].max() > 150 and train.images[0][0, 0] == 0  # negated: light garment on black


def test_classes_txt_names_the_classes_of_idx_data(tmp_path: Path, data_files) -> None:
    folder = tmp_path / "digits"
    data = data_files.dataset(data_files.tiny(30).images, np.arange(30) % 3)
    data_files.idx_split(folder, data, split="train")
    data_files.idx_split(folder, data, split="test")
    (folder / "classes.txt").write_text("zero\none\ntwo\n\n")
    loaded = load("train", folder)
    assert loaded.class_names == ("zero", "one", "two") and loaded.class_counts == [10, 10, 10]
    assert loaded.describe()["classes_file"] == str(folder / "classes.txt")
    # Without it, IDX data is Fashion-MNIST's.
    (folder / "classes.txt").unlink()
    assert load("train", folder).class_names == CLASS_NAMES


def test_npz_loads_with_numbered_or_listed_classes(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "data.npz", classes=4)
    train, test = load("train", path), load("test", path)
    assert train.class_names == ("0", "1", "2", "3") and test.class_names == train.class_names
    assert train.images.shape == (40, 28, 28) and train.labels.dtype == np.int64
    assert train.describe()["format"] == "npz"
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\n")
    assert load("test", path).class_names == ("a", "b", "c", "d")


def test_npz_accepts_a_channel_axis_and_column_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = write_npz(
        tmp_path / "keras.npz",
        x_train=rng.integers(0, 256, size=(30, 28, 28, 1), dtype=np.uint8),
        y_train=(np.arange(30) % 3).reshape(30, 1),
        x_test=None,
        y_test=None,
    )
    source = locate_data(path)
    assert list(source.splits) == ["train"]
    assert load("train", path).images.shape == (30, 28, 28)


def test_npz_and_image_folders_bypass_the_cache(tmp_path: Path, isolated_fmnist_cache: Path) -> None:
    load("train", write_npz(tmp_path / "data.npz"))
    load("train", write_image_folder(tmp_path / "shapes", per_class={"train": 2}))
    assert not (isolated_fmnist_cache / "arrays").exists()


def _empty_class(root: Path) -> str:
    write_image_folder(root)
    (root / "train" / "empty").mkdir()
    return "empty: an empty class folder"


def _non_image(root: Path) -> str:
    write_image_folder(root)
    (root / "train" / "cross" / "notes.txt").write_text("hello")
    return "notes.txt: not an image file"


def _corrupt_image(root: Path) -> str:
    write_image_folder(root)
    (root / "train" / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return "broken.png"


def _mixed_sizes(root: Path) -> str:
    write_image_folder(root)
    Image.new("L", (56, 56), 255).save(root / "train" / "circle" / "big.png")
    return "mixed image sizes"


def _test_class_not_in_train(root: Path) -> str:
    write_image_folder(root)
    (root / "test" / "triangle").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(root / "test" / "triangle" / "t.png")
    return "class 'triangle' is not among the training classes"


def _one_class(root: Path) -> str:
    write_image_folder(root, classes=("only",))
    return "1 classes; fmnist trains on 2 to 100"


def _too_many_classes(root: Path) -> str:
    write_npz(root.with_suffix(".npz"), classes=101, train=101, test=101)
    return "101 classes; fmnist trains on 2 to 100"


def _label_outside_classes_txt(root: Path) -> str:
    write_npz(root.with_suffix(".npz"), classes=4)
    (root.parent / "classes.txt").write_text("a\nb\nc\n")
    return "label 3 at index 3 is outside 0-2"


def _missing_key(root: Path) -> str:
    write_npz(root.with_suffix(".npz"), y_test=None)
    return "has x_test but no y_test"


def _float_images(root: Path) -> str:
    write_npz(root.with_suffix(".npz"), x_train=np.zeros((40, 28, 28), np.float32))
    return "x_train is float32, expected uint8"


def _wrong_shape(root: Path) -> str:
    write_npz(root.with_suffix(".npz"), x_test=np.zeros((12, 32, 32), np.uint8))
    return "x_test has shape (12, 32, 32), expected (N, 28, 28)"


def _duplicate_names(root: Path) -> str:
    write_npz(root.with_suffix(".npz"), classes=3)
    (root.parent / "classes.txt").write_text("cat\ndog\ncat\n")
    return "class name 'cat' appears twice"


BAD_DATA = {
    "empty class folder": _empty_class,
    "non-image file": _non_image,
    "corrupt image": _corrupt_image,
    "mixed sizes": _mixed_sizes,
    "test class not in train": _test_class_not_in_train,
    "one class": _one_class,
    "101 classes": _too_many_classes,
    "label outside classes.txt": _label_outside_classes_txt,
    "missing npz key": _missing_key,
    "float images": _float_images,
    "wrong image shape": _wrong_shape,
    "duplicate class names": _duplicate_names,
}


@pytest.mark.parametrize("make", BAD_DATA.values(), ids=BAD_DATA.keys())
def test_bad_own_data_is_refused_with_a_message_naming_the_problem(tmp_path: Path, make) -> None:
    root = tmp_path / "data"
    expected = make(root)
    where = root if root.exists() else root.with_suffix(".npz")
    with pytest.raises(DataError) as raised:
        for split in ("train", "test"):
            load(split, where)
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_bad_own_data_is_one_line_from_the_cli(tmp_path: Path, run_fmnist) -> None:
    root = tmp_path / "data"
    _non_image(root)
    run_fmnist("data", "info", "--data", str(root), "--no-download").error_line("notes.txt: not an image file")


def test_an_image_folder_exported_as_csv_keeps_its_content_and_names(tmp_path: Path) -> None:
    from fmnist.data.export_csv import export_csv

    root = write_image_folder(tmp_path / "shapes", per_class={"train": 4, "test": 2})
    export_csv(locate_data(root), tmp_path / "csv")
    assert (tmp_path / "csv" / "classes.txt").read_text() == "circle\ncross\nsquare\n"
    for split in ("train", "test"):
        original, exported = load(split, root), load(split, tmp_path / "csv")
        assert exported.class_names == SHAPES and exported.content_digest == original.content_digest
