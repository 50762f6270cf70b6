"""The two training steps of a GAN: the generator step and the discriminator step.

Both work with any generator/discriminator `nn.Module`s and optimizers. The player that is
not being trained is frozen for the whole step (`frozen`): no gradient is computed or
stored for its parameters, and its parameters and buffers are bit-identical afterwards.
Both steps return detached tensors; reading them (`.item()`) is left to the caller, so a
step never waits for the device.

Mixed precision enters as two arguments, so the step bodies read the same at any precision:
`autocast` (a `torch.autocast` context, or `nullcontext()` for fp32) wraps the networks'
forward passes, while losses and penalties are computed in fp32 outside it; `scaler` (a
`torch.amp.GradScaler`, fp16 only) scales the loss before backward and unscales the
gradients before the update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ganforge.losses import GanLoss, gradient_penalty, mode_seeking, r1_penalty, r2_penalty

NoiseFn = Callable[[int], Tensor]
FP32 = nullcontext()  # no autocast: the networks run in fp32


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
def _put_back(kept: list[tuple[Tensor, Tensor]], applied: Tensor | None) -> None:
    """Restores the kept buffers where the update was not `applied` (a device flag: no host wait)."""
    if applied is None:
        return
    for buffer, value in kept:
        buffer.copy_(torch.where(applied, buffer, value))


@dataclass
class StepResult:
    """Detached per-step results on the training device.

    `applied` is a boolean device tensor saying whether the optimizer stepped, or None when
    no check was made (the update was applied). `stepped` reads it as a bool, which waits for
    the device; the training loop reads `applied` only at log intervals.
    """

    loss: Tensor
    real_logits: Tensor | None
    fake_logits: Tensor
    applied: Tensor | None = None

    @property
    def stepped(self) -> bool:
        return self.applied is None or bool(self.applied)


def all_finite(loss: Tensor, optimizer: torch.optim.Optimizer) -> Tensor:
    """A boolean device tensor: True when `loss` and every gradient of `optimizer`'s parameters are finite."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norms = torch._foreach_norm(grads) if grads else []
    return torch.isfinite(torch.stack([loss.detach().float(), *[n.float() for n in norms]])).all()


def apply_update(
    optimizer: torch.optim.Optimizer,
    loss: Tensor,
    skip_nonfinite: bool = False,
    scaler: torch.amp.GradScaler | None = None,
) -> Tensor | None:
    """`optimizer.step()`, unless the loss or a gradient holds NaN/Inf and the step is to be skipped.

    A step is skipped on NaN/Inf when `skip_nonfinite`, and always with an fp16 `scaler`
    (whose loss scale is then lowered, as GradScaler does). Returns a boolean device tensor
    (whether the optimizer stepped), or None when nothing was checked.

    Optimizers that accept a `found_inf` flag (fused Adam, the way GradScaler drives them)
    skip on the device, so the step never waits for it; any other optimizer reads the flag
    on the host (one synchronisation per step).
    """
    if scaler is not None:
        scaler.unscale_(optimizer)  # true-scale gradients; records an overflow for scaler.update()
    if not (skip_nonfinite or scaler is not None):
        optimizer.step()
        return None
    applied = all_finite(loss, optimizer)
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = (~applied).float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif bool(applied):
        optimizer.step()
    if scaler is not None:
        scaler.update()
    return applied


def generator_step(
    generator: nn.Module,
    discriminator: nn.Module,
    g_optimizer: torch.optim.Optimizer,
    loss: GanLoss,
    noise: NoiseFn,
    batch_size: int,
    skip_nonfinite: bool = False,
    autocast: AbstractContextManager = FP32,
    scaler: torch.amp.GradScaler | None = None,
    real: Tensor | None = None,
    diversity: float = 0.0,
    classes: Tensor | None = None,
) -> StepResult:
    """One generator update against a frozen discriminator.

    `real` is a real batch of `batch_size` samples, needed when the loss compares D(G(z)) with
    D(x) (`loss.needs_real`, the relativistic loss) and ignored otherwise. `diversity` weighs
    the mode-seeking term (`losses.mode_seeking`) added to G's loss, over pairs of samples of
    one class where `classes` (the labels `generator` is bound to) is given. With
    `skip_nonfinite`, an update whose loss or gradients hold NaN/Inf is skipped and the
    generator is left exactly as it was, buffers included.
    """
    if loss.needs_real and real is None:
        raise ValueError(f"loss={loss.name!r} compares generated with real samples: generator_step needs a real batch")
    kept = _keep_buffers(generator, skip_nonfinite or scaler is not None)
    with frozen(discriminator):
        z = noise(batch_size)  # 1. sample random input, (batch, latent_dim)
        with autocast:
            fake = generator(z)  # 2. the generator turns noise into data instances
            fake_logits = discriminator(fake).float()  # 3. the discriminator classifies them (and, to compare, the reals)
            real_logits = discriminator(real).float() if loss.needs_real else None
        g_loss = loss.generator(fake_logits, real_logits)  # 4. penalise G for not fooling D
        if diversity:  # (and, asked to, for samples alike though their noise differs)
            g_loss = g_loss + diversity * mode_seeking(z, fake.float(), classes)
        g_optimizer.zero_grad(set_to_none=True)
        (scaler.scale(g_loss) if scaler else g_loss).backward()  # 5. backpropagate through D (no weight grads) into G
        applied = apply_update(g_optimizer, g_loss, skip_nonfinite, scaler)  # 6. update only the generator's weights
    _put_back(kept, applied)
    real_logits = real_logits.detach() if real_logits is not None else None
    return StepResult(g_loss.detach(), real_logits, fake_logits.detach(), applied)


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
    autocast: AbstractContextManager = FP32,
    scaler: torch.amp.GradScaler | None = None,
    penalty_discriminator: nn.Module | None = None,
    r2_gamma: float = 0.0,
) -> StepResult:
    """One discriminator update on a real batch and a generated batch of the same size.

    `gp_weight` adds the WGAN-GP penalty, `r1_gamma` the R1 penalty on real data and
    `r2_gamma` the R2 penalty on generated data (each times gamma / 2);
    `skip_nonfinite` skips the update when the loss or a gradient holds NaN/Inf, leaving the
    discriminator exactly as it was, buffers included.
    The generator is frozen and run without a graph: it receives no gradient and is unchanged.
    Penalties differentiate the discriminator twice, in fp32, through `penalty_discriminator`
    (default: `discriminator`; a compiled network cannot be differentiated twice).
    """
    kept = _keep_buffers(discriminator, skip_nonfinite or scaler is not None)
    with frozen(generator), torch.no_grad(), autocast:
        fake = generator(noise(real.shape[0])).float()
    with autocast:
        real_logits = discriminator(real).float()
        fake_logits = discriminator(fake).float()
    d_loss = loss.discriminator(real_logits, fake_logits)
    critic = penalty_discriminator or discriminator
    if gp_weight:
        d_loss = d_loss + gp_weight * gradient_penalty(critic, real, fake)
    if r1_gamma:
        d_loss = d_loss + 0.5 * r1_gamma * r1_penalty(critic, real)
    if r2_gamma:
        d_loss = d_loss + 0.5 * r2_gamma * r2_penalty(critic, fake)
    d_optimizer.zero_grad(set_to_none=True)
    (scaler.scale(d_loss) if scaler else d_loss).backward()
    applied = apply_update(d_optimizer, d_loss, skip_nonfinite, scaler)
    _put_back(kept, applied)
    return StepResult(d_loss.detach(), real_logits.detach(), fake_logits.detach(), applied)
