"""GAN losses on discriminator logits, and the discriminator's gradient penalties.

Every loss maps logits to a scalar that its player minimises:
`generator(fake_logits, real_logits)` and `discriminator(real_logits, fake_logits)`. Only the
relativistic loss reads the generator's `real_logits` (`needs_real`); the others take None. For the
probability-based losses D(x) = sigmoid(logit); log-sigmoid terms are computed with
softplus, which is exact and stable for any logit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.errors import GanforgeError


@dataclass(frozen=True)
class GanLoss:
    name: str
    generator: Callable[[Tensor, Tensor | None], Tensor]
    discriminator: Callable[[Tensor, Tensor], Tensor]
    # True when D(x) = sigmoid(logit) is a probability; else the logit is a critic score.
    probabilistic: bool
    # True when the generator's loss compares D(G(z)) with D(x), so its step needs a real batch.
    needs_real: bool = False
    # True when only differences of logits mean something (a critic, a relativistic D): a logit's
    # sign alone says nothing of how D judged it.
    relative: bool = False


def _d_cross_entropy(real: Tensor, fake: Tensor) -> Tensor:
    # -log D(x) - log(1 - D(G(z))), with -log sigmoid(t) = softplus(-t), -log(1 - sigmoid(t)) = softplus(t).
    return F.softplus(-real).mean() + F.softplus(fake).mean()


LOSSES = {
    loss.name: loss
    for loss in (
        # Original saturating form: G minimises log(1 - D(G(z))) = -softplus(fake).
        GanLoss("minimax", lambda fake, real=None: -F.softplus(fake).mean(), _d_cross_entropy, True),
        # G minimises -log D(G(z)) = softplus(-fake): strong gradients when D wins.
        GanLoss("nonsaturating", lambda fake, real=None: F.softplus(-fake).mean(), _d_cross_entropy, True),
        GanLoss("wasserstein", lambda fake, real=None: -fake.mean(), lambda real, fake: fake.mean() - real.mean(), False, relative=True),
        GanLoss(
            "hinge",
            lambda fake, real=None: -fake.mean(),
            lambda real, fake: F.relu(1 - real).mean() + F.relu(1 + fake).mean(),
            False,
        ),
        # LSGAN with targets a=0 (fake), b=1 (real) for D and c=1 for G.
        GanLoss(
            "least_squares",
            lambda fake, real=None: 0.5 * (fake - 1).pow(2).mean(),
            lambda real, fake: 0.5 * (real - 1).pow(2).mean() + 0.5 * fake.pow(2).mean(),
            False,
        ),
        # Relativistic pairing (RpGAN, as in R3GAN): each real sample is paired with a generated one, and D
        # learns by how much the real one scores higher; G minimises the mirror image. Pairs are row i of
        # each batch, so real and fake logits must have the same length.
        GanLoss(
            "relativistic",
            lambda fake, real: F.softplus(-(fake - real)).mean(),
            lambda real, fake: F.softplus(-(real - fake)).mean(),
            False,
            needs_real=True,
            relative=True,
        ),
    )
}


def get_loss(name: str) -> GanLoss:
    if name not in LOSSES:
        raise GanforgeError(f"loss={name!r} is not a GAN loss: expected one of {', '.join(LOSSES)}")
    return LOSSES[name]


def _input_gradient(discriminator: nn.Module, x: Tensor) -> Tensor:
    """d(sum of logits)/dx, shape of x, kept in the graph so a penalty on it trains D."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    return grad


def gradient_penalty(discriminator: nn.Module, real: Tensor, fake: Tensor, rng: torch.Generator | None = None) -> Tensor:
    """WGAN-GP: E[(||grad D(x_hat)||_2 - 1)^2] at random interpolates of real and fake."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    alpha = torch.rand(shape, device=real.device, generator=rng)
    grad = _input_gradient(discriminator, torch.lerp(fake.detach(), real.detach(), alpha))
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def r1_penalty(discriminator: nn.Module, real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): E[||grad D(x)||_2^2] on real data, to be scaled by gamma / 2."""
    return _input_gradient(discriminator, real).flatten(1).pow(2).sum(dim=1).mean()


def mode_seeking(z: Tensor, fake: Tensor, classes: Tensor | None = None) -> Tensor:
    """MSGAN's mode-seeking term (Mao et al. 2019), for the generator's loss.

    For each pair of generated samples, the ratio of how far apart they are to how far apart
    their noise is (mean absolute differences); the term is the mean of 1 / ratio over the
    pairs, so it is large where G maps different noise to nearly the same sample. With
    `classes` (the labels or clusters G was given) only pairs of one class count; 0 when
    no pair shares one.
    """
    n = z.shape[0]
    pairs = ~torch.eye(n, dtype=torch.bool, device=z.device)
    if classes is not None:
        pairs &= classes[:, None] == classes[None, :]
    flat, noise = fake.reshape(n, -1), z.float()
    samples_apart = torch.cdist(flat, flat, p=1) / flat.shape[1]
    noise_apart = torch.cdist(noise, noise, p=1) / noise.shape[1]
    ratio = samples_apart[pairs] / noise_apart[pairs]
    return (1.0 / (ratio + 1e-5)).mean() if ratio.numel() else fake.new_zeros(())


def r2_penalty(discriminator: nn.Module, fake: Tensor) -> Tensor:
    """R2: the same squared gradient norm on generated data, E[||grad D(G(z))||_2^2], scaled by gamma / 2.

    With R1 it keeps D smooth around both distributions, which R3GAN shows makes the
    relativistic loss converge locally.
    """
    return _input_gradient(discriminator, fake).flatten(1).pow(2).sum(dim=1).mean()
