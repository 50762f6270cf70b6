"""Distances between two feature distributions: Fréchet distance (the FID formula) and KID."""

from __future__ import annotations

import numpy as np
import torch

from ganforge.errors import GanforgeError
from ganforge.metrics._arrays import as_features, as_float64, same_width

Array = torch.Tensor | np.ndarray


def feature_stats(features: Array) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of (n, d) features, float64, covariance with n - 1 (as pytorch-fid)."""
    x = as_features(features, "features")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; rounding's tiny negative eigenvalues become 0."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance_from_stats(mu1: Array, sigma1: Array, mu2: Array, sigma2: Array) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d² = |mu1 - mu2|² + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^½). The trace of the
    square root is computed as the sum of square roots of the eigenvalues of the symmetric
    matrix sigma1^½ sigma2 sigma1^½ (same spectrum as sigma1 sigma2), which stays real and
    stable where scipy's general sqrtm returns complex parts for near-singular covariances.

    Returns: the squared distance, in squared feature units (float, >= 0 up to rounding).
    """
    mu1, mu2, sigma1, sigma2 = (as_float64(a) for a in (mu1, mu2, sigma1, sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise GanforgeError(f"Fréchet statistics have shapes {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}: expected (d,), (d, d) twice")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise GanforgeError("Fréchet statistics hold NaN or Inf: expected finite means and covariances")
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    distance = float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)
    return max(distance, 0.0)


def frechet_distance(features1: Array, features2: Array) -> float:
    """Fréchet distance (the FID formula) between two (n, d) feature sets; see `frechet_distance_from_stats`."""
    x, y = as_features(features1, "features1"), as_features(features2, "features2")
    same_width(x, y, ("features1", "features2"))
    return frechet_distance_from_stats(*feature_stats(x), *feature_stats(y))


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (a·b / d + 1)³, as Bińkowski et al. 2018, torch-fidelity and clean-fid."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    # Within-set sums leave out the diagonal (k(a, a)); the cross term keeps all m² pairs.
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    features1: Array, features2: Array, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> dict:
    """KID: unbiased MMD² with the cubic polynomial kernel, over random subsets.

    Each of `subsets` draws `subset_size` rows of each set without replacement
    (`subset_size` is clipped to the smaller set, as torch-fidelity and clean-fid do) and
    computes the unbiased MMD². Defaults follow torch-fidelity: 100 subsets of 1,000.

    Returns: {"kid_mean": mean MMD², "kid_std": its standard deviation over subsets (ddof 0)},
    in squared kernel units; the mean can be slightly negative when the sets match.
    """
    x, y = as_features(features1, "features1"), as_features(features2, "features2")
    same_width(x, y, ("features1", "features2"))
    if subsets < 1:
        raise GanforgeError(f"KID subsets={subsets} is invalid: expected an integer >= 1")
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise GanforgeError(f"KID subset_size={subset_size} is invalid: expected an integer >= 2")
    rng = np.random.default_rng(seed)
    values = [_polynomial_mmd2(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)]) for _ in range(subsets)]
    return {"kid_mean": float(np.mean(values)), "kid_std": float(np.std(values))}
