"""The standard 2D Gaussian mixtures of the mode-collapse literature (VEEGAN, PacGAN)."""

from __future__ import annotations

import math

import torch

from ganforge.data.dataset import Dataset

TOY_SAMPLES = 100_000  # PacGAN's training set size per mixture


def mixture_modes(name: str) -> tuple[torch.Tensor, float]:
    """Mode centres (k, 2) and standard deviation of `ring8` or `grid25`."""
    if name == "ring8":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return torch.stack([angles.cos(), angles.sin()], dim=1).float(), 0.01
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    return torch.cartesian_prod(axis, axis), 0.05


def load_mixture(name: str, n: int = TOY_SAMPLES, seed: int = 0) -> Dataset:
    """n points, each from a uniformly chosen mode plus isotropic Gaussian noise."""
    modes, std = mixture_modes(name)
    rng = torch.Generator().manual_seed(seed)
    which = torch.randint(len(modes), (n,), generator=rng)
    points = modes[which] + std * torch.randn(n, 2, generator=rng)
    return Dataset(
        name=name,
        kind="vectors",
        samples=points,
        transform={"kind": "affine", "shift": [0.0, 0.0], "scale": [1.0, 1.0]},
        labels=which,
        modes=modes,
        mode_std=std,
    )
