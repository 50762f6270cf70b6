"""The training loop: runs a `Trainer`'s iterations and, at each boundary, hands the step to
the duties (`duties.py`): log, samples, evaluation, checkpoint.

`train` is the entry point (`ganforge train`, torchrun workers and the Python API alike):
load the data, resolve the config, prepare the run folder (resume, or refuse), then loop.
Every scalar it logs, and the divergence guard's counts, stay on the device until a log
interval or a checkpoint (`guard.Tally`), so the hot path never waits for the device.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from ganforge import distributed, limits, rundir, runlock
from ganforge.checkpoint import latest_checkpoint
from ganforge.config import Config, resolve
from ganforge.data import Dataset, load_dataset
from ganforge.data.spec import parse_spec
from ganforge.data.table import table_options
from ganforge.errors import DistributedFailure, GanforgeError, first_line
from ganforge.evaluate import TrainingEvaluation
from ganforge.tensorboard_events import TensorBoardEvents
from ganforge.training.duties import DUTIES, Tick, agree_on_stop, diagnosis, roll_back_if_diverged
from ganforge.training.guard import DivergenceGuard, Tally
from ganforge.training.metrics_log import MetricsLog
from ganforge.training.state import Trainer, build_networks, cpu_threads, pick_device, torch_threads


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
        first = first_line(err)
        raise DistributedFailure(
            f"lost contact with another training process ({first}); run the same command again to resume from the last checkpoint"
        ) from None
    finally:
        distributed.close()


def resolve_for(config: Config, dataset: Dataset, new: bool) -> Config:
    """`config` resolved for `dataset`: on a resume (not `new`), auto keys first take the run's own values."""
    name = parse_spec(config.data).name
    return resolve(rundir.keep_run_settings(config, name, new), dataset.kind, dataset.sample_shape, name, len(dataset.class_names), len(dataset))


def _train(config: Config, new: bool, progress: bool, say, device: torch.device | None) -> Path:
    dataset = load_dataset(config.data, config.image_size, config.channels, config.on_bad_image, table_options(dataclasses.asdict(config)))
    skipped_files = dataset.info.get("skipped_files", [])
    if skipped_files:
        say(f"warning: skipped {len(skipped_files)} unreadable image file(s) (on_bad_image=skip), e.g. {skipped_files[0]}")
    config = resolve_for(config, dataset, new)
    device = device or pick_device(config.device)
    with torch_threads(cpu_threads(config, device)), runlock.hold(Path(config.out), distributed.is_main()):
        run = _start(config, dataset, device, new, progress, say)
        return run if isinstance(run, Path) else _finish(run, _loop(run))


def _prepare_everywhere(run_dir: Path, config: Config, new: bool, say, extra: dict, trainer: Trainer) -> dict | None:
    """The main process prepares the run folder; the others learn the outcome and load the same checkpoint."""
    state, error = None, None
    if distributed.is_main():
        try:
            state = rundir.prepare(run_dir, config, new, say, extra, trainer)
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


