"""The two training steps of a GAN: the generator step and the discriminator step.

Both work with any generator/discriminator `nn.Module`s and optimizers. The player that is
not being trained is frozen for the whole step (`frozen`): no gradient is computed or
stored for its parameters, and its parameters and buffers are bit-identical afterwards.
Both steps return detached tensors; reading them (`.item()`) is left to the caller, so a
step never waits for the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ganforge.losses import GanLoss, gradient_penalty, r1_penalty

NoiseFn = Callable[[int], Tensor]


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Freezes `module` for the block: requires_grad off, buffers restored on exit.

    Gradients still flow *through* a frozen module to its inputs; none are computed for its
    weights. The module stays in its current train/eval mode, so it computes exactly what
    it would otherwise (e.g. BatchNorm on batch statistics in training), but any buffer it
    updates while running (BatchNorm running statistics, spectral-norm vectors) is put
    back bit for bit.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    buffers = [(b, b.clone()) for b in module.buffers()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def _keep_buffers(module: nn.Module, enabled: bool) -> list[tuple[Tensor, Tensor]]:
    """A copy of `module`'s buffers, to put back if its update is skipped (empty when not `enabled`)."""
    return [(b, b.clone()) for b in module.buffers()] if enabled else []


@torch.no_grad()
def _put_back(kept: list[tuple[Tensor, Tensor]]) -> None:
    for buffer, value in kept:
        buffer.copy_(value)


@dataclass
class StepResult:
    """Detached per-step results on the training device, and whether the optimizer stepped."""

    loss: Tensor
    real_logits: Tensor | None
    fake_logits: Tensor
    stepped: bool = True


def apply_update(optimizer: torch.optim.Optimizer, loss: Tensor, skip_nonfinite: bool = False) -> bool:
    """`optimizer.step()`, unless `skip_nonfinite` and the loss or a gradient holds NaN/Inf.

    Returns whether the optimizer stepped. The check reads one flag from the device (a host
    synchronisation per step), which is the price of never applying a non-finite update.
    """
    if skip_nonfinite:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms = torch._foreach_norm(grads) if grads else []
        if not torch.isfinite(torch.stack([loss.detach().float(), *[n.float() for n in norms]])).all():
            return False
    optimizer.step()
    return True


def generator_step(
    generator: nn.Module,
    discriminator: nn.Module,
    g_optimizer: torch.optim.Optimizer,
    loss: GanLoss,
    noise: NoiseFn,
    batch_size: int,
    skip_nonfinite: bool = False,
) -> StepResult:
    """One generator update against a frozen discriminator.

    With `skip_nonfinite`, an update whose loss or gradients hold NaN/Inf is skipped and the
    generator is left exactly as it was, buffers included.
    """
    kept = _keep_buffers(generator, skip_nonfinite)
    with frozen(discriminator):
        z = noise(batch_size)  # 1. sample random input, (batch, latent_dim)
        fake = generator(z)  # 2. the generator turns noise into data instances
        fake_logits = discriminator(fake)  # 3. the discriminator classifies them
        g_loss = loss.generator(fake_logits)  # 4. penalise G for not fooling D
        g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()  # 5. backpropagate through D (no weight grads) into G
        stepped = apply_update(g_optimizer, g_loss, skip_nonfinite)  # 6. update only the generator's weights
    if not stepped:
        _put_back(kept)
    return StepResult(g_loss.detach(), None, fake_logits.detach(), stepped)


def discriminator_step(
    generator: nn.Module,
    discriminator: nn.Module,
    d_optimizer: torch.optim.Optimizer,
    loss: GanLoss,
    noise: NoiseFn,
    real: Tensor,
    gp_weight: float = 0.0,
    r1_gamma: float = 0.0,
    skip_nonfinite: bool = False,
) -> StepResult:
    """One discriminator update on a real batch and a generated batch of the same size.

    `gp_weight` adds the WGAN-GP penalty, `r1_gamma` the R1 penalty (times gamma / 2);
    `skip_nonfinite` skips the update when the loss or a gradient holds NaN/Inf, leaving the
    discriminator exactly as it was, buffers included.
    The generator is frozen and run without a graph: it receives no gradient and is unchanged.
    """
    kept = _keep_buffers(discriminator, skip_nonfinite)
    with frozen(generator), torch.no_grad():
        fake = generator(noise(real.shape[0]))
    real_logits = discriminator(real)
    fake_logits = discriminator(fake)
    d_loss = loss.discriminator(real_logits, fake_logits)
    if gp_weight:
        d_loss = d_loss + gp_weight * gradient_penalty(discriminator, real, fake)
    if r1_gamma:
        d_loss = d_loss + 0.5 * r1_gamma * r1_penalty(discriminator, real)
    d_optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    stepped = apply_update(d_optimizer, d_loss, skip_nonfinite)
    if not stepped:
        _put_back(kept)
    return StepResult(d_loss.detach(), real_logits.detach(), fake_logits.detach(), stepped)
