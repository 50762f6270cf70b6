"""An exponential moving average of the generator's weights, and BatchNorm recalibration."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn


class EMA:
    """Keeps `average = decay * average + (1 - decay) * current` for every parameter.

    Buffers (BatchNorm running statistics) are copied, not averaged. The averaged
    generator is what ganforge samples from and exports: it is markedly smoother than the
    last iterate of a GAN's oscillating training.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.average = copy.deepcopy(module).eval().requires_grad_(False)
        self._pairs = list(zip(self.average.parameters(), module.parameters()))
        self._buffers = list(zip(self.average.buffers(), module.buffers()))

    @torch.no_grad()
    def update(self) -> None:
        averages = [a for a, _ in self._pairs]
        torch._foreach_lerp_(averages, [p.detach() for _, p in self._pairs], 1.0 - self.decay)
        for average, current in self._buffers:
            average.copy_(current)


@torch.no_grad()
def recalibrate_batchnorm(
    generator: nn.Module,
    noise: Callable[[int], Tensor],
    batches: int = 16,
    batch_size: int = 256,
    labels: Callable[[int], Tensor] | None = None,
) -> None:
    """Re-estimates BatchNorm running statistics of `generator` for its current weights.

    Averaged weights and the live network's running statistics do not match; running a few
    noise batches in training mode with a cumulative average (momentum=None) gives the
    population statistics of this exact generator, so eval-mode samples look like
    training-mode ones. A conditional generator takes `labels(n)` with each batch, drawn as
    training drew them (else it would see only the classes a batch's length reaches in turn).
    The module is left in eval mode.
    """
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        generator.eval()
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    generator.train()
    for _ in range(batches):
        generator(noise(batch_size)) if labels is None else generator(noise(batch_size), labels(batch_size))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    generator.eval()
