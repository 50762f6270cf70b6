"""What every benchmark script does the same way: report the machine it ran on and mean ± standard
error, and stop the training run it started when it is itself stopped."""

from __future__ import annotations

import math
import os
import platform
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

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


def _stop(signum, frame) -> None:
    raise SystemExit(128 + signum)


def stop_run(process: subprocess.Popen, grace: float = 0.0) -> None:
    """Waits `grace` seconds for the run to end on its own, then sends it SIGINT (it saves a
    checkpoint and stops) and waits for it."""
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        process.wait()


@contextmanager
def training_run(command: list[str], **popen) -> Iterator[subprocess.Popen]:
    """Starts `command` (a `ganforge train` run; `popen`, such as `env`, goes to subprocess.Popen); if
    the script is stopped meanwhile, the run saves a checkpoint and stops too, and the script waits
    for it, instead of leaving it to train on alone.

    SIGTERM (`kill`) reaches only the script, so the run is sent SIGINT. Ctrl-C in a terminal
    reaches both already, and a second SIGINT would stop the run at once, without its checkpoint:
    the run is given a minute to stop before it is sent one."""
    process = subprocess.Popen(command, **popen)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        yield process
    except KeyboardInterrupt:
        stop_run(process, grace=60)
        raise
    except BaseException:
        stop_run(process)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
