"""Pictures of samples: image grids and 2D scatter plots, written as PNG with Pillow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from ganforge.checkpoint import atomic_write


def to_image(image: Tensor) -> Image.Image:
    """One image in data space, float (c, h, w) in [0, 1] -> a PIL image of the same size, grey or RGB."""
    array = (image.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0)
    return Image.fromarray(array[..., 0], "L") if array.shape[2] == 1 else Image.fromarray(array, "RGB")


def image_grid(images: Tensor, columns: int | None = None, min_side: int = 512) -> Image.Image:
    """Images in data space, float (n, c, h, w) in [0, 1] -> one grid image, scaled up to about min_side pixels."""
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    pad = 1 if h < 32 else 2
    array = (images.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = array[i]
    image = Image.fromarray(grid[..., 0] if c == 1 else grid, "L" if c == 1 else "RGB")
    zoom = max(1, min_side // max(image.size))
    return image.resize((image.width * zoom, image.height * zoom), Image.Resampling.NEAREST)


def scatter(samples: Tensor, reference: Tensor | None = None, side: int = 512) -> Image.Image:
    """2D points (n, 2): samples in blue over reference data in grey, on a square canvas."""
    points = samples.detach().cpu().double().numpy()
    extent = reference.detach().cpu().double().numpy() if reference is not None else points
    low, high = np.percentile(extent, 0.1, axis=0), np.percentile(extent, 99.9, axis=0)
    centre, half = (low + high) / 2, max(float((high - low).max()) / 2 * 1.25, 1e-6)
    image = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(image)

    def plot(array: np.ndarray, colour: tuple[int, int, int], radius: int) -> None:
        xy = (array - centre) / half * (side / 2) + side / 2
        for x, y in xy:
            y = side - y
            if 0 <= x < side and 0 <= y < side:
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)

    if reference is not None:
        plot(extent[:2000], (190, 190, 190), 2)
    plot(points, (31, 91, 200), 1)
    return image


def save_samples(path: Path, samples: Tensor, reference: Tensor | None = None) -> None:
    """Saves a grid for images (n, c, h, w) or a scatter plot for 2D vectors (n, 2)."""
    picture = image_grid(samples) if samples.dim() == 4 else scatter(samples, reference)
    atomic_write(path, lambda f: picture.save(f, format="PNG"))
