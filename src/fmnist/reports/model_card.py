"""The model card: a README.md for a model bundle, written from the run's stored files
(config.json, run.json, epochs.jsonl, calibration.json, metrics.json, the model card in
model.safetensors), so every figure in it is one the run measured.

The card names no path of the training machine: data are described by format, digest and
image counts, other runs by their folder name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fmnist.data.classes import CLASS_NAMES

# What each Fashion-MNIST class holds (Zalando's article categories), for a run trained on it.
FASHION_DESCRIPTIONS = {
    "T-shirt/top": "T-shirts and short-sleeved or sleeveless tops",
    "Trouser": "trousers and jeans, seen from the front",
    "Pullover": "long-sleeved pullovers and sweaters",
    "Dress": "dresses",
    "Coat": "coats and jackets, mostly with a front opening",
    "Sandal": "sandals and other open shoes",
    "Shirt": "shirts and blouses (collars, buttons)",
    "Sneaker": "sneakers and other low closed shoes",
    "Bag": "bags and handbags",
    "Ankle boot": "ankle boots",
}
MOST_CONFUSED_ROWS = 8


@dataclass(frozen=True)
class CardFile:
    name: str  # inside the bundle
    bytes: int
    sha256: str
    what: str


def cell(value: object) -> str:
    """``value`` as a Markdown table cell: a | in a class name would end the cell, and
    Markdown renderers pass HTML through (a class named <img onerror=...>)."""
    text = str(value).replace("<", "&lt;")  # no tag can open; the rest renders as typed
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _arguments(values: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items())


def reproduce_command(config: dict, provenance: dict) -> str:
    """The shell commands that train the same model again from the bundle's config.json."""
    data = provenance.get("data") or {}
    threads = provenance.get("torch_threads")
    train = "fmnist train --config config.json"
    if not data.get("official"):
        train += " --data YOUR_DATA"
    if threads:
        train += f" --threads {threads}"  # CPU results are exact for a given seed and thread count
    train += " --out runs/reproduced"
    lines = ["fmnist data fetch  # the official files, checked by SHA-256"] if data.get("official") else []
    return "\n".join([*lines, train])


def _intended_use(class_names: list[str], data: dict) -> str:
    fashion = class_names == list(CLASS_NAMES)
    what = "Fashion-MNIST" if data.get("official") else ("Fashion-MNIST-style data" if fashion else "its training data")
    return "\n".join([
        "## Intended use and limits",
        "",
        f"- Classifies one image into one of {len(class_names)} classes, as in {what}.",
        "- Input: 28×28 greyscale images shaped like the training data: one item, centred, a light (white)",
        "  item on a dark (black) background, as in the dataset. `fmnist predict` and `fmnist serve` turn",
        "  photos into that form (background removed, inverted, centred, resized); other tools must do the same",
        "  (see *Input contract*).",
        "- Not measured beyond that: photos with several items, people wearing the garments, unusual angles,",
        "  other backgrounds. Test figures below come from the test split described under *Data*; a photo",
        "  taken at home is further from that split than the test images are.",
        "- Classes outside the list below do not exist for the model: it always answers one of them.",
        "  `--min-confidence P` answers \"uncertain\" below a calibrated probability P.",
        "- A research and teaching model, not for decisions about people.",
    ])


def _classes(class_names: list[str], report: dict) -> str:
    rows = []
    for index, name in enumerate(class_names):
        entry = report.get(name) or {}
        rows.append([
            index, name, FASHION_DESCRIPTIONS.get(name, "") if class_names == list(CLASS_NAMES) else "",
            f"{entry.get('precision', float('nan')):.3f}", f"{entry.get('recall', float('nan')):.3f}",
            f"{entry.get('f1-score', float('nan')):.3f}", int(entry.get("support", 0)),
        ])
    header = ["id", "class", "what it holds", "precision", "recall (accuracy)", "F1", "test images"]
    if class_names != list(CLASS_NAMES):
        header, rows = header[:2] + header[3:], [row[:2] + row[3:] for row in rows]
    return "## Classes and per-class results (test split)\n\n" + _table(header, rows)


