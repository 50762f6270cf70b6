"""GAN losses and discriminator penalties against their closed forms, computed independently in float64.

The references use only `math`/numpy: log sigmoid written out by hand (in its stable
two-branch form), so a wrong sign, a missing mean or an unstable softplus shows up.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ganforge import LOSSES, get_loss
from ganforge.errors import GanforgeError
from ganforge.losses import gradient_penalty, r1_penalty


def log_sigmoid(x: float) -> float:
    """log(1 / (1 + e^-x)), without overflow for any x."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def log_one_minus_sigmoid(x: float) -> float:
    """log(1 - sigmoid(x)) = log sigmoid(-x)."""
    return log_sigmoid(-x)


def mean(values) -> float:
    values = list(values)
    return math.fsum(values) / len(values)


def reference_generator(name: str, f: list[float]) -> float:
    if name == "minimax":
        return mean(log_one_minus_sigmoid(x) for x in f)
    if name == "nonsaturating":
        return mean(-log_sigmoid(x) for x in f)
    if name in ("wasserstein", "hinge"):
        return -mean(f)
    if name == "least_squares":
        return 0.5 * mean((x - 1) ** 2 for x in f)
    raise ValueError(name)


def reference_discriminator(name: str, r: list[float], f: list[float]) -> float:
    if name in ("minimax", "nonsaturating"):
        return mean(-log_sigmoid(x) for x in r) + mean(-log_one_minus_sigmoid(x) for x in f)
    if name == "wasserstein":
        return mean(f) - mean(r)
    if name == "hinge":
        return mean(max(0.0, 1 - x) for x in r) + mean(max(0.0, 1 + x) for x in f)
    if name == "least_squares":
        return 0.5 * mean((x - 1) ** 2 for x in r) + 0.5 * mean(x**2 for x in f)
    raise ValueError(name)


NAMES = ["minimax", "nonsaturating", "wasserstein", "hinge", "least_squares"]
# Hand-picked logits: around 0, moderate, and far in both tails, where a naive log(sigmoid) is -inf/nan.
REAL = [-120.0, -30.0, -2.5, -0.3, 0.0, 0.7, 3.0, 45.0, 1e4]
FAKE = [-1e4, -60.0, -4.0, -1.0, 0.2, 0.9, 2.0, 25.0, 300.0]


def test_the_losses_are_registered():
    assert sorted(LOSSES) == sorted([*NAMES, "relativistic"])  # relativistic: tests/test_recipe.py
    assert {name for name, loss in LOSSES.items() if loss.probabilistic} == {"minimax", "nonsaturating"}
    assert get_loss("hinge") is LOSSES["hinge"]


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(GanforgeError, match="loss='hinged'.*nonsaturating"):
        get_loss("hinged")