def _start(config: Config, dataset: Dataset, device: torch.device, new: bool, progress: bool, say) -> Run | Path:
    """Builds the trainer, prepares the run folder and restores its checkpoint: the Run to loop
    over, or the run folder itself when it is already trained to `steps`."""
    # Everything that can still refuse the config is built before the run folder is touched.
    limits.check_networks_fit(lambda: build_networks(config, dataset), device, batch=config.batch_size // distributed.world_size())
    trainer = Trainer(config, dataset, device, say)
    evaluation = TrainingEvaluation(config, device) if config.eval_every and distributed.is_main() else None
    run_dir = Path(config.out)
    extra = {"world_size": distributed.world_size(), "batch_per_process": trainer.local_batch, "precision_used": trainer.speed.precision}
    state = _prepare_everywhere(run_dir, config, new, say, extra, trainer)
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
    return Run(trainer, run_dir, evaluation, progress, say)


class Run:
    """What the duties share while the loop runs: the trainer, the run folder, the metrics log
    (with its listeners: live diagnosis, TensorBoard), the guard and its tally, the training
    clock, the progress bar and the stop request."""

    def __init__(self, trainer: Trainer, run_dir: Path, evaluation: TrainingEvaluation | None, progress: bool, say) -> None:
        self.trainer, self.config, self.device = trainer, trainer.config, trainer.device
        self.run_dir, self.evaluation, self.say = run_dir, evaluation, say
        self.main = distributed.is_main()
        self.log = MetricsLog(run_dir / rundir.METRICS, writes=self.main)
        self.log.listeners.append(diagnosis(self.config, say))
        self.events = TensorBoardEvents(run_dir) if self.main and self.config.tensorboard else None
        if self.events is not None:
            self.log.listeners.append(self.events.record)
        self.tally = Tally(self.device, self.config.max_nonfinite_steps)
        self.guard = DivergenceGuard(self.config.max_nonfinite_steps, self.config.on_divergence, run_dir)
        self.clock = Clock(trainer.seconds, trainer.step)
        self.bar = _progress(self.config.steps, trainer.step, progress)
        self.final = None  # the sampling generator saved at the last step, for the final picture
        self.notes = {"losses": "", "evaluation": ""}
        self.stop = StopRequest()  # the latest log interval and evaluation, for the progress line

    def show(self, **notes: str) -> None:
        """Updates the progress line's notes (`losses=`, `evaluation=`)."""
        self.notes.update(notes)
        self.bar.set_postfix_str("".join(self.notes.values()))

    def close(self) -> None:
        self.log.close()
        if self.events is not None:
            self.events.close()
        self.bar.close()


class Clock:
    """Training seconds (evaluation left out) and the steps per second of each log interval."""

    def __init__(self, seconds_so_far: float, step: int) -> None:
        now = time.perf_counter()
        self.started = now - seconds_so_far
        self.interval_start, self.interval_step = now, step

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def interval(self, step: int) -> tuple[float, float]:
        """(training seconds so far, steps per second since the last interval), and starts a new interval."""
        now = time.perf_counter()
        steps_per_s = (step - self.interval_step) / (now - self.interval_start)
        self.interval_start, self.interval_step = now, step
        return now - self.started, steps_per_s

    def pause(self, seconds: float) -> None:
        """Leaves `seconds` (an evaluation) out of the training time and of the interval's rate."""
        self.started += seconds
        self.interval_start += seconds


def _loop(run: Run) -> bool:
    """Runs iterations to `steps`, handing each boundary to the duties; True when interrupted
    (the checkpoint is then saved)."""
    trainer, config = run.trainer, run.config
    trainer.generator.train()
    trainer.discriminator.train()
    try:
        with run.stop as stop:
            while trainer.step < config.steps:
                scalars, applied = trainer.iteration(skip_nonfinite=run.guard.enabled)
                run.tally.add(scalars, applied, trainer.step)
                interrupted = agree_on_stop(run, stop.requested)
                tick = Tick.after(trainer.step, config.steps, config.log_every, config.checkpoint_every, interrupted)
                if roll_back_if_diverged(run, tick):
                    continue
                for duty in DUTIES:
                    duty(run, tick)
                if tick.interrupted:
                    return True
            trainer.seconds = run.clock.seconds()
            with stop.shielded():
                run.final = trainer.save(run.run_dir)
            return False
    finally:
        run.close()


def _finish(run: Run, interrupted: bool) -> Path:
    """The last word: a stopped run says how to resume (and raises KeyboardInterrupt); a finished
    one draws its final samples and says where they are."""
    trainer, run_dir = run.trainer, run.run_dir
    if interrupted:
        run.say(f"stopped at step {trainer.step}; checkpoint saved in {run_dir / 'checkpoints'}; run the same command again to resume")
        # Every process agreed on this stop; the others wait here until the main one has saved the
        # step and said so, since torchrun ends a job's remaining processes once one has exited.
        distributed.barrier()
        raise KeyboardInterrupt
    if run.final is not None:
        trainer.save_picture(run.final, run_dir / "samples" / "final.png")
    skipped_note = f" ({trainer.skipped_steps} steps skipped for NaN/Inf)" if trainer.skipped_steps else ""
    picture, generator = run_dir / "samples" / "final.png", run_dir / "generator.safetensors"
    # Vectors of more than 2 dimensions have no picture.
    outputs = f"Final samples: {picture}; generator: {generator}" if picture.exists() else f"Generator: {generator}"
    run.say(f"done: {trainer.step} steps in {trainer.seconds:.0f} s{skipped_note}. {outputs}")
    return run_dir


class StoppedAtOnce(KeyboardInterrupt):
    """A second SIGINT outside a save: training stops where it is; the last checkpoint is kept."""


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between iterations (a second SIGINT
    aborts, except during a save)."""

    def __init__(self) -> None:
        self.requested = False
        self.saving = False

    def __enter__(self) -> StopRequest:
        self._saved = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT and not self.saving:
            raise StoppedAtOnce
        self.requested = True

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A save no second SIGINT cuts short: the stop it asks for comes once the checkpoint is written."""
        self.saving = True
        try:
            yield
        finally:
            self.saving = False

    def __exit__(self, *exc) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, smoothing=0.1)
