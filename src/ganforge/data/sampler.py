"""Batches drawn on the device from a device-resident dataset, in reproducible epochs."""

from __future__ import annotations

import torch
from torch import Tensor

from ganforge.errors import GanforgeError


class BatchSampler:
    """Yields index batches of a shuffled epoch; reshuffles when an epoch runs out.

    Epoch e's order is randperm(n) from a generator seeded with (seed, e), so the sampler's
    whole state is (epoch, position): a resumed run continues with exactly the batches
    the uninterrupted run would have drawn. The last incomplete batch of an epoch is
    dropped, so every batch has `batch_size` samples.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, device: torch.device | str = "cpu") -> None:
        if batch_size > n:
            raise GanforgeError(f"batch_size={batch_size} is larger than the dataset ({n} samples): expected at most {n}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.device = torch.device(device)
        self.epoch, self.position = 0, 0
        self._order: Tensor | None = None

    def _epoch_order(self) -> Tensor:
        rng = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=rng).to(self.device)

    def next(self) -> Tensor:
        """Indices of the next batch, int64 (batch_size,) on the device."""
        if self.position + self.batch_size > self.n:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = self._epoch_order()
        indices = self._order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return indices

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self.seed = state["epoch"], state["position"], state["seed"]
        self._order = None