def test_log_sigmoid_reference_agrees_with_naive_formula_where_that_is_accurate():
    for x in (-15.0, -3.0, -0.5, 0.0, 0.5, 3.0, 15.0):
        assert log_sigmoid(x) == pytest.approx(math.log(1 / (1 + math.exp(-x))), rel=1e-12, abs=1e-15)
        assert log_one_minus_sigmoid(x) == pytest.approx(math.log(1 - 1 / (1 + math.exp(-x))), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_loss_matches_closed_form_on_hand_picked_logits_including_huge_ones(name):
    loss = LOSSES[name]
    real = torch.tensor(REAL, requires_grad=True)
    fake = torch.tensor(FAKE, requires_grad=True)
    g_value, d_value = loss.generator(fake), loss.discriminator(real, fake)
    assert g_value.dim() == 0 and d_value.dim() == 0
    assert g_value.item() == pytest.approx(reference_generator(name, FAKE), rel=1e-5)
    assert d_value.item() == pytest.approx(reference_discriminator(name, REAL, FAKE), rel=1e-5)
    # Stable: finite values and finite gradients even at |logit| = 1e4.
    (g_value + d_value).backward()
    assert torch.isfinite(real.grad).all() and torch.isfinite(fake.grad).all()


@pytest.mark.parametrize("name", ["minimax", "nonsaturating"])
def test_probabilistic_losses_at_logit_zero_are_log_two(name):
    """D(x) = 1/2 everywhere: D loss = 2 log 2; G loss = -log 2 (minimax) or log 2 (nonsaturating)."""
    zeros = torch.zeros(5)
    loss = LOSSES[name]
    assert loss.discriminator(zeros, zeros).item() == pytest.approx(2 * math.log(2))
    assert loss.generator(zeros).item() == pytest.approx(math.log(2) * (-1 if name == "minimax" else 1))


def test_nonsaturating_generator_gradient_does_not_vanish_when_discriminator_wins():
    """At a very negative fake logit (D sure it is fake) the minimax G gradient vanishes, the nonsaturating one is -1/n."""
    fake = torch.full((4,), -40.0, requires_grad=True)
    LOSSES["nonsaturating"].generator(fake).backward()
    assert fake.grad.tolist() == pytest.approx([-0.25] * 4)
    fake.grad = None
    LOSSES["minimax"].generator(fake).backward()
    assert fake.grad.abs().max().item() < 1e-15


logit_lists = st.lists(st.floats(-60, 60, allow_nan=False, width=32), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(real=logit_lists, fake=logit_lists)
def test_losses_match_closed_forms_on_random_logits(real, fake):
    for name in NAMES:
        loss = LOSSES[name]
        g = loss.generator(torch.tensor(fake)).item()
        d = loss.discriminator(torch.tensor(real), torch.tensor(fake)).item()
        assert g == pytest.approx(reference_generator(name, fake), rel=1e-4, abs=1e-4), name
        assert d == pytest.approx(reference_discriminator(name, real, fake), rel=1e-4, abs=1e-4), name


# --- penalties ----------------------------------------------------------------------------


class Linear(nn.Module):
    """D(x) = w . flatten(x): the input gradient is w for every sample."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        return x.flatten(1) @ self.w


class HalfSquaredNorm(nn.Module):
    """D(x) = |x|^2 / 2: the input gradient is x itself."""

    def forward(self, x):
        return 0.5 * x.flatten(1).pow(2).sum(1)


@pytest.mark.parametrize("shape", [(6, 3), (4, 1, 2, 2)])
def test_penalties_on_a_linear_discriminator_are_closed_form(shape):
    torch.manual_seed(0)
    dim = math.prod(shape[1:])
    w = torch.linspace(-1.0, 2.0, dim)
    d = Linear(w)
    real, fake = torch.randn(shape), torch.randn(shape)
    norm = float(np.linalg.norm(w.numpy().astype(np.float64)))

    gp = gradient_penalty(d, real, fake)
    r1 = r1_penalty(d, real)
    assert gp.item() == pytest.approx((norm - 1) ** 2, rel=1e-5)
    assert r1.item() == pytest.approx(norm**2, rel=1e-5)
    # The penalties stay in the graph so that they train D: d gp / dw = 2 (|w| - 1) w / |w|, d r1 / dw = 2 w.
    (grad_gp,) = torch.autograd.grad(gp, d.w)
    (grad_r1,) = torch.autograd.grad(r1, d.w)
    np.testing.assert_allclose(grad_gp.numpy(), 2 * (norm - 1) * w.numpy() / norm, rtol=1e-5)
    np.testing.assert_allclose(grad_r1.numpy(), 2 * w.numpy(), rtol=1e-5)


def test_gradient_penalty_is_zero_for_a_unit_norm_critic():
    d = Linear(torch.tensor([0.6, 0.8]))
    assert gradient_penalty(d, torch.randn(5, 2), torch.randn(5, 2)).item() == pytest.approx(0.0, abs=1e-12)


def test_penalties_on_a_quadratic_discriminator_use_the_interpolates_and_real_data():
    """grad D(x) = x: R1 = mean |real|^2, GP = mean (|fake + alpha (real - fake)| - 1)^2 with seeded alpha."""
    torch.manual_seed(1)
    real, fake = torch.randn(7, 3) * 2, torch.randn(7, 3)
    gp = gradient_penalty(HalfSquaredNorm(), real, fake, rng=torch.Generator().manual_seed(42))
    alpha = torch.rand((7, 1), generator=torch.Generator().manual_seed(42)).numpy().astype(np.float64)
    r, f = real.numpy().astype(np.float64), fake.numpy().astype(np.float64)
    x_hat = f + alpha * (r - f)
    assert gp.item() == pytest.approx(np.mean((np.linalg.norm(x_hat, axis=1) - 1) ** 2), rel=1e-5)
    assert r1_penalty(HalfSquaredNorm(), real).item() == pytest.approx(np.mean(np.sum(r**2, axis=1)), rel=1e-5)
    assert 0 < alpha.min() and alpha.max() < 1 and alpha.std() > 0.05, "one alpha per sample, spread over (0, 1)"


def test_penalties_leave_inputs_untouched():
    real, fake = torch.randn(4, 2), torch.randn(4, 2)
    copies = real.clone(), fake.clone()
    d = Linear(torch.tensor([1.0, 2.0]))
    gradient_penalty(d, real, fake)
    r1_penalty(d, real)
    assert torch.equal(real, copies[0]) and torch.equal(fake, copies[1])
    assert not real.requires_grad and real.grad is None
