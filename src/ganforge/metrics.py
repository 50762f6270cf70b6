"""Sample-quality metrics for the 2D Gaussian mixtures (ring8, grid25)."""

from __future__ import annotations

import numpy as np
import torch


def _float64(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


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
        "reverse_kl": reverse KL divergence in nats (float)}.
    """
    x, centres = _float64(samples), _float64(modes)
    distances = np.linalg.norm(x[:, None, :] - centres[None, :, :], axis=2)  # (n, K)
    nearest = distances.argmin(axis=1)
    hq = distances[np.arange(len(x)), nearest] <= 3.0 * std
    counts = np.bincount(nearest[hq], minlength=len(centres))
    k = len(centres)
    if counts.sum() == 0:
        reverse_kl = float(np.log(k))
    else:
        p = counts[counts > 0] / counts.sum()
        reverse_kl = float(np.sum(p * np.log(p * k)))
    return {
        "modes": int((counts > 0).sum()),
        "hq_percent": 100.0 * float(hq.mean()) if len(x) else 0.0,
        "reverse_kl": reverse_kl,
    }
