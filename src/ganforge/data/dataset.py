"""The in-memory dataset every loader returns, and the map between data and model space."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ganforge.data.sampler import BatchSampler


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
    # (device, shift, scale): the affine map as tensors on a batch's device, made once (see `to_model_space`).
    _affine: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return self.samples.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.samples.shape[1:])

    @property
    def class_names(self) -> list[str]:
        """The name of each class label (folder names, else the label numbers); [] without labels."""
        if self.labels is None or len(self.labels) == 0:
            return []
        named = self.info.get("classes")
        return list(named) if named else [str(i) for i in range(int(self.labels.max()) + 1)]

    def to(self, device: torch.device) -> Dataset:
        self.samples = self.samples.to(device)
        self.labels = None if self.labels is None else self.labels.to(device)
        self._affine = None
        return self

    def batch_sampler(self, batch_size: int, seed: int, device: torch.device) -> BatchSampler:
        """What draws the training batches' indices (`real_batch` reads them)."""
        return BatchSampler(len(self), batch_size, seed=seed, device=device)

    def real_batch(self, index: Tensor) -> Tensor:
        """The discriminator's real batch for indices drawn by `batch_sampler`, in model space."""
        return self.to_model_space(self.samples[index])

    def to_model_space(self, batch: Tensor) -> Tensor:
        """Data batch (as stored) -> float32 network input.

        Called for every training batch: the vectors' shift and scale become tensors once, not
        per batch, and an identity map (the 2D mixtures) costs nothing but the float cast.
        """
        if self.transform["kind"] == "image":
            return to_model_space(batch, self.transform)
        if self._affine is None or self._affine[0] != batch.device:
            self._affine = (batch.device, *_affine_tensors(self.transform, torch.float32, batch.device))
        return to_model_space(batch, self.transform, self._affine[1:])


def to_model_space(batch: Tensor, transform: dict, affine: tuple[Tensor | None, Tensor | None] | None = None) -> Tensor:
    """Data batch -> float32 network input; `affine`: the vectors' (shift, scale) made ahead by `_affine_tensors`."""
    if transform["kind"] == "image":
        # uint8 [0, 255] -> float [-1, 1]
        return batch.float().div_(127.5).sub_(1.0)
    shift, scale = affine if affine is not None else _affine_tensors(transform, torch.float32, batch.device)
    batch = batch.float()
    return batch if shift is None else (batch - shift) / scale


def _affine_tensors(transform: dict, dtype: torch.dtype, device: torch.device) -> tuple[Tensor | None, Tensor | None]:
    """(shift, scale) as tensors, or (None, None) when the map is the identity."""
    if all(v == 0 for v in transform["shift"]) and all(v == 1 for v in transform["scale"]):
        return None, None
    return torch.as_tensor(transform["shift"], dtype=dtype, device=device), torch.as_tensor(transform["scale"], dtype=dtype, device=device)


def to_data_space(x: Tensor, transform: dict) -> Tensor:
    """Network output -> data space: images as float in [0, 1], vectors in their original units."""
    if transform["kind"] == "image":
        return x.add(1.0).mul(0.5).clamp(0.0, 1.0)
    shift = torch.as_tensor(transform["shift"], dtype=x.dtype, device=x.device)
    scale = torch.as_tensor(transform["scale"], dtype=x.dtype, device=x.device)
    return x * scale + shift
