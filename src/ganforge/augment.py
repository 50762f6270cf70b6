"""Differentiable augmentation for the discriminator (DiffAugment, Zhao et al. 2020).

On small image sets an un-augmented discriminator memorises the training images and wins,
and the generator stops learning. DiffAugment shows D only augmented images, real and
generated alike, in both training steps; every operation is differentiable in the image, so
the generator's gradient passes through the augmentation. Each call draws fresh parameters
per sample from its own seeded RNG (part of the checkpoint), so real and generated batches
are augmented by the same random process and a resumed run draws the same augmentations.

With an adaptive probability (ADA, Karras et al. 2020), each operation is applied to each
sample with probability p instead of always. p starts at 0 and follows an overfitting signal:
how surely D tells the real images it trains on from generated ones. It rises while that
signal is above a target and falls while it is below, so a discriminator that is not
memorising sees few augmented images, and one that is sees more. A relativistic or
Wasserstein discriminator's logits mean nothing alone (only differences do), so for those the
signal compares each real image's logit with its generated pair's, not with zero.

Images are (batch, channels, h, w) in the model's [-1, 1] space.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ganforge.errors import GanforgeError

AUGMENTATIONS = ("translation", "cutout", "color")
TRANSLATION_RATIO = 0.125  # shifts of up to 1/8 of the side, in whole pixels, zero padded (DiffAugment's)
CUTOUT_RATIO = 0.5  # a zeroed square of half the side (DiffAugment's)
ADA_INTERVAL = 4  # discriminator steps between adjustments of the adaptive probability (ADA's)
ADA_KIMG = 500  # thousands of images over which p can move from 0 to 1 (ADA's speed)


def parse_policy(text: str) -> tuple[str, ...]:
    """'translation,cutout,color' -> its names, in order; 'none' -> (). Unknown names are a clear error."""
    names = tuple(name.strip() for name in text.lower().split(",") if name.strip())
    if names == ("none",):
        return ()
    for name in names:
        if name not in AUGMENTATIONS:
            raise GanforgeError(f"augment={text!r} is invalid: expected none or a comma list of {', '.join(AUGMENTATIONS)}")
    return names


def _uniform(x: Tensor, rng: torch.Generator, low: float, high: float) -> Tensor:
    """One draw per sample, shaped (batch, 1, 1, 1) to broadcast over an image."""
    return low + (high - low) * torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=rng, dtype=x.dtype)


def color(x: Tensor, rng: torch.Generator) -> Tensor:
    """Random brightness (+-0.5), saturation (x0 to x2) and contrast (x0.5 to x1.5) per sample."""
    x = x + _uniform(x, rng, -0.5, 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(x, rng, 0.0, 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, rng, 0.5, 1.5) + mean


def translation(x: Tensor, rng: torch.Generator) -> Tensor:
    """Shifts each sample by whole pixels (up to TRANSLATION_RATIO of the side each way), zeros coming in."""
    batch, _, h, w = x.shape
    shift_h, shift_w = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy = torch.randint(-shift_h, shift_h + 1, (batch, 1, 1), device=x.device, generator=rng)
    dx = torch.randint(-shift_w, shift_w + 1, (batch, 1, 1), device=x.device, generator=rng)
    # Output pixel (i, j) reads input pixel (i + dy, j + dx) of the image padded by one zero pixel.
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    padded = nn.functional.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # (batch, h + 2, w + 2, channels)
    index = torch.arange(batch, device=x.device).view(batch, 1, 1)
    return padded[index, rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, rng: torch.Generator) -> Tensor:
    """Zeroes a square of CUTOUT_RATIO of the side, centred anywhere in the image (clipped at its edges)."""
    batch, _, h, w = x.shape
    size_h, size_w = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    top = torch.randint(0, h + (1 - size_h % 2), (batch, 1, 1), device=x.device, generator=rng) - size_h // 2
    left = torch.randint(0, w + (1 - size_w % 2), (batch, 1, 1), device=x.device, generator=rng) - size_w // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)  # (batch, h, w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


OPERATIONS = {"color": color, "translation": translation, "cutout": cutout}


def augment(x: Tensor, policy: tuple[str, ...], rng: torch.Generator, p: Tensor | None = None) -> Tensor:
    """`x` through each operation of `policy` in order, with fresh random parameters per sample.

    With `p` (a 0-dim tensor on x's device), each operation reaches each sample with probability p.
    """
    for name in policy:
        changed = OPERATIONS[name](x, rng)
        if p is not None:
            chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=rng) < p
            changed = torch.where(chosen, changed, x)
        x = changed
    return x


class AdaptiveProbability:
    """ADA's augmentation probability `p`, adjusted every ADA_INTERVAL discriminator steps.

    `observe` takes each D step's logits. The signal is the mean sign of D(x) (its share of reals
    scored as real, mapped to [-1, 1]) or, with `paired`, of D(x) - D(G(z)) (its share of pairs
    ranked right); 0 is chance, 1 complete separation. After every ADA_INTERVAL observations p
    moves by batch_size * ADA_INTERVAL / (ADA_KIMG * 1000) towards more augmentation while the
    signal is above `target`, towards less while below, within [0, 1]. Everything stays on the
    device (no step waits for it); `reduce` averages the signal across processes, so all of
    them hold the same p.
    """

    def __init__(self, target: float, batch_size: int, paired: bool, device: torch.device, reduce=lambda t: t) -> None:
        self.target, self.paired, self.reduce = target, paired, reduce
        self.speed = batch_size * ADA_INTERVAL / (ADA_KIMG * 1000)
        self.p = torch.zeros((), device=device)
        self.signal = torch.zeros((), device=device)  # the sum of signs since the last adjustment
        self.count = 0  # how many signs that sum holds (a host number: the batch sizes are known here)
        self.observed = 0

    @torch.no_grad()
    def observe(self, real_logits: Tensor, fake_logits: Tensor) -> None:
        scores = real_logits - fake_logits if self.paired else real_logits
        self.signal += torch.sign(scores.float()).sum()
        self.count += scores.numel()
        self.observed += 1
        if self.observed % ADA_INTERVAL == 0:
            rate = self.reduce(self.signal / self.count)
            self.p.copy_((self.p + torch.sign(rate - self.target) * self.speed).clamp(0.0, 1.0))
            self.signal.zero_()
            self.count = 0

    def state_dict(self) -> dict:
        return {"p": self.p.clone(), "signal": self.signal.clone(), "count": self.count, "observed": self.observed}

    def load_state_dict(self, state: dict) -> None:
        self.p.copy_(state["p"])
        self.signal.copy_(state["signal"])
        self.count, self.observed = state["count"], state["observed"]


class AugmentedDiscriminator(nn.Module):
    """A discriminator that sees its input through `augment(x, policy, rng, p)`.

    `adaptive` (an AdaptiveProbability) supplies p; without it every operation always applies.
    It holds no parameters of its own: training, freezing or saving it is training, freezing
    or saving `discriminator`.
    """

    def __init__(
        self, discriminator: nn.Module, policy: tuple[str, ...], rng: torch.Generator, adaptive: AdaptiveProbability | None = None
    ) -> None:
        super().__init__()
        self.discriminator, self.policy, self.rng, self.adaptive = discriminator, policy, rng, adaptive

    def forward(self, x: Tensor, *labels: Tensor) -> Tensor:
        p = self.adaptive.p if self.adaptive is not None else None
        return self.discriminator(augment(x, self.policy, self.rng, p), *labels)
