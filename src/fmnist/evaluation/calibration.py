"""Calibration: expected calibration error, reliability diagrams and temperature scaling.

A model is calibrated when, among the images it labels with confidence c, a fraction c is
right. Temperature scaling (Guo et al., 2017) divides the logits by one number T fitted
to minimise the negative log-likelihood on the validation split; it changes confidences,
never the predicted class. T is stored in the model file (ModelCard.temperature), so
evaluation, prediction and serving all return calibrated probabilities. The test split
is never used for fitting.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fmnist.errors import RunError
from fmnist.inference.predictor import TorchPredictor, softmax
from fmnist.models import LoadedModel, load_model, resolve_model_path, save_model
from fmnist.run import CalibrationResult, Run

DEFAULT_BINS = 15


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Equal-width confidence bins: per bin, the mean confidence, the accuracy and the count."""

    bin_edges: list[float]  # bins + 1 edges from 0 to 1
    confidence: list[float | None]  # None for an empty bin
    accuracy: list[float | None]
    counts: list[int]

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean |accuracy - confidence|."""
        total = sum(self.counts)
        gaps = [
            count * abs(accuracy - confidence)
            for count, accuracy, confidence in zip(self.counts, self.accuracy, self.confidence)
            if count
        ]
        return float(sum(gaps) / total) if total else float("nan")


def reliability_diagram(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = DEFAULT_BINS) -> ReliabilityDiagram:
    """Bin the top-1 confidence of ``probabilities`` (N, C) into ``bins`` equal-width bins.

    Bins are (lo, hi], the first one [0, hi], as in Guo et al.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError(f"expected probabilities (N, C) and labels (N,), got {probabilities.shape} and {labels.shape}")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Index of the bin (lo, hi] holding each confidence; 0 goes into the first bin.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    confidence_sums = np.bincount(which, weights=confidence, minlength=bins)
    correct_sums = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    return ReliabilityDiagram(
        bin_edges=edges.tolist(),
        confidence=[float(s / n) if n else None for s, n in zip(confidence_sums, counts)],
        accuracy=[float(s / n) if n else None for s, n in zip(correct_sums, counts)],
        counts=counts.astype(int).tolist(),
    )


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = DEFAULT_BINS) -> float:
    return reliability_diagram(probabilities, labels, bins=bins).ece


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean cross-entropy (nats) of ``logits / temperature``."""
    scaled = torch.as_tensor(logits, dtype=torch.float64) / temperature
    return float(torch.nn.functional.cross_entropy(scaled, torch.as_tensor(labels, dtype=torch.int64)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of ``logits / T`` (L-BFGS on log T)."""
    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    labels_t = torch.as_tensor(labels, dtype=torch.int64)
    if len(logits_t) == 0:
        raise ValueError("cannot fit a temperature on zero images")
    log_temperature = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_temperature.exp(), labels_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    # The clamp only guards against a degenerate split (e.g. every image right with huge
    # logits, where the NLL keeps falling as T -> 0); real fits land near 0.5-3.
    return float(log_temperature.detach().exp().clamp(0.05, 20.0))


def validation_split(run_dir: Path, data: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rebuild a run's exact validation split (images uint8 (N, 28, 28), labels) from its
    config.json: same data, subset, seed and fraction, so no test image is involved."""
    from fmnist.training.data_prep import prepare_data

    run = Run(run_dir)
    config = run.config()
    if config.full:
        raise RunError(f"{run_dir}: trained with --full, so it has no validation split to calibrate on",
                       "calibrate the run that chose the settings instead")
    recorded = run.provenance().data
    if data is None and recorded.get("root") and Path(recorded["root"]).is_dir():
        data = recorded["root"]
    prepared = prepare_data(config, data)
    digest = recorded.get("content_digest")
    if digest and prepared.description.get("content_digest") != digest:
        raise RunError(
            f"{run_dir}: the training data found ({prepared.source.root}) differs from the data the run was trained on",
            "pass the run's own data folder with --data",
        )
    return prepared.val_images.numpy(), prepared.val_labels.numpy()


def calibrate_model(
    model: LoadedModel, images: np.ndarray, labels: np.ndarray, *, bins: int = DEFAULT_BINS
) -> CalibrationResult:
    """Fit a temperature for ``model`` on validation ``images`` (uint8 (N, 28, 28)) and ``labels``.

    Returns the fit and the validation figures before and after; the model is not changed.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise RunError(f"{model.path}: the validation split is empty", "train with a --val-fraction above 0")
    logits = TorchPredictor(model).logits(images)  # flip-averaged as the card says, before any temperature
    temperature = fit_temperature(logits, labels)
    return CalibrationResult(
        temperature=temperature,
        val_images=len(labels),
        val_nll_before=negative_log_likelihood(logits, labels),
        val_nll_after=negative_log_likelihood(logits, labels, temperature),
        val_ece_before=expected_calibration_error(softmax(logits), labels, bins=bins),
        val_ece_after=expected_calibration_error(softmax(logits, temperature), labels, bins=bins),
        bins=bins,
    )


def calibrate_run(
    run: str | os.PathLike[str], data: str | os.PathLike[str] | None = None, *, bins: int = DEFAULT_BINS
) -> CalibrationResult:
    """Fit a temperature on ``run``'s validation split and store it in its model file.

    The model file is rewritten atomically with the new temperature in its card (the
    weights are unchanged); the figures go to calibration.json in the run folder.
    Calibrating again refits from the raw logits, so the result does not depend on a
    temperature stored before.
    """
    model_file = resolve_model_path(run)
    run_dir = model_file.parent
    model = load_model(model_file)
    images, labels = validation_split(run_dir, data)
    result = calibrate_model(model, images, labels, bins=bins)
    model.card.temperature = result.temperature
    model.card.extra["calibration"] = result.to_dict()
    save_model(model_file, model.module, model.card)
    Run.of_model(run).write_calibration(result)
    return result


def calibration_summary(logits: np.ndarray, labels: np.ndarray, temperature: float, *, bins: int = DEFAULT_BINS) -> dict:
    """Test-set calibration before (T = 1) and after (the stored T) temperature scaling."""
    before = reliability_diagram(softmax(logits), labels, bins=bins)
    after = reliability_diagram(softmax(logits, temperature), labels, bins=bins)
    return {
        "temperature": temperature,
        "bins": bins,
        "ece_before": before.ece,
        "ece_after": after.ece,
        "nll_before": negative_log_likelihood(logits, labels),
        "nll_after": negative_log_likelihood(logits, labels, temperature),
        "reliability_before": asdict(before),
        "reliability_after": asdict(after),
    }
