"""Metrics on feature arrays: hand-computed values on tiny inputs and cross-checks against independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganforge.errors import GanforgeError
from ganforge.metrics import (
    class_histogram,
    class_stats,
    density_coverage,
    feature_stats,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_inception_distance,
    manifolds,
    precision_recall,
    stacked_mnist_mode_stats,
)


def gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# Fréchet distance


def test_frechet_distance_in_one_dimension_is_mean_and_std_gap():
    # x: mean 1, variance 2; y: mean 5, variance 4 -> (1 - 5)² + (√2 - 2)² = 22 - 4√2
    x, y = np.array([[0.0], [2.0]]), np.array([[3.0], [5.0], [7.0]])
    assert frechet_distance(x, y) == pytest.approx(22 - 4 * math.sqrt(2), rel=1e-12)


def test_frechet_distance_of_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def scaled_copy_distance(x: np.ndarray, c: float) -> float:
    """FD(x, c x) by hand: means mu and c mu, covariances S and c² S, so (c - 1)² (|mu|² + tr S). Positive for
    c != 1, so unlike a set against itself (0, where the distance is clamped) it shows any error in the formula."""
    mu, sigma = x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])
    return (c - 1) ** 2 * (float(mu @ mu) + float(np.trace(sigma)))


def test_frechet_distance_of_a_set_with_itself_a_scaled_and_a_shifted_copy():
    x = gaussian(300, 5, 0, shift=0.3)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    for c in (0.9, 1.05):
        assert frechet_distance(x, c * x) == pytest.approx(scaled_copy_distance(x, c), rel=1e-9)
    shift = np.array([1.0, 0.0, -2.0, 0.5, 0.0])
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_frechet_distance_is_stable_for_singular_covariances():
    # 10 samples in 64 dimensions: rank-9 covariances, where a general sqrtm goes complex.
    x = gaussian(10, 64, 1)
    value = frechet_distance(x, x)
    assert math.isfinite(value) and value == pytest.approx(0.0, abs=1e-8)
    # The square roots of the 55 zero eigenvalues' rounding cost a few digits.
    assert frechet_distance(x, 1.1 * x) == pytest.approx(scaled_copy_distance(x, 1.1), rel=1e-4)
    assert frechet_distance(x, gaussian(10, 64, 2)) > 0


def test_frechet_distance_matches_scipy_sqrtm_and_torchmetrics():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    x, y = gaussian(400, 6, 3), gaussian(300, 6, 4, shift=0.4) * 1.5
    mu1, s1 = feature_stats(x)
    mu2, s2 = feature_stats(y)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    fid = pytest.importorskip("torchmetrics.image.fid")
    tensors = [torch.from_numpy(a) for a in (mu1, s1, mu2, s2)]
    assert frechet_distance(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(float(fid._compute_fid(*tensors)), rel=1e-9)


def test_feature_stats_match_numpy():
    x = gaussian(50, 3, 5)
    mu, sigma = feature_stats(torch.from_numpy(x).float())
    assert mu.dtype == np.float64 and sigma.shape == (3, 3)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float32), rowvar=False), rtol=1e-5)


# KID


def test_kid_on_two_points_by_hand():
    # d = 1, k(a, b) = (ab + 1)³. x = {0, 1}, y = {1, 2}:
    # within-set off-diagonal sums (1 + 1) + (27 + 27) over 2·1 = 28; cross sum 1 + 1 + 8 + 27 = 37, 2·37/4 = 18.5.
    result = kernel_inception_distance(np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]]), subsets=1, subset_size=2)
    assert result == {"kid_mean": pytest.approx(9.5, rel=1e-12), "kid_std": 0.0}


def test_kid_matches_torchmetrics_poly_mmd_on_whole_sets():
    kid = pytest.importorskip("torchmetrics.image.kid")
    x, y = gaussian(120, 7, 6), gaussian(120, 7, 7, shift=0.3)
    # One subset of all rows: a permutation of each set, which MMD does not see.
    ours = kernel_inception_distance(x, y, subsets=1, subset_size=120)["kid_mean"]
    theirs = float(kid.poly_mmd(torch.from_numpy(x), torch.from_numpy(y), degree=3, gamma=None, coef=1.0))
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_kid_separates_equal_from_shifted_distributions_and_is_seeded():
    x, same, shifted = gaussian(600, 4, 8), gaussian(600, 4, 9), gaussian(600, 4, 10, shift=0.5)
    equal = kernel_inception_distance(x, same, subsets=20, subset_size=200)
    different = kernel_inception_distance(x, shifted, subsets=20, subset_size=200)
    assert abs(equal["kid_mean"]) < 3 * equal["kid_std"] + 1e-3
    assert different["kid_mean"] > 10 * equal["kid_std"]
    again = [kernel_inception_distance(x, shifted, subsets=5, subset_size=100, seed=3) for _ in range(2)]
    assert again[0] == again[1]


def test_kid_subset_size_is_clipped_to_the_smaller_set():
    result = kernel_inception_distance(gaussian(30, 2, 0), gaussian(50, 2, 1), subsets=3)
    assert math.isfinite(result["kid_mean"])


# precision / recall / density / coverage


def test_manifold_metrics_by_hand():
    # k = 1. Real radii: 0 -> 1, 1 -> 1, 2 -> 1, 10 -> 8; fake radii: 19.5 each.
    real, fake = np.array([[0.0], [1.0], [2.0], [10.0]]), np.array([[0.5], [20.0]])
    # 0.5 lies in the balls of 0 and 1; 20 lies in none (10 away from 10, radius 8).
    assert precision_recall(real, fake, k=1) == {"precision": 0.5, "recall": 1.0}
    # density: (2 + 0) / 1 / 2 fakes; coverage: 0 and 1 have a fake within radius, 2 and 10 do not.
    assert density_coverage(real, fake, k=1) == {"density": 1.0, "coverage": 0.5}


@pytest.mark.parametrize("block", [7, 1024])
def test_manifold_metrics_match_prdc(monkeypatch, block):
    prdc = pytest.importorskip("prdc")
    monkeypatch.setattr(manifolds, "BLOCK", block)  # 7: many row blocks, also a ragged last one
    real, fake = gaussian(150, 5, 11), gaussian(110, 5, 12, shift=0.4)
    for k in (3, 5):
        theirs = prdc.compute_prdc(real, fake, nearest_k=k)
        ours = {**precision_recall(real, fake, k=k), **density_coverage(real, fake, k=k)}
        assert ours == pytest.approx({name: float(v) for name, v in theirs.items()}, abs=1e-12)


def test_identical_sets_have_full_precision_recall_and_coverage():
    x = gaussian(200, 3, 13)
    assert precision_recall(x, x.copy(), k=3) == {"precision": 1.0, "recall": 1.0}
    assert density_coverage(x, x.copy(), k=5)["coverage"] == 1.0


# class statistics


def test_class_stats_of_confident_predictions_on_two_of_four_classes():
    probabilities = np.eye(4)[[0, 0, 1, 1]]
    stats = class_stats(probabilities, np.full(4, 0.25))
    assert stats["classes_covered"] == 2
    assert stats["class_kl"] == pytest.approx(math.log(2))  # 2 x 0.5 log(0.5 / 0.25)
    assert stats["classifier_score"] == pytest.approx(2.0)  # exp(KL(one-hot || (0.5, 0.5, 0, 0))) = exp(log 2)


def test_class_stats_of_uninformative_predictions_scores_one():
    stats = class_stats(torch.full((10, 5), 0.2), np.full(5, 0.2))
    assert stats["classifier_score"] == pytest.approx(1.0)
    assert stats["classes_covered"] == 1  # argmax ties resolve to class 0


def test_class_stats_of_matching_histogram_has_zero_kl():
    labels = np.arange(100) % 10
    stats = class_stats(np.eye(10)[labels], class_histogram(labels, 10))
    assert stats == {"classes_covered": 10, "class_kl": pytest.approx(0.0, abs=1e-12), "classifier_score": pytest.approx(10.0)}


def test_class_stats_reject_unnormalised_input():
    with pytest.raises(GanforgeError, match="sum to 1"):
        class_stats(np.ones((3, 2)), np.array([0.5, 0.5]))
    with pytest.raises(GanforgeError, match="expected \\(2,\\)"):
        class_stats(np.eye(2), np.ones(3) / 3)


# Stacked MNIST modes


def test_stacked_mnist_every_triple_once_is_perfect():
    triples = np.array([[i // 100, i // 10 % 10, i % 10] for i in range(1000)])
    assert stacked_mnist_mode_stats(triples) == {"modes": 1000, "kl": pytest.approx(0.0, abs=1e-12), "channel_kl": [pytest.approx(0.0, abs=1e-12)] * 3}


def test_stacked_mnist_collapse_and_two_modes():
    assert stacked_mnist_mode_stats(torch.tensor([[1, 2, 3]] * 5)) == {
        "modes": 1, "kl": pytest.approx(math.log(1000)), "channel_kl": [pytest.approx(math.log(10))] * 3,
    }
    stats = stacked_mnist_mode_stats(np.array([[0, 0, 0]] * 3 + [[9, 9, 9]]))
    p = np.array([0.75, 0.25])
    assert stats == {
        "modes": 2, "kl": pytest.approx(float(np.sum(p * np.log(p * 1000)))), "channel_kl": [pytest.approx(float(np.sum(p * np.log(p * 10))))] * 3,
    }


def test_stacked_mnist_kl_is_the_channel_kls_plus_their_dependence():
    """Independent channels: kl == sum(channel_kl) up to sampling; digits copied across channels:
    each channel is uniform (channel_kl 0) yet only 10 triples appear (kl = log 100)."""
    rng = np.random.default_rng(0)
    weights = np.array([3, 1, 1, 1, 1, 1, 1, 1, 1, 1]) / 12
    independent = stacked_mnist_mode_stats(rng.choice(10, size=(400_000, 3), p=weights))
    assert independent["kl"] == pytest.approx(sum(independent["channel_kl"]), abs=3e-3)
    assert independent["channel_kl"] == [pytest.approx(float(np.sum(weights * np.log(weights * 10))), abs=3e-3)] * 3
    copied = stacked_mnist_mode_stats(np.repeat(np.arange(10), 30)[:, None].repeat(3, 1))
    assert copied == {"modes": 10, "kl": pytest.approx(math.log(100)), "channel_kl": [pytest.approx(0.0, abs=1e-12)] * 3}


# validation


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: frechet_distance(np.zeros(5), np.zeros((5, 1))), "expected \\(samples, features\\)"),
        (lambda: frechet_distance(np.zeros((1, 2)), np.zeros((5, 2))), "at least 2"),
        (lambda: frechet_distance(np.zeros((3, 2)), np.zeros((3, 3))), "same feature extractor"),
        (lambda: kernel_inception_distance(np.array([[0.0], [np.nan]]), np.zeros((2, 1))), "NaN or Inf"),
        (lambda: precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3), "at least 4"),
        (lambda: density_coverage(np.zeros((10, 2)), np.zeros((10, 2)), k=0), "k=0"),
        (lambda: stacked_mnist_mode_stats(np.array([[0, 1, 10]])), "0..9"),
    ],
)
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(GanforgeError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
