"""TensorBoard event files of a run (`tensorboard=true`): the metrics records' scalars and the sample grids.

The events go to OUT/tensorboard (`tensorboard --logdir OUT/tensorboard`). torch writes them
through `torch.utils.tensorboard`, which needs the `tensorboard` package; `installed` lets the
config check refuse `tensorboard=true` before a run folder changes when it is missing.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
from PIL import Image

FOLDER = "tensorboard"
# Log-record keys and the TensorBoard tags they are shown under.
LOG_TAGS = {
    "d_loss": "loss/discriminator", "g_loss": "loss/generator", "d_real": "D/real D(x)", "d_fake": "D/generated D(G(z))",
    "steps_per_s": "speed/steps_per_s", "skipped_steps": "divergence/skipped_steps",
}


def installed() -> bool:
    """Whether the `tensorboard` package that torch.utils.tensorboard needs can be imported."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardEvents:
    """Writes a run's metrics records and sample grids as TensorBoard events in RUN/tensorboard."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / FOLDER))

    def record(self, record: dict) -> None:
        """One metrics.jsonl record: a log record's losses, D outputs and speed, or an evaluation's metrics (eval/NAME)."""
        step = record["step"]
        if isinstance(record.get("eval"), dict):
            scalars = {f"eval/{name}": value for name, value in record["eval"].items()}
        else:
            scalars = {tag: record.get(key) for key, tag in LOG_TAGS.items()}
        for tag, value in scalars.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def picture(self, path: Path, step: int) -> None:
        """A sample grid (or 2D scatter plot) PNG, shown under 'samples'; nothing when the run drew none."""
        if not Path(path).is_file():
            return
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))  # (height, width, 3) uint8
        self.writer.add_image("samples", pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
