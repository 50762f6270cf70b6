"""The training loop: schedules the training iterations of a `Trainer`, logs, samples and saves.

Every scalar it logs, and the divergence guard's counts, stay on the device until a log
interval or a checkpoint (`_Tally`), so the hot path never waits for the device.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from ganforge import distributed, rundir
from ganforge.checkpoint import latest_checkpoint
from ganforge.config import Config, resolve
from ganforge.data import load_dataset
from ganforge.data.table import table_options
from ganforge.errors import DistributedFailure, GanforgeError, TrainingDiverged
from ganforge.evaluate import TrainingEvaluation
from ganforge.trainer import Trainer, cpu_threads, pick_device, torch_threads

MAX_ROLLBACKS = 3
# Under torchrun the processes agree on a stop request (one collective and a read on the host)
# every this many steps, not every step, so the loop rarely waits for the device.
STOP_CHECK_EVERY = 10


def run_name(spec: str) -> str:
    """The default run folder's name for a data spec: runs/<name>."""
    for prefix in ("mnist", "stackedmnist"):
        if spec.startswith(prefix + ":"):
            return prefix
    return Path(spec).stem if ("/" in spec or "." in spec) else spec


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between iterations (a second SIGINT aborts)."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> _StopRequest:
        self._saved = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)


def train(config: Config, new: bool = False, progress: bool = True, say=print) -> Path:
    """Trains a GAN as `config` says, in its run folder; resumes that folder's last checkpoint.

    Returns the run folder. Raises GanforgeError for bad input before anything is written,
    TrainingDiverged when the divergence guard gives up, KeyboardInterrupt after saving a
    checkpoint on SIGINT/SIGTERM. Under torchrun, every process calls it; only the main
    process prints and writes.
    """
    if not distributed.launched():
        return _train(config, new, progress, say, None)
    device = distributed.init(config.device)
    if not distributed.is_main():
        progress, say = False, (lambda message: None)
    try:
        return _train(config, new, progress, say, device)
    except RuntimeError as err:
        if not isinstance(err, dist.DistError) and not any(w in str(err) for w in ("Connection closed", "Gloo", "NCCL", "peer")):
            raise
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise DistributedFailure(
            f"lost contact with another training process ({first}); run the same command again to resume from the last checkpoint"
        ) from None
    finally:
        distributed.close()


def _prepare_everywhere(run_dir: Path, config: Config, new: bool, say, extra: dict) -> dict | None:
    """The main process prepares the run folder; the others learn the outcome and load the same checkpoint."""
    state, error = None, None
    if distributed.is_main():
        try:
            state = rundir.prepare(run_dir, config, new, say, extra)
        except GanforgeError as err:
            error = err
    message, resume_step = distributed.broadcast_object((str(error) if error else None, state["step"] if state else None))
    if error is not None:
        raise error
    if message is not None:
        raise GanforgeError(message)
    if state is None and resume_step is not None:
        state, _ = latest_checkpoint(run_dir)
        if state is None or state["step"] != resume_step:
            raise GanforgeError(f"{run_dir}: this process cannot read the checkpoint of step {resume_step}: expected a run folder all processes share")
    return state


def _train(config: Config, new: bool, progress: bool, say, device: torch.device | None) -> Path:
    dataset = load_dataset(config.data, config.image_size, config.channels, config.on_bad_image, table_options(dataclasses.asdict(config)))
    skipped_files = dataset.info.get("skipped_files", [])
    if skipped_files:
        say(f"warning: skipped {len(skipped_files)} unreadable image file(s) (on_bad_image=skip), e.g. {skipped_files[0]}")
    config = resolve(config, dataset.kind, dataset.sample_shape, run_name(config.data))
    device = device or pick_device(config.device)
    with torch_threads(cpu_threads(config, device)):
        return _run(config, dataset, device, new, progress, say)


