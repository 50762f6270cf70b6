"""What every benchmark script reports the same way: the machine it ran on, and mean ± standard error."""

from __future__ import annotations

import math
import os
import platform

import torch


def machine() -> str:
    """The processor, its core count, torch's version and the threads torch will use."""
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (nan for fewer than two values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)
