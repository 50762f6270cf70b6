"""Run by torchrun from test_distributed_averages.py: what each process holds before ganforge averages it.

Usage: torchrun --nproc_per_node 2 tests/dist_loop_worker.py OUT_DIR STEPS key=value ...

1. Trains STEPS iterations of a ring8 MLP with the R1 penalty (applied through the DDP wrapper), as
   dist_worker.py does; rank 0 saves the flat parameters to OUT_DIR/r1.pt.
2. Runs the training loop (`ganforge.train.train`) with the key=value config into OUT_DIR/run, recording
   on every rank the scalars of each iteration and the BatchNorm buffers each network held just
   before they were last averaged across processes; each rank saves them to OUT_DIR/rank{R}.pt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

import ganforge.training.state as trainer_module
from dist_worker import run
from ganforge import distributed
from ganforge.config import make_config, parse_overrides
from ganforge.training import train

# A ring8 MLP pair with the R1 penalty on every discriminator step.
R1_RING = ["batch_size=32", "g_width=16", "d_width=16", "g_depth=2", "d_depth=2", "r1_gamma=1", "r1_every=1"]


def record_what_each_process_holds() -> dict:
    """Patches the Trainer's iteration and the buffer averaging to record this process's own values."""
    record: dict = {"scalars": [], "buffers": {}}
    iteration, average_buffers = trainer_module.Trainer.iteration, distributed.average_buffers

    def recorded_iteration(self, skip_nonfinite):
        scalars, applied = iteration(self, skip_nonfinite)
        record["scalars"].append(scalars.tolist())
        return scalars, applied

    def recorded_average(module):
        record["buffers"][type(module).__name__] = {k: v.clone() for k, v in module.named_buffers() if v.is_floating_point()}
        average_buffers(module)

    trainer_module.Trainer.iteration = recorded_iteration
    distributed.average_buffers = recorded_average
    return record


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, steps, overrides = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    r1 = run(steps, "ring8", R1_RING)
    if distributed.is_main():
        torch.save(r1, out / "r1.pt")
    record = record_what_each_process_holds()
    config = make_config({"out": str(out / "run"), "steps": steps}, parse_overrides(overrides))
    rank = distributed.rank()  # train() leaves the process group on its way out
    train(config, progress=False, say=lambda message: None)
    torch.save(record, out / f"rank{rank}.pt")
    os._exit(0)  # as ganforge's own torchrun workers end (cli.main): no interpreter teardown
