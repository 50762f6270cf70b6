"""Precision/recall and density/coverage where samples lie exactly on a k-NN ball's boundary.

Points on a small integer grid make every distance exact in float64 (squared distances are small
integers), so ties between a sample's distance and a ball's radius are real ties in both ganforge
and the reference implementation prdc, which counts a sample inside a ball only when strictly closer.
"""

from __future__ import annotations

import numpy as np
import pytest

from ganforge.metrics import density_coverage, precision_recall

prdc = pytest.importorskip("prdc")


def grid_points(n: int, seed: int, side: int = 4, dim: int = 2) -> np.ndarray:
    """n points drawn with repeats from the integer grid {0, ..., side - 1}^dim."""
    return np.random.default_rng(seed).integers(0, side, size=(n, dim)).astype(np.float64)


def boundary_ties(real: np.ndarray, fake: np.ndarray, k: int) -> int:
    """How many (real, fake) pairs lie exactly at the real sample's k-NN radius (computed here directly)."""
    within = np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1))
    radii = np.sort(within, axis=1)[:, k]
    across = np.sqrt(((real[:, None] - fake[None]) ** 2).sum(-1))
    return int((across == radii[:, None]).sum())


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_manifold_metrics_on_exact_ties_match_prdc(k):
    real, fake = grid_points(40, 1), grid_points(30, 2)
    assert boundary_ties(real, fake, k) > 0 and boundary_ties(fake, real, k) > 0, "the data must have ties at the radii"
    theirs = {name: float(value) for name, value in prdc.compute_prdc(real, fake, nearest_k=k).items()}
    ours = {**precision_recall(real, fake, k=k), **density_coverage(real, fake, k=k)}
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_a_ball_of_radius_zero_holds_nothing():
    """A real point repeated more than k times has radius 0: a generated copy of it is not strictly inside."""
    real = np.array([[0.0, 0.0]] * 4 + [[5.0, 5.0], [6.0, 5.0], [5.0, 6.0], [6.0, 6.0]])
    fake = np.array([[0.0, 0.0], [0.0, 0.0], [9.0, 9.0], [9.0, 8.0]])
    # The fakes at the origin sit inside no real ball (radius 0 there; the square's balls are 1 wide and far).
    assert precision_recall(real, fake, k=2)["precision"] == 0.0
    assert density_coverage(real, fake, k=2) == {"density": 0.0, "coverage": 0.0}
    theirs = prdc.compute_prdc(real, fake, nearest_k=2)
    assert (float(theirs["precision"]), float(theirs["density"]), float(theirs["coverage"])) == (0.0, 0.0, 0.0)
