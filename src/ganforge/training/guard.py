"""The divergence guard: counts skipped (NaN/Inf) steps on the device and decides, at a
boundary, whether the run goes on, rolls back to its last checkpoint, or stops.

`Tally` also sums the scalars a log line reports, since both are read at the same
boundaries: adding to it never waits for the device.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ganforge.checkpoint import latest_checkpoint
from ganforge.errors import TrainingDiverged

MAX_ROLLBACKS = 3


class Tally:
    """Sums of the logged scalars over the updates applied since the last log line, and the
    divergence guard's streak of skipped steps, all on the device: adding never waits for it."""

    def __init__(self, device: torch.device, limit: int) -> None:
        self.limit = limit  # skipped steps in a row that mean divergence
        self.sums = torch.zeros(4, device=device)  # d_loss, g_loss, D(x), D(G(z))
        self.count = torch.zeros((), dtype=torch.long, device=device)
        self.streak = torch.zeros((), dtype=torch.long, device=device)  # skipped steps in a row, up to now
        self.diverged = torch.zeros((), dtype=torch.long, device=device)  # the step the streak reached the limit (0: never)

    def add(self, scalars: Tensor, applied: Tensor | None, step: int) -> None:
        if applied is None:  # unchecked: applied
            self.sums += scalars
            self.count += 1
            return
        self.sums += torch.where(applied, scalars, 0.0)  # a skipped step's NaN stays out of the sums
        self.count += applied
        self.streak.add_(1).mul_(~applied)
        first = (self.diverged == 0) & (self.streak >= self.limit)
        self.diverged.copy_(torch.where(first, step, self.diverged))

    def diverged_at(self) -> int:
        """The step at which the streak of skipped steps reached the limit, or 0."""
        return int(self.diverged)

    def read(self) -> tuple[int, Tensor]:
        """(number of applied updates, their summed scalars) since the last reset."""
        return int(self.count), self.sums

    def reset(self, streak: bool = False) -> None:
        """Starts a new log interval; `streak` also forgets the guard's streak (after a rollback)."""
        self.sums.zero_()
        self.count.zero_()
        if streak:
            self.streak.zero_()
            self.diverged.zero_()


class DivergenceGuard:
    """What happens when `max_nonfinite_steps` steps in a row were skipped: `on_divergence` says
    stop (the last good checkpoint is kept) or roll back to it with fresh noise and batches,
    at most MAX_ROLLBACKS times. Off (`enabled` false) when `max_nonfinite_steps` is 0."""

    def __init__(self, limit: int, on_divergence: str, run_dir: Path) -> None:
        self.enabled = limit > 0
        self.limit, self.on_divergence, self.run_dir = limit, on_divergence, run_dir
        self.rollbacks = 0

    def verdict(self, tally: Tally) -> str | None:
        """None while the run is healthy; else why it diverged (reads the device once)."""
        diverged_at = tally.diverged_at() if self.enabled else 0
        if not diverged_at:
            return None
        return f"{self.limit} steps in a row had NaN/Inf losses or gradients (skipped) by step {diverged_at}"

    def roll_back(self, cause: str) -> dict:
        """The checkpoint to go back to; raises TrainingDiverged when the run must stop instead."""
        if self.on_divergence != "rollback" or self.rollbacks >= MAX_ROLLBACKS:
            advice = f"after {MAX_ROLLBACKS} rollbacks" if self.rollbacks else "(try lower learning rates, a gradient penalty, or on_divergence=rollback)"
            raise TrainingDiverged(f"training diverged: {cause}; the last good checkpoint in {self.run_dir / 'checkpoints'} is kept {advice}")
        state, _ = latest_checkpoint(self.run_dir)
        if state is None:
            raise TrainingDiverged(f"training diverged: {cause}, and there is no checkpoint to roll back to (lower learning rates?)")
        self.rollbacks += 1
        return state
