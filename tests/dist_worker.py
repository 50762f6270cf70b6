"""Run by torchrun from test_distributed.py: trains a few iterations and checks after each one
that every process holds bit-identical generator and discriminator parameters (and, in a
self-conditioned run, the same clusters).

Usage: torchrun --nproc_per_node N tests/dist_worker.py OUT.pt STEPS DATA [key=value ...]
Rank 0 saves {"agreed": [bool per step], "params": flat final parameters} to OUT.pt.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from ganforge import distributed
from ganforge.config import make_config, parse_overrides, resolve
from ganforge.data import load_dataset
from ganforge.training.state import Trainer


def flat_parameters(trainer: Trainer) -> torch.Tensor:
    """Every parameter of both players, and the labels they are conditioned on (a run with clusters)."""
    labels = [] if trainer.labels is None else [trainer.labels.float()]
    return torch.cat([p.detach().flatten() for m in (trainer.generator, trainer.discriminator) for p in m.parameters()] + labels)


def run(steps: int, data: str, overrides: list[str]) -> dict:
    """Trains `steps` iterations at the current world size; returns per-step agreement and final parameters."""
    device = distributed.init("cpu")
    config = make_config({"data": data, "device": "cpu"}, parse_overrides(overrides))
    dataset = load_dataset(config.data)
    config = resolve(config, dataset.kind, dataset.sample_shape, "test")
    trainer = Trainer(config, dataset, device)
    dataset.to(device)
    agreed = []
    for _ in range(steps):
        trainer.iteration(skip_nonfinite=False)
        mine = flat_parameters(trainer)
        everyone = [torch.empty_like(mine) for _ in range(distributed.world_size())]
        if dist.is_initialized():
            dist.all_gather(everyone, mine)
        else:
            everyone = [mine]
        agreed.append(all(torch.equal(mine, other) for other in everyone))
    return {"agreed": agreed, "params": flat_parameters(trainer)}


if __name__ == "__main__":
    torch.set_num_threads(1)
    result = run(int(sys.argv[2]), sys.argv[3], sys.argv[4:])
    if distributed.is_main():
        torch.save(result, sys.argv[1])
    distributed.close()
    os._exit(0)  # as ganforge's own torchrun workers end (cli.main): no interpreter teardown
