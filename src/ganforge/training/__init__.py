"""Training a GAN, in one place.

- `loop.py`: `train`, the entry point, and the loop that runs iterations and hands each
  boundary to the duties;
- `duties.py`: what happens at a boundary (log, samples, evaluation, checkpoint, stop agreement);
- `guard.py`: the divergence guard (skipped NaN/Inf steps, stop or roll back);
- `metrics_log.py`: the one writer of metrics.jsonl;
- `state.py`: `Trainer`, the state of a run (players, optimizers, random streams) and one
  training iteration, the two GAN steps of `ganforge.steps`.
"""

from ganforge.training.loop import StoppedAtOnce, train

__all__ = ["StoppedAtOnce", "train"]