def _data(provenance: dict, metrics: dict) -> str:
    train, test = provenance.get("data") or {}, metrics.get("data") or {}
    source = "the official Fashion-MNIST release (Zalando Research), files checked by SHA-256" if train.get("official") else (
        f"the user's own data ({train.get('format', '?')} files), not the official release"
    )
    used = f"{_count(train.get('train_images'))} trained on, {_count(train.get('val_images'))} held out for validation"
    rows = [
        ["training", used, train.get("content_digest", "?")],
        ["test", f"{_count(metrics.get('test_images'))} measured on", test.get("content_digest", "?")],
    ]
    return (
        f"## Data\n\nTrained on {source}. Digests are SHA-256 over the decoded images and labels (independent of "
        "file format and compression), so a copy of the data can be checked with `fmnist data info --data PATH`.\n\n"
        + _table(["split", "images", "content digest of the split as read"], rows)
    )


def _results(metrics: dict, history: list[dict]) -> str:
    low, high = metrics["test_accuracy_ci95"]
    lines = [
        "## Results",
        "",
        (f"**Test accuracy {metrics['test_accuracy']:.2%}** (95% interval {low:.2%} – {high:.2%}: "
        f"{metrics.get('ci_method', 'bootstrap')}), {metrics['errors']:,} errors on {metrics['test_images']:,} test "
        f"images; mean test loss {metrics['test_loss']:.4f} nats. The test split was used only for this measurement."),
    ]
    if history:
        best = [r for r in history if r.get("best")]
        seconds = sum(r.get("seconds") or 0 for r in history)
        kept = best[-1]["epoch"] if best else history[-1]["epoch"]
        lines += ["", f"Trained {len(history)} epochs in {seconds:.0f} s; the weights of epoch {kept} were kept."]
    return "\n".join(lines)


def _calibration(metrics: dict, calibration: dict | None) -> str:
    summary = metrics.get("calibration")
    if not summary:
        return "## Calibration\n\nNot measured for this run."
    temperature = summary["temperature"]
    if calibration is None:
        fitted = "No temperature was fitted (a `--full` run has no validation split): probabilities are the raw softmax."
    else:
        fitted = (
            f"Temperature T = {temperature:.3f}, fitted on {_count(calibration.get('val_images'))} validation images "
            "(never the test split); the bundle's models apply it (probabilities = softmax(logits / T))."
        )
    rows = [
        ["raw (T = 1)", f"{summary['ece_before']:.2%}", f"{summary['nll_before']:.4f}"],
        [f"calibrated (T = {temperature:.3f})", f"{summary['ece_after']:.2%}", f"{summary['nll_after']:.4f}"],
    ]
    return (
        f"## Calibration\n\n{fitted} On the test split, expected calibration error over {summary['bins']} "
        "equal-width confidence bins, and negative log-likelihood:\n\n" + _table(["", "ECE", "NLL"], rows)
    )


def _most_confused(metrics: dict) -> str:
    pairs = metrics.get("most_confused") or []
    if not pairs:
        return "## Most confused pairs\n\nNo test image was misclassified."
    rows = [[pair["true"], pair["predicted"], pair["count"]] for pair in pairs[:MOST_CONFUSED_ROWS]]
    return "## Most confused pairs (test split)\n\n" + _table(["true class", "predicted as", "images"], rows)


def _views_sentence(card: dict) -> str:
    if not card.get("tta_flip"):
        return ""
    if card.get("tta_shift"):
        return (" Predictions average the logits of the image and its left-right mirror, and of both moved by "
                "one pixel up, down, left and right.")
    return " Predictions average the logits of the image and its left-right mirror."


def _training(config: dict, provenance: dict, card: dict) -> str:
    extra = card.get("extra") or {}
    rows = [
        ["model", f"{card.get('model')}({_arguments(card.get('model_args') or {})})"],
        ["recipe", config.get("recipe")],
        ["seed", config.get("seed")],
        ["epochs (configured)", config.get("epochs")],
        ["test-time flip averaging", card.get("tta_flip")],
        ["test-time shift averaging", bool(card.get("tta_shift"))],
        ["trained on train + validation (--full)", config.get("full")],
        ["fmnist", provenance.get("fmnist")],
        ["torch", provenance.get("torch")],
        ["git revision", f"{provenance.get('git_revision')}{' (uncommitted changes)' if provenance.get('git_dirty') else ''}"],
        ["device / autocast", f"{provenance.get('device')} / {provenance.get('autocast')}"],
        ["CPU threads", provenance.get("torch_threads")],
    ]
    for key, label in (("init_run", "started from the weights of run"), ("pretrained", "pretrained weights")):
        if config.get(key):
            rows.append([label, config[key]])
    if extra.get("run"):
        rows.insert(0, ["run", extra["run"]])
    return "## How it was made\n\n" + _table(["", ""], [[k, "–" if v is None else v] for k, v in rows])


