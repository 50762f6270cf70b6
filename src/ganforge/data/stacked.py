"""Stacked MNIST (VEEGAN, PacGAN): three independent MNIST digits as the R, G and B channels, 1,000 modes."""

from __future__ import annotations

from pathlib import Path

import torch

from ganforge.data.dataset import Dataset
from ganforge.data.images import IMAGE_TRANSFORM, load_mnist, resize_tensor
from ganforge.errors import GanforgeError

STACKED_SAMPLES = 60_000  # as many stacked images as MNIST has training images
STACKED_SEED = 0  # fixed, so `stackedmnist:PATH` names one dataset


def load_stacked_mnist(folder: Path, image_size: int | None = None, n: int = STACKED_SAMPLES, seed: int = STACKED_SEED) -> Dataset:
    """`n` RGB images (n, 3, 28, 28) uint8 whose channels are MNIST training digits drawn independently.

    The draw is deterministic given `seed`. `labels` hold each image's mode,
    100 x (red digit) + 10 x (green digit) + (blue digit), in 0..999.
    """
    mnist = load_mnist(folder, split="train")
    if mnist.labels is None:
        raise GanforgeError(f"data='stackedmnist:{folder}' needs MNIST labels: expected train-labels-idx1-ubyte[.gz] beside the images")
    rng = torch.Generator().manual_seed(seed)
    which = torch.randint(len(mnist), (n, 3), generator=rng)  # (n, 3): one MNIST index per channel
    samples = mnist.samples[which, 0]  # (n, 3, 28, 28)
    digits = mnist.labels[which]  # (n, 3)
    return Dataset(
        name=f"stackedmnist:{folder}",
        kind="images",
        samples=resize_tensor(samples, image_size),
        transform=IMAGE_TRANSFORM,
        labels=digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2],
        info={"files": mnist.info["files"], "seed": seed},
    )