def _run(config: Config, dataset, device: torch.device, new: bool, progress: bool, say) -> Path:
    # Everything that can still refuse the config is built before the run folder is touched.
    trainer = Trainer(config, dataset, device, say)
    evaluation = TrainingEvaluation(config, device) if config.eval_every and distributed.is_main() else None
    run_dir = Path(config.out)
    extra = {"world_size": distributed.world_size(), "batch_per_process": trainer.local_batch}
    state = _prepare_everywhere(run_dir, config, new, say, extra)
    dataset.to(device)
    if state is not None:
        trainer.load_state_dict(state, say)
    if trainer.step >= config.steps:
        final_picture = run_dir / "samples" / "final.png"
        if distributed.is_main() and not final_picture.exists():  # the run was stopped while drawing it
            trainer.save_picture(trainer.sampling_generator(), final_picture)
        say(f"{run_dir} is already trained to step {trainer.step} (steps={config.steps}); use --steps to train longer or --new to start over")
        return run_dir
    if trainer.step:
        say(f"resuming {run_dir} from step {trainer.step}")

    guard = config.max_nonfinite_steps > 0
    tally = _Tally(device, config.max_nonfinite_steps)
    rollbacks = 0
    bar = _progress(config.steps, trainer.step, progress)
    started = time.perf_counter() - trainer.seconds
    interval_start, interval_step = time.perf_counter(), trainer.step
    main = distributed.is_main()
    metrics_file = open(run_dir / rundir.METRICS, "a", encoding="utf-8") if main else None
    trainer.generator.train()
    trainer.discriminator.train()
    interrupted = False
    losses_note, eval_note = "", ""  # the latest log interval and evaluation, for the progress line
    try:
        with _StopRequest() as stop:
            while trainer.step < config.steps:
                scalars, applied = trainer.iteration(skip_nonfinite=guard)
                step = trainer.step
                tally.add(scalars, applied, step)
                # Every process stops at the same step, when any of them was asked to (a single
                # process reads its own flag every step; several agree every STOP_CHECK_EVERY steps).
                agree = distributed.world_size() == 1 or step % STOP_CHECK_EVERY == 0
                interrupted = agree and distributed.any_rank(stop.requested, device) and step < config.steps
                saving = interrupted or step % config.checkpoint_every == 0 or step == config.steps
                logging = step % config.log_every == 0 or step == config.steps
                # The guard's verdict is read where it matters, before a log line or a checkpoint; the
                # steps run since the streak reached the limit are discarded with the rest.
                diverged_at = tally.diverged_at() if guard and (saving or logging) else 0
                if diverged_at:
                    cause = f"{config.max_nonfinite_steps} steps in a row had NaN/Inf losses or gradients (skipped) by step {diverged_at}"
                    if config.on_divergence == "rollback" and rollbacks < MAX_ROLLBACKS:
                        rollbacks += 1
                        trainer.load_state_dict(_last_good(run_dir, cause), say)
                        trainer.reseed(rollbacks)
                        say(f"warning: {cause}; rolled back to step {trainer.step} with fresh noise and batches ({rollbacks}/{MAX_ROLLBACKS})")
                        if metrics_file is not None:
                            metrics_file.close()  # the file is rewritten without the steps rolled back
                            rundir.keep_metrics_until(run_dir / rundir.METRICS, trainer.step)
                            metrics_file = open(run_dir / rundir.METRICS, "a", encoding="utf-8")
                        tally.reset(streak=True)
                        bar.update(trainer.step - bar.n)
                        continue
                    advice = f"after {MAX_ROLLBACKS} rollbacks" if rollbacks else "(try lower learning rates, a gradient penalty, or on_divergence=rollback)"
                    raise TrainingDiverged(f"training diverged: {cause}; the last good checkpoint in {run_dir / 'checkpoints'} is kept {advice}")
                if logging:
                    count, sums = tally.read()
                    means = distributed.all_reduce_mean(sums / max(count, 1)).tolist() if count else [None] * 4
                    d_loss, g_loss, d_real, d_fake = means
                    now = time.perf_counter()
                    record = {
                        "step": step, "d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake,
                        "seconds": round(now - started, 3), "steps_per_s": round((step - interval_step) / (now - interval_start), 2),
                        "skipped_steps": trainer.skipped_steps,
                    }
                    if metrics_file is not None:
                        metrics_file.write(json.dumps(record) + "\n")
                        metrics_file.flush()
                    bar.update(step - bar.n)
                    if count:
                        losses_note = f"d_loss {d_loss:.3f} g_loss {g_loss:.3f} D(x) {d_real:.3f} D(G(z)) {d_fake:.3f}"
                        bar.set_postfix_str(losses_note + eval_note)
                    tally.reset()
                    interval_start, interval_step = now, step
                if step % config.sample_every == 0 and main:
                    trainer.save_picture(trainer.sampling_generator(), run_dir / "samples" / f"step_{step:08d}.png")
                if evaluation is not None and (step % config.eval_every == 0 or step == config.steps):
                    eval_start = time.perf_counter()
                    trained_seconds = eval_start - started
                    scores = trainer.evaluate(evaluation, run_dir)
                    # Training time leaves evaluation out, so `seconds` and steps/s mean the same with or without it.
                    eval_seconds = time.perf_counter() - eval_start
                    started += eval_seconds
                    interval_start += eval_seconds
                    record = {"step": step, "seconds": round(trained_seconds, 3), "eval_seconds": round(eval_seconds, 3), "eval": scores}
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    eval_note = f" {config.best_metric} {scores[config.best_metric]:.4g} (best {trainer.best['value']:.4g})"
                    bar.set_postfix_str(losses_note + eval_note)
                if interrupted or (step % config.checkpoint_every == 0 and step != config.steps):
                    trainer.seconds = time.perf_counter() - started
                    trainer.save(run_dir)
                if interrupted:
                    break
            if not interrupted:
                trainer.seconds = time.perf_counter() - started
                final = trainer.save(run_dir)
    finally:
        if metrics_file is not None:
            metrics_file.close()
        bar.close()
    if interrupted:
        say(f"stopped at step {trainer.step}; checkpoint saved in {run_dir / 'checkpoints'}; run the same command again to resume")
        raise KeyboardInterrupt
    if final is not None:
        trainer.save_picture(final, run_dir / "samples" / "final.png")
    skipped_note = f" ({trainer.skipped_steps} steps skipped for NaN/Inf)" if trainer.skipped_steps else ""
    picture = run_dir / "samples" / "final.png"  # none for tables and vectors that are not 2D
    shown = f"Final samples: {picture}; " if picture.is_file() else ""
    say(f"done: {trainer.step} steps in {trainer.seconds:.0f} s{skipped_note}. {shown}generator: {run_dir / 'generator.safetensors'}")
    return run_dir


class _Tally:
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


def _last_good(run_dir: Path, cause: str) -> dict:
    state, _ = latest_checkpoint(run_dir)
    if state is None:
        raise TrainingDiverged(f"training diverged: {cause}, and there is no checkpoint to roll back to (lower learning rates?)")
    return state


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, smoothing=0.1)
