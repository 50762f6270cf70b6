"""Mode coverage metrics on the 2D mixtures (ganforge.metrics.mixture_mode_stats) on hand-built samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganforge.data.toy import mixture_modes
from ganforge.metrics import mixture_mode_stats


@pytest.fixture
def ring():
    return mixture_modes("ring8")


def test_samples_spread_over_every_mode_score_perfectly(ring):
    modes, std = ring
    samples = modes.repeat(10, 1) + 0.5 * std  # every mode, 10 times, well within 3 std
    stats = mixture_mode_stats(samples, modes, std)
    assert stats == {"modes": 8, "hq_percent": 100.0, "reverse_kl": pytest.approx(0.0, abs=1e-12), "spread": pytest.approx(1.0, abs=0.01)}


def test_collapse_onto_one_mode_has_reverse_kl_log_k(ring):
    modes, std = ring
    stats = mixture_mode_stats(modes[:1].repeat(50, 1), modes, std)
    assert stats["modes"] == 1 and stats["hq_percent"] == 100.0
    assert stats["reverse_kl"] == pytest.approx(math.log(8))


def test_two_modes_in_ratio_three_to_one(ring):
    modes, std = ring
    samples = torch.cat([modes[:1].repeat(30, 1), modes[1:2].repeat(10, 1), torch.full((40, 2), 5.0)])
    stats = mixture_mode_stats(samples, modes, std)
    p = np.array([0.75, 0.25])
    assert stats["modes"] == 2
    assert stats["hq_percent"] == pytest.approx(50.0)
    assert stats["reverse_kl"] == pytest.approx(float(np.sum(p * np.log(p * 8))))


def test_spread_is_one_for_real_data_and_near_zero_for_a_point_anywhere():
    from ganforge.data.toy import load_mixture

    data = load_mixture("ring8", n=5000)
    modes, std = mixture_modes("ring8")
    assert mixture_mode_stats(data.samples, modes, std)["spread"] == pytest.approx(1.0, abs=0.03)
    point = torch.full((100, 2), 0.3) + 0.01 * torch.randn(100, 2)  # between the modes, near the centre
    assert mixture_mode_stats(point, modes, std)["spread"] < 0.02
    halved = mixture_mode_stats(0.5 * data.samples, modes, std)["spread"]
    assert halved == pytest.approx(0.5, abs=0.03)


def test_high_quality_threshold_is_three_standard_deviations():
    modes, std = torch.zeros(1, 2), 0.1
    inside, outside = torch.tensor([[0.29, 0.0]]), torch.tensor([[0.31, 0.0]])
    assert mixture_mode_stats(inside, modes, std)["hq_percent"] == 100.0
    assert mixture_mode_stats(outside, modes, std) == {"modes": 0, "hq_percent": 0.0, "reverse_kl": 0.0, "spread": 0.0}


def test_no_high_quality_samples(ring):
    modes, std = ring
    stats = mixture_mode_stats(np.full((20, 2), 3.0), modes.numpy(), std)
    assert stats == {"modes": 0, "hq_percent": 0.0, "reverse_kl": pytest.approx(math.log(8)), "spread": 0.0}


def test_real_data_covers_all_25_grid_modes():
    from ganforge.data.toy import load_mixture

    data = load_mixture("grid25", n=5000)
    stats = mixture_mode_stats(data.samples, data.modes, data.mode_std)
    assert stats["modes"] == 25
    assert stats["hq_percent"] > 98.0  # 3 std in 2D holds ~98.9 % of a Gaussian
    assert stats["reverse_kl"] < 0.02
