"""What the loop does at a boundary between iterations, one small function per duty.

After every iteration the loop makes a `Tick` (the step, and whether it ends the run, was
interrupted, logs or saves), settles the divergence guard, then hands the tick to each
duty in `DUTIES` order: log, samples, evaluation, checkpoint. A duty decides for itself
whether the tick is its boundary; none knows the others. The diagnose duty reads each
metrics record as it is written (a listener on the metrics log).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ganforge import distributed
from ganforge.config import Config
from ganforge.diagnose import LiveDiagnosis
from ganforge.training.guard import MAX_ROLLBACKS

if TYPE_CHECKING:
    from ganforge.training.loop import Run

# Under torchrun the processes agree on a stop request (one collective and a read on the host)
# every this many steps, not every step, so the loop rarely waits for the device.
STOP_CHECK_EVERY = 10


@dataclass(frozen=True)
class Tick:
    """The boundary after iteration `step` (1-based: the number of steps done)."""

    step: int
    final: bool  # the last step of the run
    interrupted: bool  # every process stops here and saves (Ctrl-C, SIGTERM)
    logging: bool  # a metrics.jsonl line is due
    saving: bool  # a checkpoint is due

    @classmethod
    def after(cls, step: int, steps: int, log_every: int, checkpoint_every: int, interrupted: bool) -> Tick:
        final = step == steps
        return cls(step, final, interrupted, step % log_every == 0 or final, interrupted or step % checkpoint_every == 0 or final)


def agree_on_stop(run: Run, requested: bool) -> bool:
    """Whether every process stops now: any of them was asked to (a single process reads its
    own flag every step; several agree every STOP_CHECK_EVERY steps)."""
    step = run.trainer.step
    if distributed.world_size() > 1 and step % STOP_CHECK_EVERY:
        return False
    return distributed.any_rank(requested, run.device) and step < run.config.steps


def roll_back_if_diverged(run: Run, tick: Tick) -> bool:
    """The guard's verdict, read where it matters (before a log line or a checkpoint): rolls the
    run back to its last checkpoint and returns True, or raises TrainingDiverged to stop. The
    steps run since the streak reached the limit are discarded with the rest."""
    if not (tick.logging or tick.saving):
        return False
    cause = run.guard.verdict(run.tally)
    if cause is None:
        return False
    trainer = run.trainer
    trainer.load_state_dict(run.guard.roll_back(cause), run.say)
    trainer.reseed(run.guard.rollbacks)
    run.say(f"warning: {cause}; rolled back to step {trainer.step} with fresh noise and batches ({run.guard.rollbacks}/{MAX_ROLLBACKS})")
    run.log.keep_until(trainer.step)  # the file is rewritten without the steps rolled back
    run.tally.reset(streak=True)
    run.bar.update(trainer.step - run.bar.n)
    return True


def log(run: Run, tick: Tick) -> None:
    """A metrics.jsonl line: the means over the updates applied since the last one, over every process."""
    if not tick.logging:
        return
    count, sums = run.tally.read()
    d_loss, g_loss, d_real, d_fake = distributed.all_reduce_mean(sums / max(count, 1)).tolist() if count else [None] * 4
    seconds, steps_per_s = run.clock.interval(tick.step)
    run.log.write({
        "step": tick.step, "d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake,
        "seconds": round(seconds, 3), "steps_per_s": round(steps_per_s, 2), "skipped_steps": run.trainer.skipped_steps,
        **({"augment_p": round(float(run.trainer.adaptive.p), 4)} if run.trainer.adaptive is not None else {}),
    })
    run.bar.update(tick.step - run.bar.n)
    if count:
        run.show(losses=f"d_loss {d_loss:.3f} g_loss {g_loss:.3f} D(x) {d_real:.3f} D(G(z)) {d_fake:.3f}")
    run.tally.reset()


def draw_samples(run: Run, tick: Tick) -> None:
    """A sample grid (or 2D scatter plot) from fixed noise every `sample_every` steps."""
    if tick.step % run.config.sample_every or not run.main:
        return
    picture = run.run_dir / "samples" / f"step_{tick.step:08d}.png"
    run.trainer.save_picture(run.trainer.sampling_generator(), picture)
    if run.events is not None:
        run.events.picture(picture, tick.step)


def evaluate(run: Run, tick: Tick) -> None:
    """The metrics of `ganforge eval` every `eval_every` steps and at the end (main process only).

    Training time leaves evaluation out, so `seconds` and steps/s mean the same with or without it.
    """
    if run.evaluation is None or not (tick.step % run.config.eval_every == 0 or tick.final):
        return
    started = time.perf_counter()
    trained_seconds = run.clock.seconds()
    scores = run.trainer.evaluate(run.evaluation, run.run_dir)
    eval_seconds = time.perf_counter() - started
    run.clock.pause(eval_seconds)
    run.log.write({"step": tick.step, "seconds": round(trained_seconds, 3), "eval_seconds": round(eval_seconds, 3), "eval": scores})
    metric, best = run.config.best_metric, run.trainer.best
    run.show(evaluation=f" {metric} {scores[metric]:.4g} (best {best['value']:.4g})")


def checkpoint(run: Run, tick: Tick) -> None:
    """A full-state checkpoint and export every `checkpoint_every` steps and when interrupted
    (the final one is written after the loop)."""
    if tick.interrupted or (tick.step % run.config.checkpoint_every == 0 and not tick.final):
        run.trainer.seconds = run.clock.seconds()
        with run.stop.shielded():
            run.trainer.save(run.run_dir)


DUTIES = (log, draw_samples, evaluate, checkpoint)


def diagnosis(config: Config, say) -> Callable[[dict], None]:
    """The diagnose duty, a listener on the metrics log: each record written goes through the
    failure-mode rules (`ganforge.diagnose`), and a mode whose signal has just appeared is said
    once, as one warning line."""
    live = LiveDiagnosis(dataclasses.asdict(config))

    def diagnose(record: dict) -> None:
        for line in live.update(record):
            say(f"warning: {line}")

    return diagnose
