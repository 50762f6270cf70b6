"""The latent sampler: shape, dtype, device, distributions, seeding, errors and checkpointable state."""

from __future__ import annotations

import math

import pytest
import torch

from ganforge import NoiseSampler
from ganforge.errors import GanforgeError

N = 200_000  # draws per statistic; standard error of a mean ~ 0.002, so 5-sigma bounds are tight yet safe


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
@pytest.mark.parametrize("latent_dim", [1, 7])
def test_shape_dtype_and_device(distribution, latent_dim):
    z = NoiseSampler(latent_dim, distribution, device="cpu", seed=3).sample(5)
    assert z.shape == (5, latent_dim)
    assert z.dtype == torch.float32
    assert z.device == torch.device("cpu")
    assert torch.isfinite(z).all()


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_same_seed_same_noise_different_seed_different_noise(distribution):
    a = NoiseSampler(4, distribution, seed=11)
    b = NoiseSampler(4, distribution, seed=11)
    c = NoiseSampler(4, distribution, seed=12)
    first = a(10)
    assert torch.equal(first, b(10))
    assert not torch.equal(first, c(10))
    second = a.sample(10)
    assert not torch.equal(first, second), "successive draws must differ"
    assert torch.equal(second, b(10)), "__call__ and sample draw from the same stream"


def test_sampler_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    NoiseSampler(2, seed=5).sample(100)
    assert torch.equal(torch.rand(3), expected)


def test_uniform_is_on_minus_one_one_with_mean_zero_and_variance_one_third():
    z = NoiseSampler(2, "uniform", seed=0).sample(N // 2).double()
    assert z.min() >= -1 and z.max() <= 1
    assert z.min() < -0.999 and z.max() > 0.999, "the whole interval is covered"
    se_mean = math.sqrt(1 / 3 / N)
    assert abs(z.mean().item()) < 5 * se_mean
    assert abs(z.var().item() - 1 / 3) < 0.005
    # each coordinate uniform: a quarter of the mass in each quarter of [-1, 1]
    counts = torch.histc(z.flatten().float(), bins=4, min=-1, max=1) / z.numel()
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.005)


def test_normal_has_mean_zero_identity_covariance_and_gaussian_tails():
    z = NoiseSampler(3, "normal", seed=0).sample(N).double()
    assert z.mean(0).abs().max().item() < 5 / math.sqrt(N)
    covariance = torch.cov(z.T)
    assert torch.allclose(covariance, torch.eye(3, dtype=torch.float64), atol=0.015)
    beyond_two_sigma = (z.abs() > 2).double().mean().item()
    assert beyond_two_sigma == pytest.approx(0.0455, abs=0.003)


@pytest.mark.parametrize("latent_dim", [0, -3, 2.5, "8", None])
def test_invalid_latent_dim_raises(latent_dim):
    with pytest.raises(GanforgeError, match=rf"latent_dim={latent_dim!r}.*integer >= 1"):
        NoiseSampler(latent_dim)


@pytest.mark.parametrize("distribution", ["gaussian", "Normal", ""])
def test_invalid_distribution_raises(distribution):
    with pytest.raises(GanforgeError, match=rf"noise={distribution!r}.*normal, uniform"):
        NoiseSampler(4, distribution)


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_state_dict_round_trip_continues_identically(distribution):
    original = NoiseSampler(5, distribution, seed=1)
    original(17)
    state = original.state_dict()
    continuation = original(8)
    more = original(8)

    restored = NoiseSampler(5, distribution, seed=999)  # different seed: the state must win
    restored.load_state_dict(state)
    assert torch.equal(restored(8), continuation)
    assert torch.equal(restored(8), more)
    # The saved state is a snapshot, not a live view of the RNG.
    original.load_state_dict(state)
    assert torch.equal(original(8), continuation)


def test_state_survives_torch_save(tmp_path):
    sampler = NoiseSampler(2, seed=4)
    sampler(3)
    torch.save(sampler.state_dict(), tmp_path / "noise.pt")
    expected = sampler(6)
    restored = NoiseSampler(2)
    restored.load_state_dict(torch.load(tmp_path / "noise.pt", weights_only=True))
    assert torch.equal(restored(6), expected)
