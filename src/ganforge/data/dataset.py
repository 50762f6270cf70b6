"""The in-memory dataset every loader returns, and the map between data and model space."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Dataset:
    """A whole dataset in memory.

    `samples` holds images as uint8 (n, channels, h, w) and vectors as float32 (n, dim).
    The networks see "model space": images scaled to [-1, 1], vectors standardised by
    `shift` and `scale` (identity for the 2D mixtures). `transform` records that map as
    plain JSON, so an exported generator can return samples in data space on its own.
    """

    name: str
    kind: str  # "images" or "vectors"
    samples: Tensor
    transform: dict
    labels: Tensor | None = None
    # For the Gaussian mixtures: mode centres (k, 2) and their common standard deviation.
    modes: Tensor | None = None
    mode_std: float | None = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.samples.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.samples.shape[1:])

    def to(self, device: torch.device) -> Dataset:
        self.samples = self.samples.to(device)
        return self

    def to_model_space(self, batch: Tensor) -> Tensor:
        """Data batch (as stored) -> float32 network input."""
        return to_model_space(batch, self.transform)


def to_model_space(batch: Tensor, transform: dict) -> Tensor:
    if transform["kind"] == "image":
        # uint8 [0, 255] -> float [-1, 1]
        return batch.float().div_(127.5).sub_(1.0)
    shift = torch.as_tensor(transform["shift"], dtype=torch.float32, device=batch.device)
    scale = torch.as_tensor(transform["scale"], dtype=torch.float32, device=batch.device)
    return (batch.float() - shift) / scale


def to_data_space(x: Tensor, transform: dict) -> Tensor:
    """Network output -> data space: images as float in [0, 1], vectors in their original units."""
    if transform["kind"] == "image":
        return x.add(1.0).mul(0.5).clamp(0.0, 1.0)
    shift = torch.as_tensor(transform["shift"], dtype=x.dtype, device=x.device)
    scale = torch.as_tensor(transform["scale"], dtype=x.dtype, device=x.device)
    return x * scale + shift
