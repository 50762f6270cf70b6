"""Checks shared by every metric: feature arrays in, float64 numpy out, one-line errors."""

from __future__ import annotations

import numpy as np
import torch

from ganforge.errors import GanforgeError


def as_float64(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A torch tensor or array-like as a float64 numpy array (on the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def as_features(x: torch.Tensor | np.ndarray, name: str, min_samples: int = 2) -> np.ndarray:
    """Validates a feature array: (n, d), n >= `min_samples`, finite; returns it as float64."""
    array = as_float64(x)
    if array.ndim != 2:
        raise GanforgeError(f"{name} has shape {tuple(array.shape)}: expected (samples, features)")
    if array.shape[0] < min_samples:
        raise GanforgeError(f"{name} has {array.shape[0]} samples: this metric needs at least {min_samples}")
    if array.shape[1] < 1:
        raise GanforgeError(f"{name} has shape {tuple(array.shape)}: expected at least one feature")
    if not np.isfinite(array).all():
        row = int(np.argwhere(~np.isfinite(array))[0][0])
        raise GanforgeError(f"{name} row {row} holds NaN or Inf: expected finite features")
    return array


def same_width(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape[1] != b.shape[1]:
        raise GanforgeError(f"{names[0]} has {a.shape[1]} features but {names[1]} has {b.shape[1]}: expected the same feature extractor for both")
