"""Mode statistics: the 2D Gaussian mixtures (ring8, grid25) and Stacked MNIST (1,000 digit triples)."""

from __future__ import annotations

import numpy as np
import torch

from ganforge.errors import GanforgeError
from ganforge.metrics._arrays import as_float64


def mixture_mode_stats(samples: torch.Tensor | np.ndarray, modes: torch.Tensor | np.ndarray, std: float) -> dict:
    """Mode coverage of 2D samples on a Gaussian mixture, as in VEEGAN and PacGAN.

    A sample is high quality (HQ) if it lies within 3 * `std` (Euclidean distance) of its
    nearest mode; a mode is captured if at least one HQ sample is nearest to it. The
    reverse KL is KL(p || uniform) = sum_k p_k log(p_k K), where p is the histogram of the
    HQ samples over the K modes (0 log 0 = 0; with no HQ sample it is log K).

    Args:
        samples: (n, d) generated points, torch or numpy.
        modes: (K, d) mode centres.
        std: the common standard deviation of the modes.

    Returns:
        {"modes": modes captured (int), "hq_percent": percent of HQ samples (float),
        "reverse_kl": reverse KL divergence in nats (float), "spread": the samples' root-mean-square
        distance from their mean over the mixture's own (the modes' spread and each mode's std; 1 for
        real data, near 0 for a generator collapsed to a point, wherever that point is)}.
    """
    x, centres = as_float64(samples), as_float64(modes)
    distances = np.linalg.norm(x[:, None, :] - centres[None, :, :], axis=2)  # (n, K)
    nearest = distances.argmin(axis=1)
    hq = distances[np.arange(len(x)), nearest] <= 3.0 * std
    counts = np.bincount(nearest[hq], minlength=len(centres))
    real_spread = np.sqrt(((centres - centres.mean(axis=0)) ** 2).sum(axis=1).mean() + centres.shape[1] * std**2)
    spread = np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean()) / real_spread if len(x) else 0.0
    return {
        "modes": int((counts > 0).sum()),
        "hq_percent": 100.0 * float(hq.mean()) if len(x) else 0.0,
        "reverse_kl": _kl_to_uniform(counts) if counts.sum() else float(np.log(len(centres))),
        "spread": float(spread),
    }


STACKED_MODES = 1000  # digit triples 000..999


def stacked_mnist_mode_stats(digits: torch.Tensor | np.ndarray) -> dict:
    """Mode statistics of Stacked MNIST (PacGAN, VEEGAN): digit triples as 1,000 modes.

    Args:
        digits: (n, 3) integers 0..9, the digit a classifier reads in each channel (R, G, B).

    Returns:
        {"modes": distinct triples among the samples (int, at most 1,000),
        "kl": KL(triple histogram || uniform over 1,000) in nats (0 log 0 = 0; 0 is perfect,
        log 1000 ≈ 6.91 is one mode only),
        "channel_kl": [KL(digit histogram of R, G, B || uniform over 10)]}. `kl` is the sum of
        the three channel KLs plus how far the channels are from independent (their total
        correlation), so these say whether an uneven histogram comes from each channel's digit
        balance or from how the digits combine.
    """
    values = np.asarray(digits.detach().cpu().numpy() if isinstance(digits, torch.Tensor) else digits)
    if values.ndim != 2 or values.shape[1] != 3 or len(values) == 0:
        raise GanforgeError(f"Stacked MNIST digits have shape {values.shape}: expected (samples, 3)")
    if values.min() < 0 or values.max() > 9:
        raise GanforgeError(f"Stacked MNIST digits range over {values.min()}..{values.max()}: expected 0..9")
    modes = values[:, 0].astype(np.int64) * 100 + values[:, 1] * 10 + values[:, 2]
    counts = np.bincount(modes, minlength=STACKED_MODES)
    return {
        "modes": int((counts > 0).sum()),
        "kl": _kl_to_uniform(counts),
        "channel_kl": [_kl_to_uniform(np.bincount(values[:, c], minlength=10)) for c in range(3)],
    }


def _kl_to_uniform(counts: np.ndarray) -> float:
    """KL(counts / total || uniform over len(counts)) in nats, with 0 log 0 = 0."""
    p = counts[counts > 0] / counts.sum()
    return float(np.sum(p * np.log(p * len(counts))))
