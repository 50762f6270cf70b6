"""What the machine can hold: sizes a user asks for, checked against the memory there is.

`config.validate` bounds every number by a fixed maximum; the checks here come after, when
the data's shape and the device are known, so a run or a sample count too large for this
machine is one line naming the key and the largest value that fits, not an allocator's
traceback (or a machine swapping itself to a halt).
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from ganforge.errors import GanforgeError

# Bytes per parameter of a training run: weights, gradients and Adam's two moments (fp32),
# and the generator's moving average, rounded up.
TRAINING_BYTES_PER_PARAMETER = 5 * 4
# Bytes per number a layer outputs in training: kept for the backward pass of both players'
# steps, and its gradient (fp32).
ACTIVATION_BYTES = 4 * 4
# The share of free memory one request may take: the rest is left to activations, the
# data, and everything else the machine runs.
SHARE = 0.5


def available_memory(device: torch.device | str = "cpu") -> int:
    """Free memory in bytes: the GPU's for a CUDA device, else the host's (MemAvailable on Linux)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
        return 2**62  # unknown here (not Linux): memory sets no bound


def most_samples(sample_shape: tuple[int, ...], device: torch.device | str = "cpu", copies: int = 4) -> int:
    """How many float32 samples of `sample_shape` fit in SHARE of the free memory, `copies` times over
    (a batch of samples is held a few times while it is generated, moved and written)."""
    per_sample = 4 * math.prod(sample_shape) * copies
    return max(1, int(available_memory(device) * SHARE) // per_sample)


def check_count(name: str, n: int, low: int, high: int, sample_shape: tuple[int, ...], device: torch.device | str = "cpu") -> None:
    """Refuses a sample count `name` outside [low, high], or beyond what fits in memory, naming the range."""
    fits = most_samples(sample_shape, device)
    if not low <= n <= min(high, fits):
        why = f" (samples of {'x'.join(map(str, sample_shape))} that fit in free memory)" if fits < high else ""
        raise GanforgeError(f"{name} {n} is invalid: expected an integer from {low} to {min(high, fits):,}{why}")


def check_networks_fit(build, device: torch.device | str, training: bool = True, batch: int = 0) -> None:
    """Builds the networks `build()` returns on the meta device (no memory) and refuses them if
    they would not fit in SHARE of the free memory of `device`: to train them (`training`) on
    batches of `batch` samples, whose activations are counted by a forward pass on the meta
    device, or to sample."""
    with torch.device("meta"):
        networks: tuple[nn.Module, ...] = build()
    parameters = sum(p.numel() for network in networks for p in network.parameters())
    needed = parameters * (TRAINING_BYTES_PER_PARAMETER if training else 4)
    activations = _activations(*networks, batch) if training and batch and len(networks) == 2 else 0
    needed += activations * ACTIVATION_BYTES
    free = available_memory(device)
    if needed > free * SHARE:
        batch_note = f" and batches of {batch:,}" if activations else ""
        raise GanforgeError(
            f"{parameters:,} parameters{batch_note} need {needed / 2**30:.1f} GiB{' to train' if training else ''}, but "
            f"{torch.device(device)} has {free / 2**30:.1f} GiB free: expected smaller widths, depths, latent_dim, image_size or batch_size"
        )


def _activations(generator: nn.Module, discriminator: nn.Module, batch: int) -> int:
    """Numbers every layer outputs in one pass of `batch` noise vectors through G and then D, on the meta device."""
    total = 0

    def count(module, inputs, output) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [m for network in (generator, discriminator) for m in network.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    # A class-conditional pair takes the batch's labels too (any label: only shapes matter here).
    labels = {"labels": torch.zeros(batch, dtype=torch.long, device="meta")} if discriminator.config.get("classes") else {}
    try:
        with torch.no_grad():
            discriminator(generator(torch.zeros(batch, generator.config["latent_dim"], device="meta"), **labels), **labels)
    finally:
        for handle in handles:
            handle.remove()
    return total


def check_images_fit(count: int, channels: int, image_size: int) -> None:
    """Refuses an `image_size` whose images would not fit in host memory (as uint8 and as float32 while resized and trained on)."""
    bytes_per_pixel = 1 + 4 + 4
    free = available_memory("cpu") * SHARE
    if count * channels * image_size**2 * bytes_per_pixel > free:
        largest = int(math.sqrt(free / (count * channels * bytes_per_pixel)))
        raise GanforgeError(
            f"image_size={image_size} is invalid for {count:,} images of {channels} channel(s): "
            f"expected at most {largest} to fit in free memory"
        )
