"""TensorBoard event files in RUN/tensorboard/ (``fmnist train --log tensorboard``).

Per epoch (step = epoch): the scalars of ``EPOCH_METRICS``. At the end: the test figures
as scalars at the last epoch's step, the hyperparameters as a text table, and the test
confusion matrix (``evaluation/confusion``, the figure of the report) as an image; without
an evaluation (--no-eval) there is no test figure to draw. A resumed run appends a new
event file to the same folder, starting at the next epoch.

    tensorboard --logdir runs      # every run's RUN/tensorboard under runs/
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fmnist.extras import require
from fmnist.tracking import epoch_metrics, final_metrics, flat_config

if TYPE_CHECKING:
    from fmnist.training.loop import EpochEnd

TENSORBOARD_DIR = "tensorboard"
CONFUSION_TAG = "evaluation/confusion"


class TensorBoardTracker:
    def __init__(self, run_dir: Path) -> None:
        # torch.utils.tensorboard imports the tensorboard package for its protobufs.
        require("tensorboard", feature="fmnist train --log tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self._writer_class = SummaryWriter
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self._writer = None
        self._last_epoch = 0
        self._config = None

    @property
    def writer(self):
        if self._writer is None:  # opened at the first epoch: nothing is written for a run refused before it
            self._writer = self._writer_class(log_dir=str(self.log_dir))
        return self._writer

    def epoch(self, event: EpochEnd) -> None:
        step = int(event.record["epoch"])
        for name, value in epoch_metrics(event.record).items():
            self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()  # a killed run keeps its epochs
        self._last_epoch, self._config = step, event.config

    def finished(self, metrics: dict | None, calibration: dict | None) -> None:
        step = self._last_epoch
        for name, value in final_metrics(metrics, calibration).items():
            self.writer.add_scalar(name, value, global_step=step)
        if self._config is not None:
            rows = "\n".join(f"| {key} | {value} |" for key, value in flat_config(self._config).items())
            self.writer.add_text("config", f"| setting | value |\n| --- | --- |\n{rows}", global_step=step)
        if metrics is not None:
            self.writer.add_image(CONFUSION_TAG, confusion_image(metrics), global_step=step, dataformats="HWC")

    def close(self, status: str) -> None:
        if self._writer is not None:
            self._writer.close()


def confusion_image(metrics: dict) -> np.ndarray:
    """The test confusion matrix drawn as the report draws it, as an RGB uint8 (H, W, 3) array."""
    from PIL import Image

    from fmnist.reports.plots import figure_png, plot_confusion_matrix

    png = figure_png(plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), metrics["class_names"]), dpi=80)
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))