def _files(files: list[CardFile]) -> str:
    rows = [[f"`{f.name}`", f.what, f"{f.bytes:,}", f.sha256] for f in files]
    return "## Files\n\n" + _table(["file", "what", "bytes", "SHA-256"], rows)


def _use(has_onnx: bool, onnx_note: str) -> str:
    lines = [
        "## Use",
        "",
        "```",
        "pip install fmnist",
        "fmnist predict THIS_FOLDER photo.jpg          # photos are prepared like the dataset",
        "fmnist predict THIS_FOLDER --raw image.png    # already a 28x28 dataset-style image",
        "fmnist serve THIS_FOLDER                       # HTTP API and a web page",
    ]
    if has_onnx:
        lines.append("fmnist predict THIS_FOLDER photo.jpg --backend onnxruntime")
    lines += ["```", ""]
    if not has_onnx:
        lines.append(onnx_note)
        return "\n".join(lines)
    lines += [
        ("`model.onnx` needs no fmnist: it takes uint8 images and returns calibrated probabilities (the scaling, the "
        "temperature and any flip averaging are inside the graph); its metadata holds the class names. "
        "`prepare_photo.py` (numpy and Pillow) turns a photo into the model's input as `fmnist predict` does:"),
        "",
        "```python",
        "import json, onnxruntime",
        "from prepare_photo import prepare_photo",
        "",
        'session = onnxruntime.InferenceSession("model.onnx")',
        'names = json.loads(session.get_modelmeta().custom_metadata_map["fmnist.class_names"])',
        'probabilities, logits = session.run(None, {"images": prepare_photo("photo.jpg")[None]})',
        "print(names[probabilities[0].argmax()], probabilities[0].max())",
        "```",
    ]
    return "\n".join(lines)


def _contract(card: dict) -> str:
    pre = card.get("preprocessing") or {}
    return (
        "## Input contract\n\n"
        f"{pre.get('image_size', 28)}×{pre.get('image_size', 28)} pixels, {pre.get('channels', 1)} channel, uint8 "
        f"pixel values × {pre.get('scale', 1 / 255):.6g} (i.e. / 255), background {pre.get('background', 'black')} (0), the "
        "item light. Normalisation is inside the model."
        + _views_sentence(card)
    )


def render_model_card(
    *,
    name: str,
    config: dict,
    provenance: dict,
    history: list[dict],
    metrics: dict,
    calibration: dict | None,
    card: dict,
    files: list[CardFile],
    onnx_note: str = "",
) -> str:
    """The README.md of a bundle (Markdown with a YAML header that model hubs read)."""
    class_names = list(card.get("class_names") or metrics["class_names"])
    has_onnx = any(f.name.endswith(".onnx") for f in files)
    front = "\n".join([
        "---",
        "library_name: fmnist",
        "pipeline_tag: image-classification",
        "tags: [image-classification, fmnist" + (", fashion-mnist" if (provenance.get("data") or {}).get("official") else "") + "]",
        "metrics: [accuracy]",
        "---",
    ])
    low, high = metrics["test_accuracy_ci95"]
    title = (
        f"# {name}: {card.get('model')} image classifier, {len(class_names)} classes\n\n"
        f"Test accuracy **{metrics['test_accuracy']:.2%}** (95% interval {low:.2%} – {high:.2%}, "
        f"{metrics['test_images']:,} test images). Trained with fmnist."
    )
    sections = [
        front, title, _intended_use(class_names, provenance.get("data") or {}),
        _classes(class_names, metrics.get("classification_report") or {}), _results(metrics, history),
        _calibration(metrics, calibration), _most_confused(metrics), _data(provenance, metrics),
        _training(config, provenance, card),
        "## Reproduce\n\nFrom this folder (`config.json` is the run's resolved training configuration):\n\n```\n"
        + reproduce_command(config, provenance) + "\n```\n\n"
        + ("" if (provenance.get("data") or {}).get("official") else
           "with YOUR_DATA a copy of the training data whose content digest is the one under *Data*. ")
        + "On CPU the same seed and thread count give the same weights; on a GPU, or another CPU type, results "
        "differ within the run-to-run spread.",
        _use(has_onnx, onnx_note), _contract(card), _files(files),
    ]
    return "\n\n".join(sections).rstrip() + "\n"


def file_entry(path: Path, what: str) -> CardFile:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return CardFile(path.name, path.stat().st_size, digest.hexdigest(), what)
