"""Differentiable augmentation for the discriminator (DiffAugment, Zhao et al. 2020).

On small image sets an un-augmented discriminator memorises the training images and wins,
and the generator stops learning. DiffAugment shows D only augmented images, real and
generated alike, in both training steps; every operation is differentiable in the image, so
the generator's gradient passes through the augmentation. Each call draws fresh parameters
per sample from its own seeded RNG (part of the checkpoint), so real and generated batches
are augmented by the same random process and a resumed run draws the same augmentations.

Images are (batch, channels, h, w) in the model's [-1, 1] space.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ganforge.errors import GanforgeError

AUGMENTATIONS = ("translation", "cutout", "color")
TRANSLATION_RATIO = 0.125  # shifts of up to 1/8 of the side, in whole pixels, zero padded (DiffAugment's)
CUTOUT_RATIO = 0.5  # a zeroed square of half the side (DiffAugment's)


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


def augment(x: Tensor, policy: tuple[str, ...], rng: torch.Generator) -> Tensor:
    """`x` through each operation of `policy` in order, with fresh random parameters per sample."""
    for name in policy:
        x = OPERATIONS[name](x, rng)
    return x


class AugmentedDiscriminator(nn.Module):
    """A discriminator that sees its input through `augment(x, policy, rng)`.

    It holds no parameters of its own: training, freezing or saving it is training, freezing
    or saving `discriminator`.
    """

    def __init__(self, discriminator: nn.Module, policy: tuple[str, ...], rng: torch.Generator) -> None:
        super().__init__()
        self.discriminator, self.policy, self.rng = discriminator, policy, rng

    def forward(self, x: Tensor, *labels: Tensor) -> Tensor:
        return self.discriminator(augment(x, self.policy, self.rng), *labels)
