"""Reliability and safety: nothing lost, nothing executed, every bad input answered.

Faults are injected deterministically where that is possible (a signal the process sends
itself in the middle of a checkpoint write, NaN noise at chosen steps, an OSError at the Nth
write) and for real where it matters: a `python -m ganforge train` process killed with
SIGKILL at seeded random moments, or stopped with SIGTERM. Each test's docstring names the
invariant it checks; docs/RELIABILITY.md maps every fault to its tests.

Bugs these tests found keep their minimal reproductions as tests, so they stay fixed.
"""

from __future__ import annotations

import copy
import errno
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save
from torch import nn

import ganforge.checkpoint as checkpoint_module
import ganforge.export as export_module
import ganforge.rundir as rundir_module
import ganforge.training.loop as train_module
from ganforge import launch, limits, runlock
from ganforge.checkpoint import list_checkpoints, load_checkpoint
from ganforge.data import load_dataset
from ganforge.errors import GanforgeError
from ganforge.export import load_generator
from ganforge.losses import get_loss
from ganforge.noise import NoiseSampler
from ganforge.steps import discriminator_step, generator_step
from helpers import PYTHON, TINY_CONV, TINY_MLP, assert_clean_error, read_metrics, reap, ring8_args, subprocess_env, tree, write_sealed

# --- helpers --------------------------------------------------------------------------------

STATE_KEYS = ["generator", "discriminator", "ema", "g_optimizer", "d_optimizer", "noise", "sampler"]


def flat(value, prefix: str = "") -> dict:
    """A nested state (dicts, lists, tensors, numbers) as {path: leaf}."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}/{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{prefix}/{i}").items()}
    return {prefix: value}


def differences(a, b) -> list[str]:
    """Paths where two nested states differ (tensors compared bit for bit, dtype and shape included)."""
    fa, fb = flat(a), flat(b)
    if fa.keys() != fb.keys():
        return sorted(fa.keys() ^ fb.keys())
    return [
        path for path, x in fa.items()
        if not (torch.equal(x, fb[path]) and x.dtype == fb[path].dtype if isinstance(x, torch.Tensor) else x == fb[path])
    ]


def assert_same_final_state(run: Path, reference: Path, steps: int) -> None:
    """The last checkpoints of two runs hold bit-identical players, EMA, optimizers and random streams,
    and their exported generators are byte-identical."""
    name = f"checkpoint-{steps:08d}.pt"
    a, b = load_checkpoint(run / "checkpoints" / name), load_checkpoint(reference / "checkpoints" / name)
    assert a["step"] == b["step"] == steps
    for key in STATE_KEYS:
        assert not differences(a[key], b[key]), f"{key} differs: {differences(a[key], b[key])[:5]}"
    assert (run / "generator.safetensors").read_bytes() == (reference / "generator.safetensors").read_bytes()


def finite(state: dict) -> bool:
    tensors = [t for key in ("generator", "discriminator", "ema") for t in flat(state.get(key) or {}).values()]
    return all(bool(torch.isfinite(t).all()) for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point())


def temp_files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*.tmp"))


def logged_steps(run: Path) -> list[int]:
    """Steps in metrics.jsonl, ignoring a last line cut short by a kill."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    steps = []
    for line in lines:
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return steps


def assert_error_line(result, code: int, *fragments: str, alone: bool = True) -> str:
    """Exit `code`; the last stderr line is the error (the only line if `alone`), without a traceback."""
    assert result.code == code, result
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert lines and lines[-1].startswith("ganforge: error: "), result.err
    if alone:
        assert len(lines) == 1, result.err
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def subset(files: dict[str, str], *prefixes: str) -> dict[str, str]:
    return {name: digest for name, digest in files.items() if name.startswith(prefixes)}


def run_args(out: Path, steps: int = 30, *extra: str) -> list[str]:
    """A tiny ring8 run that checkpoints every 5 steps and draws no pictures before the end."""
    return [
        "train", "--data", "ring8", "--steps", str(steps), "--out", str(out), "--log_every", "5",
        "--sample_every", "1000", "--checkpoint_every", "5", *TINY_MLP, *extra,
    ]


def wait_until(condition, timeout: float, interval: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


@pytest.fixture
def signal_trap():
    """SIGINT/SIGTERM that arrive outside training's own handler fail the test instead of stopping pytest."""

    class StraySignal(Exception):
        pass

    def trap(signum, frame):
        raise StraySignal(f"signal {signum} arrived while training's handler was not installed")

    saved = {s: signal.signal(s, trap) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


# --- SIGKILL at random moments: exact resume ------------------------------------------------


def kill_args(out: Path, steps: int, data: str = "ring8") -> list[str]:
    """Logs every step (progress visible from outside), pictures and EMA on, a checkpoint every 10 steps."""
    tiny = TINY_MLP if data == "ring8" else TINY_CONV
    return [
        "train", "--data", data, "--steps", str(steps), "--out", str(out), "--log_every", "1",
        "--sample_every", "15", "--checkpoint_every", "10", "--ema_decay", "0.9", *tiny,
    ]


def assert_run_folder_intact(run: Path) -> None:
    """What a kill may leave: every checkpoint under its final name is complete, valid and finite; the
    config and the exported generator (when present) load."""
    for path in list_checkpoints(run):
        state = load_checkpoint(path)
        assert path.name == f"checkpoint-{state['step']:08d}.pt" and finite(state)
    if (run / "config.json").exists():
        json.loads((run / "config.json").read_text())
    if (run / "generator.json").exists() and (run / "generator.safetensors").exists():
        load_generator(run)


def train_with_kills(run: Path, args: list[str], plan: list[tuple[str, float, float]]) -> list[dict]:
    """Runs `python -m ganforge <args>` until it exits 0, killing it with SIGKILL as `plan` says.

    Each kill is ("step", s, delay): once a step >= s beyond anything logged before has been logged
    (a stale metrics.jsonl cannot trigger it), wait `delay` s more; or ("time", t, 0): t s after the
    launch. Between launches the run folder is checked (`assert_run_folder_intact`).
    """
    plan, launches, seen = list(plan), [], 0
    command, most = [PYTHON, "-m", "ganforge", *args], len(plan) + 2
    while True:
        assert len(launches) < most, "the run never finished"
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=subprocess_env())
        killed = False
        try:
            if plan:
                kind, value, delay = plan[0]
                if kind == "step":
                    target = max(int(value), seen + 1)
                    assert wait_until(lambda p=process, t=target: p.poll() is not None or max(logged_steps(run), default=0) >= t, 180)
                else:
                    wait_until(lambda p=process: p.poll() is not None, value)
                time.sleep(delay)
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
                    killed = True
                    plan.pop(0)
            _, err = process.communicate(timeout=300)
        finally:
            reap(process)
        launches.append({"code": process.returncode, "err": err, "killed": killed})
        seen = max([seen, *logged_steps(run)])
        if process.returncode == 0:
            assert not plan, f"the run finished before kills {plan}"
            return launches
        assert killed and process.returncode == -signal.SIGKILL, err
        assert_run_folder_intact(run)


def kill_plan(seed: int, kills: int, steps: int, timed: int = 0) -> list[tuple[str, float, float]]:
    """Seeded kill points: `kills` step-based ones, one in each window of the first steps - 30 steps (the margin
    keeps kills away from the very end), each followed by a random 0-30 ms; `timed` ones 0.2-4 s after a launch
    (during start-up or training)."""
    rng = random.Random(seed)
    width = (steps - 30) // kills
    plan = [("step", rng.randint(i * width + 1, (i + 1) * width), rng.uniform(0, 0.03)) for i in range(kills)]
    for _ in range(timed):
        plan.insert(rng.randrange(len(plan) + 1), ("time", rng.uniform(0.2, 4.0), 0.0))
    return plan


def check_killed_run(cli, tmp_path: Path, run: Path, args: list[str], launches: list[dict], steps: int) -> None:
    assert "done: " in launches[-1]["err"] and f"{steps} steps" in launches[-1]["err"]
    assert any("resuming" in launch["err"] for launch in launches), "at least one restart resumed from a checkpoint"
    assert logged_steps(run) == list(range(1, steps + 1)), "every step logged exactly once across the kills"
    assert [p.name for p in list_checkpoints(run)] == [f"checkpoint-{s:08d}.pt" for s in (steps - 10, steps)]
    assert temp_files(run) == [], "no temporary file is left behind"
    assert (run / "samples" / "final.png").is_file()
    reference = tmp_path / "reference"
    assert cli(*[str(reference) if a == str(run) else a for a in args]).code == 0
    assert_same_final_state(run, reference, steps)


def test_sigkill_at_random_moments_then_the_same_command_ends_bit_identical(cli, tmp_path):
    """Invariant (exact resume): a CPU run killed with SIGKILL 3 times at seeded random points (mid-step,
    mid-picture, mid-checkpoint) and restarted with the same command each time ends with generator,
    discriminator, EMA, optimizer and RNG states bit-identical to an uninterrupted run; every step is logged
    once, no temp file is left, and every checkpoint seen between launches is complete."""
    run, steps = tmp_path / "run", 70
    args = kill_args(run, steps)
    launches = train_with_kills(run, args, kill_plan(seed=2024, kills=3, steps=steps))
    assert sum(launch["killed"] for launch in launches) == 3
    check_killed_run(cli, tmp_path, run, args, launches, steps)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_many_times_conv_batchnorm_run_ends_bit_identical(cli, tmp_path, seed):
    """The long variant: a conv run with BatchNorm on digits, 8 step-based kills and 3 at random times after a
    launch (which may land during start-up: imports, data loading, writing config.json)."""
    run, steps = tmp_path / "run", 120
    args = kill_args(run, steps, data="digits")
    launches = train_with_kills(run, args, kill_plan(seed=seed, kills=8, steps=steps, timed=3))
    check_killed_run(cli, tmp_path, run, args, launches, steps)


# --- SIGTERM / SIGINT -----------------------------------------------------------------------


def test_sigterm_saves_a_checkpoint_exits_130_and_the_same_command_resumes(cli, tmp_path):
    """Invariant: SIGTERM to a training process saves a checkpoint at the current step, prints one
    'stopped at step N' line and exits 130; the same command then resumes from step N and ends bit-identical
    to an uninterrupted run."""
    run, steps = tmp_path / "run", 300
    args = ["train", "--data", "ring8", "--steps", str(steps), "--out", str(run), "--log_every", "1",
            "--sample_every", "1000", "--checkpoint_every", "1000", *TINY_MLP]
    process = subprocess.Popen([PYTHON, "-m", "ganforge", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env=subprocess_env())
    try:
        assert wait_until(lambda: process.poll() is not None or logged_steps(run), 120), "training never started"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        reap(process)
    assert process.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("stopped at step ") and "run the same command again to resume" in err
    stopped = int(err.split("stopped at step ")[1].split(";")[0])
    assert 1 <= stopped < steps
    assert [p.name for p in list_checkpoints(run)] == [f"checkpoint-{stopped:08d}.pt"]
    assert load_checkpoint(list_checkpoints(run)[0])["step"] == stopped
    assert logged_steps(run) == list(range(1, stopped + 1))

    result = cli(*args)
    assert result.code == 0, result.err
    assert f"resuming {run} from step {stopped}" in result.err
    assert logged_steps(run) == list(range(1, steps + 1))
    reference = tmp_path / "reference"
    assert cli(*[str(reference) if a == str(run) else a for a in args]).code == 0
    assert_same_final_state(run, reference, steps)


def interrupt_checkpoint_write(monkeypatch, step: int, action) -> None:
    """Calls action(file) in the middle of writing the checkpoint of `step` (after torch.save, before the rename)."""
    real = checkpoint_module.atomic_write

    def atomic_write(path, write):
        if path.name != f"checkpoint-{step:08d}.pt":
            return real(path, write)

        def interrupted(f):
            write(f)
            action(f)

        return real(path, interrupted)

    monkeypatch.setattr(checkpoint_module, "atomic_write", atomic_write)


def test_sigterm_during_a_checkpoint_write_completes_it_then_stops(cli, tmp_path, monkeypatch, signal_trap):
    """Invariant: a SIGTERM that arrives while a checkpoint is being written does not cut that write short:
    the checkpoint completes, training stops at the next step with a second checkpoint, exit 130, and the
    same command resumes to a bit-identical end."""
    run = tmp_path / "run"
    interrupt_checkpoint_write(monkeypatch, 10, lambda f: os.kill(os.getpid(), signal.SIGTERM))
    result = cli(*run_args(run, 20))
    assert result.code == 130, result
    assert "stopped at step 11;" in result.err
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(run)] == [10, 11]
    monkeypatch.undo()
    assert cli(*run_args(run, 20)).code == 0
    assert cli(*run_args(tmp_path / "reference", 20)).code == 0
    assert_same_final_state(run, tmp_path / "reference", 20)


def test_a_stopped_process_waits_for_the_saved_step_before_it_exits(cli, tmp_path, monkeypatch, signal_trap):
    """Invariant: on a stop, every process meets the others only once the stop's checkpoint is written and
    the metrics log closed, so under torchrun no process exits (and has torchrun end the rest) before that."""
    run = tmp_path / "run"
    seen = []

    def barrier():
        seen.append(([load_checkpoint(p)["step"] for p in list_checkpoints(run)], read_metrics(run)))

    monkeypatch.setattr(train_module.distributed, "barrier", barrier)
    interrupt_checkpoint_write(monkeypatch, 10, lambda f: os.kill(os.getpid(), signal.SIGTERM))
    result = cli(*run_args(run, 20))
    assert result.code == 130 and "stopped at step 11;" in result.err, result
    assert seen == [([10, 11], read_metrics(run))]


def test_a_stopped_torchrun_process_exits_130_through_a_late_sigterm(cli, tmp_path, monkeypatch, signal_trap):
    """Invariant: once a process of a torchrun job has stopped with its step saved, the SIGTERM torchrun sends
    the rest of the job (when another process exited first) cannot turn its exit code 130 into a kill."""
    import ganforge.training

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ganforge.training, "train", stopped)
    monkeypatch.setattr(train_module.distributed, "launched", lambda: True)
    assert cli(*run_args(tmp_path / "run", 20)).code == 130
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


def test_a_second_sigint_during_a_save_still_ends_with_a_line_and_a_checkpoint(cli, tmp_path, monkeypatch, signal_trap):
    """Invariant: Ctrl-C twice while a checkpoint is being written does not cut the write short: that
    checkpoint completes, the run stops at the next step with its own checkpoint and the usual line, exit
    130, no temp file, and the same command resumes to a bit-identical end."""
    run = tmp_path / "run"

    def double_sigint(f):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    interrupt_checkpoint_write(monkeypatch, 10, double_sigint)
    result = cli(*run_args(run, 20))
    assert result.code == 130 and "Traceback" not in result.err, result
    assert "stopped at step 11; checkpoint saved" in result.err.strip().splitlines()[-1]
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(run)] == [10, 11]
    assert temp_files(run) == []
    monkeypatch.undo()
    result = cli(*run_args(run, 20))
    assert result.code == 0 and f"resuming {run} from step 11" in result.err, result
    assert cli(*run_args(tmp_path / "reference", 20)).code == 0
    assert_same_final_state(run, tmp_path / "reference", 20)


def test_a_second_sigint_between_saves_stops_at_once_with_a_line(cli, tmp_path, monkeypatch, signal_trap):
    """Invariant: Ctrl-C twice in the middle of a training step (not a save) stops at once, exit 130, with one
    line saying so; the checkpoints saved before are intact and the same command resumes to a bit-identical end."""
    run = tmp_path / "run"
    real = train_module.Trainer.iteration

    def iteration(trainer, skip_nonfinite):
        if trainer.step == 7:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(trainer, skip_nonfinite)

    monkeypatch.setattr(train_module.Trainer, "iteration", iteration)
    result = cli(*run_args(run, 20))
    assert result.code == 130 and result.err.strip().splitlines()[-1].startswith("stopped at once by a second Ctrl-C"), result
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(run)] == [5]
    monkeypatch.undo()
    assert f"resuming {run} from step 5" in cli(*run_args(run, 20)).err
    assert cli(*run_args(tmp_path / "reference", 20)).code == 0
    assert_same_final_state(run, tmp_path / "reference", 20)


# --- divergence guard: the two steps --------------------------------------------------------


class _NanGradient(torch.autograd.Function):
    """Identity forward, NaN gradient backward: a finite loss whose gradients are not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class Faulty(nn.Module):
    """A linear layer (and optional BatchNorm) whose output turns NaN/Inf, or whose gradient turns NaN, on demand."""

    def __init__(self, n_in: int, n_out: int, batchnorm: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.norm = nn.BatchNorm1d(n_out) if batchnorm else nn.Identity()
        self.fault: str | None = None

    def forward(self, x):
        y = self.linear(x)
        if self.fault == "nan":
            y = y * float("nan")
        elif self.fault == "inf":
            y = y * float("inf")
        elif self.fault == "nan_grad":
            y = _NanGradient.apply(y)
        return self.norm(y)


class Players:
    def __init__(self, batchnorm: bool = False) -> None:
        torch.manual_seed(0)
        self.G, self.D = Faulty(3, 2, batchnorm), Faulty(2, 1, batchnorm)
        self.g_opt = torch.optim.Adam(self.G.parameters(), lr=0.01)
        self.d_opt = torch.optim.Adam(self.D.parameters(), lr=0.01)
        self.noise, self.real, self.loss = NoiseSampler(3, seed=1), torch.randn(16, 2), get_loss("nonsaturating")

    def step(self, which: str, skip_nonfinite: bool):
        if which == "generator":
            return generator_step(self.G, self.D, self.g_opt, self.loss, self.noise, 16, skip_nonfinite)
        return discriminator_step(self.G, self.D, self.d_opt, self.loss, self.noise, self.real, skip_nonfinite=skip_nonfinite)

    def state(self) -> dict:
        return copy.deepcopy({"G": self.G.state_dict(), "D": self.D.state_dict(), "g_opt": self.g_opt.state_dict(), "d_opt": self.d_opt.state_dict()})


@pytest.mark.parametrize(
    ("which", "faulty", "fault"),
    [
        ("generator", "G", "nan"), ("generator", "G", "inf"), ("generator", "G", "nan_grad"), ("generator", "D", "nan_grad"),
        ("discriminator", "D", "nan"), ("discriminator", "D", "inf"), ("discriminator", "D", "nan_grad"), ("discriminator", "G", "nan"),
    ],
)
def test_a_non_finite_step_is_skipped_and_changes_nothing(which, faulty, fault):
    """Invariant: with skip_nonfinite, a step whose loss or gradients hold NaN/Inf reports stepped=False and
    leaves both players' parameters and the optimizers' state (moments and step counts) bit-identical. The
    same step without the guard corrupts the trained player: the check is what protects it."""
    players = Players()
    assert players.step(which, skip_nonfinite=True).stepped, "a healthy step is applied (and fills the optimizer state)"
    before = players.state()
    getattr(players, faulty).fault = fault
    assert players.step(which, skip_nonfinite=True).stepped is False
    assert differences(players.state(), before) == []
    result = players.step(which, skip_nonfinite=False)
    trained = players.G if which == "generator" else players.D
    assert result.stepped and not all(bool(torch.isfinite(p).all()) for p in trained.parameters())


@pytest.mark.parametrize("which", ["generator", "discriminator"])
def test_a_skipped_step_leaves_batchnorm_statistics_unchanged(which):
    """Minimal reproduction: players with BatchNorm, NaN fakes; the step is skipped, yet the trained player's
    running_mean/var (a buffer, saved in checkpoints) become NaN."""
    players = Players(batchnorm=True)
    players.step(which, skip_nonfinite=True)
    before = players.state()
    players.G.fault = "nan"
    assert players.step(which, skip_nonfinite=True).stepped is False
    assert differences(players.state(), before) == []


# --- divergence guard: training end to end --------------------------------------------------


class NanInjection:
    """Makes chosen training iterations draw NaN noise, so both players' losses and gradients are NaN.

    `rule(step, attempt)` picks them: `step` is the step the iteration computes, `attempt` how many times
    that step has run (a rollback replays steps). Records, for each poisoned iteration, whether players,
    optimizers and EMA came out bit-identical, and the run folder's files just before the first one.
    """

    def __init__(self, monkeypatch, rule) -> None:
        self.attempts: Counter = Counter()
        self.unchanged: list[bool] = []
        self.files_before: dict[str, str] | None = None
        self.active = False
        trainer_class = train_module.Trainer
        injection, original = self, trainer_class.iteration

        def iteration(trainer, skip_nonfinite):
            step = trainer.step + 1
            injection.attempts[step] += 1
            if not rule(step, injection.attempts[step]):
                return original(trainer, skip_nonfinite)
            if injection.files_before is None:
                injection.files_before = tree(Path(trainer.config.out))
            before = trainer_state(trainer)
            injection.active = True
            try:
                return original(trainer, skip_nonfinite)
            finally:
                injection.active = False
                injection.unchanged.append(not differences(trainer_state(trainer), before))

        monkeypatch.setattr(trainer_class, "iteration", iteration)
        home = sys.modules[trainer_class.__module__]  # the module whose iteration() calls the step functions
        for name in ("discriminator_step", "generator_step"):
            real = getattr(home, name)

            def step_function(generator, discriminator, optimizer, loss, noise, *args, _real=real, **kwargs):
                if injection.active:
                    noise = lambda n, _noise=noise: _noise(n) * float("nan")  # noqa: E731
                return _real(generator, discriminator, optimizer, loss, noise, *args, **kwargs)

            monkeypatch.setattr(home, name, step_function)


def trainer_state(trainer) -> dict:
    return copy.deepcopy({
        "generator": trainer.generator.state_dict(), "discriminator": trainer.discriminator.state_dict(),
        "g_optimizer": trainer.g_optimizer.state_dict(), "d_optimizer": trainer.d_optimizer.state_dict(),
        "ema": trainer.ema.average.state_dict() if trainer.ema is not None else None,
    })


@pytest.fixture
def inject_nan(monkeypatch):
    return lambda rule: NanInjection(monkeypatch, rule)


def test_skipped_steps_change_nothing_and_are_counted_in_metrics(cli, tmp_path, inject_nan):
    """Invariant: under the guard (default max_nonfinite_steps=20), NaN steps are skipped (players, optimizers and
    EMA unchanged), counted in metrics.jsonl's skipped_steps and the final line, and training finishes normally
    with only finite checkpoints."""
    run = tmp_path / "run"
    injection = inject_nan(lambda step, attempt: step in (7, 8))
    result = cli(*run_args(run, 30))
    assert result.code == 0, result.err
    assert "done: 30 steps" in result.err and "(2 steps skipped for NaN/Inf)" in result.err
    assert injection.unchanged == [True, True]
    assert [(m["step"], m["skipped_steps"]) for m in read_metrics(run)] == [(5, 0), (10, 2), (15, 2), (20, 2), (25, 2), (30, 2)]
    assert all(finite(load_checkpoint(p)) for p in list_checkpoints(run))


def test_with_the_guard_off_non_finite_weights_are_never_saved(cli, tmp_path, inject_nan):
    """Invariant: with max_nonfinite_steps=0 a NaN update is applied, and the next save refuses: exit 3, one
    line, and the checkpoints and exported generator stay byte-identical to the last good ones."""
    run = tmp_path / "run"
    injection = inject_nan(lambda step, attempt: step == 7)
    result = cli(*run_args(run, 30, "--max_nonfinite_steps", "0"))
    assert_error_line(result, 3, "training diverged by step 10", "weights hold NaN/Inf, so nothing was saved", "is kept")
    assert injection.unchanged == [False], "without the guard the NaN update was applied"
    saved = ("checkpoints/", "generator.")
    assert subset(tree(run), *saved) == subset(injection.files_before, *saved)
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(run)] == [5]
    assert json.loads((run / "generator.json").read_text())["step"] == 5


def test_divergence_stops_with_exit_3_one_line_and_the_last_checkpoint_kept(cli, tmp_path, inject_nan, monkeypatch):
    """Invariant: max_nonfinite_steps NaN steps in a row with on_divergence=stop end training with exit 3 and
    one line naming the streak and the kept checkpoint; checkpoints and exported generator stay byte-identical;
    the same command later (healthy) resumes from that checkpoint and finishes."""
    run = tmp_path / "run"
    injection = inject_nan(lambda step, attempt: step >= 13)
    result = cli(*run_args(run, 30, "--max_nonfinite_steps", "3"))
    assert_error_line(
        result, 3, "training diverged: 3 steps in a row had NaN/Inf losses or gradients (skipped) by step 15",
        f"the last good checkpoint in {run / 'checkpoints'} is kept",
    )
    saved = ("checkpoints/", "generator.")
    assert subset(tree(run), *saved) == subset(injection.files_before, *saved)
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(run)] == [5, 10]
    monkeypatch.undo()
    result = cli(*run_args(run, 30, "--max_nonfinite_steps", "3"))
    assert result.code == 0 and f"resuming {run} from step 10" in result.err, result


def test_rollback_recovers_from_a_transient_divergence(cli, tmp_path, inject_nan):
    """Invariant: with on_divergence=rollback a NaN streak rolls back to the last checkpoint with fresh noise and
    batches (one warning line), the replayed steps no longer diverge, and training finishes with finite weights."""
    run = tmp_path / "run"
    injection = inject_nan(lambda step, attempt: 13 <= step <= 15 and attempt == 1)
    result = cli(*run_args(run, 30, "--max_nonfinite_steps", "3", "--on_divergence", "rollback"))
    assert result.code == 0, result.err
    assert ("warning: 3 steps in a row had NaN/Inf losses or gradients (skipped) by step 15; "
            "rolled back to step 10 with fresh noise and batches (1/3)") in result.err
    assert "done: 30 steps" in result.err
    assert injection.attempts[11] == 2 and injection.attempts[16] == 1, "steps 11-15 were replayed once"
    last = load_checkpoint(run / "checkpoints" / "checkpoint-00000030.pt")
    assert finite(last) and last["sampler"]["seed"] != 0, "fresh batches after the rollback"


def test_metrics_after_a_rollback_log_every_step_once(cli, tmp_path, inject_nan):
    """Minimal reproduction: one rollback at step 15 to step 10; the lines of steps 15-30 go to the unlinked
    old file, so metrics.jsonl ends at step 10."""
    run = tmp_path / "run"
    inject_nan(lambda step, attempt: 13 <= step <= 15 and attempt == 1)
    assert cli(*run_args(run, 30, "--max_nonfinite_steps", "3", "--on_divergence", "rollback")).code == 0
    assert [m["step"] for m in read_metrics(run)] == [5, 10, 15, 20, 25, 30]


def test_rollback_gives_up_after_3_rollbacks(cli, tmp_path, inject_nan):
    """Invariant: a divergence that persists is rolled back at most 3 times (3 warning lines), then training
    stops with exit 3 and the last good checkpoint kept byte-identical."""
    run = tmp_path / "run"
    injection = inject_nan(lambda step, attempt: step >= 13)
    result = cli(*run_args(run, 30, "--max_nonfinite_steps", "3", "--on_divergence", "rollback"))
    assert_error_line(result, 3, "training diverged", "is kept", alone=False)
    warnings = result.err.strip().splitlines()[:-1]
    assert len(warnings) == 3 and all(w.startswith("warning: ") and w.endswith(f"({i}/3)") for i, w in enumerate(warnings, 1))
    saved = ("checkpoints/", "generator.")
    assert subset(tree(run), *saved) == subset(injection.files_before, *saved)


def test_rollback_without_a_checkpoint_stops(cli, tmp_path, inject_nan):
    """Invariant: a divergence before the first checkpoint cannot roll back: exit 3, one line, no checkpoint written."""
    run = tmp_path / "run"
    inject_nan(lambda step, attempt: True)
    result = cli(*run_args(run, 30, "--max_nonfinite_steps", "3", "--on_divergence", "rollback"))
    assert_error_line(result, 3, "by step 3, and there is no checkpoint to roll back to")
    assert list_checkpoints(run) == []


def test_one_skipped_step_does_not_stop_a_batchnorm_run(cli, tmp_path, inject_nan):
    """Minimal reproduction: the default digits architecture (BatchNorm in both players), one NaN step at step 7:
    the guard skips it, yet the save at step 10 finds NaN buffers and stops with exit 3."""
    inject_nan(lambda step, attempt: step == 7)
    result = cli("train", "--data", "digits", "--steps", "10", "--out", tmp_path / "run", "--checkpoint_every", "5", *TINY_CONV)
    assert result.code == 0, result.err


# --- disk full, read-only folders -----------------------------------------------------------


class WriteFault:
    """From the `nth` atomic write of a file whose name starts with `prefix`, every such write fails.

    disk_full: the temp file is created and written to, then OSError(ENOSPC) (the disk fills, or fsync
    reports it); read_only: creating the temp file fails with PermissionError(EACCES). `files_before` is
    the run folder just before the first failure.
    """

    def __init__(self, monkeypatch, run: Path, prefix: str, nth: int, fault: str) -> None:
        self.files_before: dict[str, str] | None = None
        real, count = checkpoint_module.atomic_write, [0]

        def atomic_write(path, write):
            if not Path(path).name.startswith(prefix):
                return real(path, write)
            count[0] += 1
            if count[0] < nth:
                return real(path, write)
            if self.files_before is None:
                self.files_before = tree(run)
            if fault == "read_only":
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(Path(path).parent / f".{Path(path).name}.q1w2e3.tmp"))

            def fill_up(f):
                f.write(b"\0" * 4096)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            return real(path, fill_up)

        for module in (checkpoint_module, export_module, rundir_module):
            monkeypatch.setattr(module, "atomic_write", atomic_write)


FAULT_MESSAGES = {"disk_full": "No space left on device", "read_only": "Permission denied"}


@pytest.mark.parametrize("fault", ["disk_full", "read_only"])
@pytest.mark.parametrize("target", ["checkpoint-", "generator.safetensors"])
def test_a_failed_save_keeps_the_previous_files_and_the_run_resumes(cli, tmp_path, monkeypatch, fault, target):
    """Invariant: when the 3rd save fails (disk full, or the folder turned read-only): exit 2 with one line
    naming the cause; the earlier checkpoints and export are byte-identical, loadable and exact (equal to an
    uninterrupted run's); no temp file is left; once the cause is gone the same command resumes and ends
    bit-identical to an uninterrupted run."""
    run, keep_all = tmp_path / "run", ("--keep_checkpoints", "10")
    faults = WriteFault(monkeypatch, run, target, nth=3, fault=fault)
    assert_clean_error(cli(*run_args(run, 30, *keep_all)), FAULT_MESSAGES[fault])
    assert faults.files_before is not None
    assert tree(run).keys() >= subset(faults.files_before, "checkpoints/", "generator.").keys()
    assert subset(tree(run), "checkpoints/", "generator.") == subset(faults.files_before, "checkpoints/", "generator.")
    assert temp_files(run) == []
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-00000005.pt", "checkpoint-00000010.pt"]
    load_generator(run)

    monkeypatch.undo()
    reference = tmp_path / "reference"
    assert cli(*run_args(reference, 30, *keep_all)).code == 0
    for step in (5, 10):
        name = f"checkpoint-{step:08d}.pt"
        a, b = load_checkpoint(run / "checkpoints" / name), load_checkpoint(reference / "checkpoints" / name)
        assert not any(differences(a[key], b[key]) for key in STATE_KEYS), f"{name} is exact"
    result = cli(*run_args(run, 30, *keep_all))
    assert result.code == 0 and f"resuming {run} from step 10" in result.err, result
    assert_same_final_state(run, reference, 30)


@pytest.mark.parametrize("fault", ["disk_full", "read_only"])
def test_an_unwritable_run_folder_is_a_clean_error_and_changes_nothing(cli, copy_run, ring8_run, monkeypatch, fault):
    """Invariant: resuming a run whose folder cannot be written at all (the first write, config.json, fails)
    ends with exit 2 and one line naming the cause; the folder is byte-identical and holds no temp file."""
    run = copy_run(ring8_run)
    before = tree(run)
    WriteFault(monkeypatch, run, "config.json", nth=1, fault=fault)
    assert_clean_error(cli(*ring8_args(run, 30)), FAULT_MESSAGES[fault])
    assert tree(run) == before and temp_files(run) == []


class FillingFile:
    """A file whose disk fills after `room` bytes: later writes raise OSError(ENOSPC), as a real file's would."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def test_disk_full_in_the_middle_of_a_checkpoint_is_a_clean_error(cli, tmp_path, monkeypatch):
    """Minimal reproduction: the disk fills 1 kB into the 3rd checkpoint; torch.save turns the OSError into a
    RuntimeError that nothing catches (the previous checkpoints do stay intact and no temp file is left)."""
    run = tmp_path / "run"
    real, count = checkpoint_module.atomic_write, [0]

    def atomic_write(path, write):
        if Path(path).name.startswith("checkpoint-"):
            count[0] += 1
            if count[0] >= 3:
                return real(path, lambda f: write(FillingFile(f, 1024)))
        return real(path, write)

    monkeypatch.setattr(checkpoint_module, "atomic_write", atomic_write)
    try:
        result = cli(*run_args(run, 30))
    finally:
        assert [p.name for p in list_checkpoints(run)] == ["checkpoint-00000005.pt", "checkpoint-00000010.pt"]
        assert temp_files(run) == []
    assert_clean_error(result, "No space left on device")


def _permissions_apply() -> bool:
    """Whether chmod blocks writes here (it does not for root, which bypasses file permissions)."""
    with tempfile.TemporaryDirectory() as folder:
        locked = Path(folder) / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            (locked / "probe").write_bytes(b"")
            return False
        except PermissionError:
            return True
        finally:
            locked.chmod(0o755)


needs_non_root = pytest.mark.skipif(not _permissions_apply(), reason="file permissions do not apply (running as root)")


@needs_non_root
def test_a_chmod_read_only_run_folder_is_a_clean_error_and_changes_nothing(cli, copy_run, ring8_run):
    """Invariant (real permissions): resuming a run in a read-only folder ends with exit 2 and one line
    'Permission denied'; nothing in it changes."""
    run = copy_run(ring8_run)
    before = tree(run)
    folders = [run, *[p for p in run.rglob("*") if p.is_dir()]]
    for folder in folders:
        folder.chmod(0o555)
    try:
        assert_clean_error(cli(*ring8_args(run, 30)), "Permission denied")
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert tree(run) == before and temp_files(run) == []


@needs_non_root
def test_a_new_run_under_a_chmod_read_only_folder_is_a_clean_error(cli, tmp_path):
    """Invariant (real permissions): --out inside a read-only folder ends with exit 2, 'Permission denied',
    and nothing is created."""
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        assert_clean_error(cli(*ring8_args(parent / "run", 4)), "Permission denied")
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


# --- checkpoints: corrupt, foreign or malicious ---------------------------------------------


class _TouchOnLoad:
    """Unpickling this creates a file: proof that code ran (no shell involved)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _newest(run: Path, kind: str, marker: Path) -> None:
    good = load_checkpoint(run / "checkpoints" / "checkpoint-00000020.pt")
    path = run / "checkpoints" / "checkpoint-00000030.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "newer_format":
        write_sealed(path, {**good, "format_version": 3, "step": 30})
    elif kind == "not_a_checkpoint":
        write_sealed(path, {"weights": torch.zeros(3)})
    else:
        write_sealed(path, {**good, "step": 30, "payload": _TouchOnLoad(marker)})


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("empty", "is not a ganforge checkpoint of format 2"), ("newer_format", "has format version 3: expected 2"),
     ("not_a_checkpoint", "is not a ganforge checkpoint"), ("code_execution", "is corrupt, truncated or unsafe to load")],
)
def test_an_unusable_newest_checkpoint_is_reported_and_the_previous_one_used(cli, copy_run, ring8_run, tmp_path, kind, reason):
    """Invariant: a newest checkpoint that is empty (power loss), of a newer format, not a ganforge checkpoint, or
    a crafted pickle that would run code, is refused (weights_only loading: the code never runs), named in one
    warning, and the run resumes from the previous good checkpoint. (Truncated files: test_cli.)"""
    run, marker = copy_run(ring8_run), tmp_path / "code-ran"
    _newest(run, kind, marker)
    result = cli(*ring8_args(run, 40))
    assert result.code == 0, result.err
    assert f"warning: checkpoint {run / 'checkpoints' / 'checkpoint-00000030.pt'} {reason}" in result.err
    assert f"resuming {run} from step 20" in result.err
    assert not marker.exists(), "the pickled code ran"
    assert load_checkpoint(run / "checkpoints" / "checkpoint-00000040.pt")["step"] == 40


def test_a_pickle_in_place_of_the_exported_generator_is_refused_and_never_run(cli, copy_run, ring8_run, tmp_path):
    """Invariant: the exported generator is read as safetensors only: a pickle put in its place gives exit 2 and
    one line, and its code never runs."""
    run, marker = copy_run(ring8_run), tmp_path / "code-ran"
    torch.save({"payload": _TouchOnLoad(marker)}, run / "generator.safetensors")
    assert_clean_error(cli("sample", run, "--n", "2", "--out", tmp_path / "x.npy"), "generator.safetensors is corrupt")
    assert not marker.exists() and not (tmp_path / "x.npy").exists()


def test_a_bit_flip_in_a_checkpoint_is_detected(copy_run, ring8_run):
    """Minimal reproduction: flip one bit inside a generator weight of the newest checkpoint; torch alone
    would load it with a different weight (the zip CRC32 it writes is not checked on load): the checksum
    refuses it instead."""
    run = copy_run(ring8_run)
    path = run / "checkpoints" / "checkpoint-00000020.pt"
    weight = load_checkpoint(path)["generator"]["net.0.weight"]
    raw = bytearray(path.read_bytes())
    at = raw.find(weight.numpy().tobytes())
    assert at > 0
    raw[at + 1] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(GanforgeError, match=rf"^checkpoint {re.escape(str(path))} is corrupt or truncated: its checksum does not match$"):
        load_checkpoint(path)


# --- leftovers of interrupted writes ----------------------------------------------------------


def test_leftover_temp_files_are_removed_when_the_run_is_reopened(cli, copy_run, ring8_run):
    """Invariant: temp files of atomic writes cut short by a crash (config, export, checkpoint) are removed when
    the run folder is opened again; the checkpoints they would have replaced are used."""
    run = copy_run(ring8_run)
    leftovers = [run / ".config.json.k3j2x9.tmp", run / ".generator.safetensors.a1b2c3.tmp",
                 run / "checkpoints" / ".checkpoint-00000030.pt.zz9y8x.tmp"]
    for path in leftovers:
        path.write_bytes(b"half written")
    result = cli(*ring8_args(run, 30))
    assert result.code == 0 and f"resuming {run} from step 20" in result.err, result
    assert temp_files(run) == []


def test_a_run_killed_while_writing_its_first_config_restarts(cli, tmp_path):
    """Minimal reproduction: SIGKILL during the very first write leaves <out>/.config.json.XXXX.tmp and nothing
    else; the same command then refuses the folder instead of starting the run."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ".config.json.k3j2x9.tmp").write_bytes(b"{")
    result = cli(*ring8_args(run, 4))
    assert result.code == 0, result.err


def test_a_run_killed_while_drawing_its_final_picture_is_completed_by_the_same_command(cli, copy_run, ring8_run):
    """Minimal reproduction: SIGKILL after the last checkpoint, during samples/final.png (its temp file is left);
    the same command says 'already trained' and leaves final.png missing and the temp file in place."""
    run = copy_run(ring8_run)
    (run / "samples" / "final.png").unlink()
    (run / "samples" / ".final.png.tmp").write_bytes(b"\x89PNG half")
    assert cli(*ring8_args(run, 20)).code == 0
    assert (run / "samples" / "final.png").is_file() and temp_files(run) == []


# --- bad input at the command line ------------------------------------------------------------


def _write_inputs(folder: Path) -> None:
    (folder / "empty_folder").mkdir()
    (folder / "empty_mnist").mkdir()
    (folder / "missing_value.csv").write_text("x,y\n1,2\n3,\n5,6\n")
    (folder / "text.csv").write_text("1,2\n3,abc\n5,6\n")
    table = np.ones((4, 2))
    table[1, 1] = np.nan
    np.save(folder / "nan.npy", table)
    table[1, 1] = -np.inf
    np.save(folder / "inf.npy", table)
    images = folder / "images"
    images.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), 40 * i).save(images / f"{i}.png")
    raw = (images / "3.png").read_bytes()
    (images / "3.png").write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--latent_dim", "0"], ["latent_dim=0 is invalid: expected an integer >= 1"]),
        (["--steps", "1.5"], ["steps='1.5' is invalid: expected an integer"]),
        (["--keep_checkpoints", "0"], ["keep_checkpoints=0 is invalid"]),
        (["--max_nonfinite_steps", "-1"], ["max_nonfinite_steps=-1 is invalid: expected an integer >= 0"]),
        (["--on_divergence", "retry"], ["on_divergence='retry' is invalid: expected one of stop, rollback"]),
        (["--on_bad_image", "ignore"], ["on_bad_image='ignore' is invalid"]),
        (["--data", "{tmp}/empty_folder"], ["empty_folder': no image files found"]),
        (["--data", "mnist:{tmp}/empty_mnist"], ["no train-images-idx3-ubyte[.gz] file"]),
        (["--data", "{tmp}/missing_value.csv"], ["missing_value.csv: line 3, column 2 is '': expected a number"]),
        (["--data", "{tmp}/text.csv", "--table", "false"], ["text.csv: line 2, column 2 is 'abc': expected a number"]),  # else a table
        (["--data", "{tmp}/nan.npy"], ["nan.npy: row 2 holds NaN or Inf"]),
        (["--data", "{tmp}/inf.npy"], ["inf.npy: row 2 holds NaN or Inf"]),
        (["--data", "{tmp}/images"], ["3.png: cannot read image", "on_bad_image=skip"]),
    ],
)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(cli, tmp_path, extra, fragments):
    """Invariant: each bad value or bad data file ends with exit 2 and one stderr line naming the problem (the key
    and value, or the file, line and column); no run folder is created."""
    _write_inputs(tmp_path)
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    result = cli("train", "--data", "ring8", "--steps", "2", "--out", tmp_path / "run", "--device", "cpu", "--quiet", *extra)
    assert_clean_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_unreadable_images_are_skipped_with_a_warning_and_a_count(cli, tmp_path):
    """Invariant: with on_bad_image=skip, truncated and junk image files are skipped, one warning line gives
    their count and names one, and training runs on the rest."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        Image.new("RGB", (8, 8), (30 * i, 100, 200)).save(images / f"good_{i}.png")
    raw = (images / "good_0.png").read_bytes()
    (images / "bad_cut.png").write_bytes(raw[: len(raw) // 2])
    (images / "bad_junk.jpg").write_bytes(b"this is not a jpeg")
    result = cli("train", "--data", images, "--on_bad_image", "skip", "--steps", "2", "--out", tmp_path / "run", *TINY_CONV, "--batch_size", "4")
    assert result.code == 0, result.err
    warning = [line for line in result.err.splitlines() if line.startswith("warning:")]
    assert warning == [f"warning: skipped 2 unreadable image file(s) (on_bad_image=skip), e.g. {images / 'bad_cut.png'}"]


def _mixed_folder(folder: Path) -> list[tuple[int, int, int]]:
    """One image per mode, of several sizes; returns the RGB colour each should load as (sorted by name)."""
    folder.mkdir()
    Image.new("L", (8, 8), 100).save(folder / "a_grey.png")
    Image.new("RGB", (12, 12), (200, 50, 10)).save(folder / "b_rgb.png")
    Image.new("RGBA", (8, 16), (10, 220, 30, 255)).save(folder / "c_rgba.png")
    palette = Image.new("P", (16, 16), 3)
    palette.putpalette([0, 0, 0] * 3 + [40, 80, 160] + [0, 0, 0] * 252)
    palette.save(folder / "d_palette.png")
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(folder / "e_grey16.png")
    Image.new("1", (8, 8), 1).save(folder / "f_bilevel.png")
    Image.new("LA", (10, 10), (60, 255)).save(folder / "g_grey_alpha.png")
    Image.new("RGB", (8, 8), (5, 6, 7)).save(folder / "h_rgb.jpg", quality=100)
    return [(100,) * 3, (200, 50, 10), (10, 220, 30), (40, 80, 160), (155,) * 3, (255,) * 3, (60,) * 3, (5, 6, 7)]


def test_a_folder_of_mixed_modes_and_sizes_loads_correctly(tmp_path):
    """Invariant: grey L, RGB, RGBA, palette P, 16-bit I;16, bilevel 1, grey+alpha LA and JPEG images of different
    sizes in one folder load as one RGB tensor with each image's own colour (16-bit scaled to 8 bits)."""
    expected = _mixed_folder(tmp_path / "mixed")
    with Image.open(tmp_path / "mixed" / "e_grey16.png") as image:
        assert image.mode.startswith("I"), "the 16-bit file really is 16-bit"
    data = load_dataset(str(tmp_path / "mixed"), image_size=8)
    assert data.samples.shape == (8, 3, 8, 8) and data.samples.dtype == torch.uint8
    for i, colour in enumerate(expected):
        pixels = data.samples[i].reshape(3, -1).int()
        assert (pixels - torch.tensor(colour).view(3, 1)).abs().max() <= 2, (i, colour, pixels[:, 0].tolist())


def test_a_grey_folder_of_mixed_modes_stays_one_channel_and_trains(cli, tmp_path):
    """Invariant: a folder whose images are all grey (L, I;16, 1, LA) loads with 1 channel, and a mixed-mode,
    mixed-size folder trains end to end."""
    folder = tmp_path / "grey"
    folder.mkdir()
    Image.new("L", (8, 8), 100).save(folder / "a.png")
    Image.fromarray(np.full((16, 16), 1000, np.uint16)).save(folder / "b.png")
    Image.new("1", (8, 8), 0).save(folder / "c.png")
    Image.new("LA", (8, 8), (60, 255)).save(folder / "d.png")
    data = load_dataset(str(folder), image_size=8)
    assert data.samples.shape == (4, 1, 8, 8)
    loaded = data.samples[:, 0, 0, 0].tolist()
    assert all(abs(a - b) <= 1 for a, b in zip(loaded, [100, 1000 * 255 / 65535, 0, 60])), loaded
    _mixed_folder(tmp_path / "mixed")
    result = cli("train", "--data", tmp_path / "mixed", "--image_size", "8", "--steps", "2", "--out", tmp_path / "run", *TINY_CONV, "--batch_size", "4")
    assert result.code == 0, result.err
    assert load_generator(tmp_path / "run").sample(2).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("seed", ["1e30", "100000000000000"])
def test_a_huge_seed_is_a_clean_error(cli, tmp_path, seed):
    """Minimal reproduction: --seed 1e30 fails in torch.manual_seed before the run folder exists; --seed 1e14 passes
    that check but overflows in the batch sampler after the run folder was created."""
    result = cli(*ring8_args(tmp_path / "run", 4), "--seed", seed)
    assert_clean_error(result, "seed=")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["data_path", "config_path"])
def test_errors_stay_on_one_line_whatever_the_input(cli, tmp_path, case):
    """Minimal reproduction: --data 'a<newline>b.csv' or a config file 'my<newline>run.yaml' (no such file):
    'ganforge: error: ...' spans two lines."""
    name = str(tmp_path / ("a\nb.csv" if case == "data_path" else "my\nrun.yaml"))
    args = ["--data", name] if case == "data_path" else [name]
    assert_clean_error(cli("train", *args, "--out", tmp_path / "run", "--quiet"))


# --- a resume is checked whole before anything is written -------------------------------------


def _forged_checkpoint(change):
    """Rewrites the newest checkpoint (step 20) of the run, sealed as a valid file, with change(state) applied."""

    def forge(run: Path) -> None:
        path = run / "checkpoints" / "checkpoint-00000020.pt"
        state = load_checkpoint(path)
        change(state)
        write_sealed(path, state)

    return forge


def _another_runs_checkpoint(state: dict) -> None:
    state["config"] = {**state["config"], "data": "grid25"}


def _wider_generator(state: dict) -> None:
    name = next(iter(state["generator"]))
    state["generator"][name] = torch.zeros(*state["generator"][name].shape[:-1], 99)


def _renamed_checkpoint(run: Path) -> None:
    (run / "checkpoints" / "checkpoint-00000020.pt").rename(run / "checkpoints" / "checkpoint-00000500.pt")


def _stray_byte_in_metrics(run: Path) -> None:
    lines = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (run / "metrics.jsonl").write_bytes(b"".join([lines[0], b"\xff" + lines[1], *lines[2:]]))


def _checkpoints_turned_into_a_file(run: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("not a folder")


REFUSED_RESUMES = {
    "another_runs_checkpoint": (
        _forged_checkpoint(_another_runs_checkpoint), [], ["checkpoint-00000020.pt is of a run with a different config", "data: 'grid25' -> 'ring8'"]
    ),
    "checkpoint_of_other_shapes": (_forged_checkpoint(_wider_generator), [], ["does not fit this run's generator", "expected"]),
    "incomplete_checkpoint_state": (_forged_checkpoint(lambda s: s.update(sampler=None)), [], ["holds no complete training state"]),
    "name_says_another_step": (_renamed_checkpoint, ["--steps", "600"], ["holds step 20 but its name says step 500"]),
    "stray_byte_in_metrics": (_stray_byte_in_metrics, ["--steps", "40"], ["metrics.jsonl: line 2 is not a JSON record", "--new"]),
    "checkpoints_is_a_file": (_checkpoints_turned_into_a_file, ["--steps", "40"], ["checkpoints is not a folder", "--new"]),
    "checkpoints_deleted": (lambda run: shutil.rmtree(run / "checkpoints"), ["--steps", "40"], ["holds results up to step 20 but no checkpoint", "--new"]),
    "config_is_a_list": (lambda run: (run / "config.json").write_text("[1, 2]"), [], ["config.json holds [1, 2]: expected a JSON object", "--new"]),
    "config_is_null": (lambda run: (run / "config.json").write_text("null"), [], ["config.json holds null: expected a JSON object"]),
    "eval_n_too_small": (lambda run: None, ["eval_every=10", "eval_n=3"], ["eval_n=3 is invalid: expected an integer >= 6"]),
    "empty_steps": (lambda run: None, ["steps="], ["steps= is empty", "steps=auto"]),
}


@pytest.mark.parametrize("case", list(REFUSED_RESUMES))
def test_a_resume_that_cannot_go_on_is_refused_before_anything_changes(cli, copy_run, ring8_run, case):
    """Invariant (validate, then commit): whatever can refuse a resume (the saved config, the checkpoint's own
    config, step and shapes, the metrics file, the evaluation settings) is checked before any file changes:
    exit 2, one line, every file of the run folder byte-identical."""
    damage, extra, fragments = REFUSED_RESUMES[case]
    run = copy_run(ring8_run)
    damage(run)
    before = tree(run)
    assert_clean_error(cli(*ring8_args(run, 20), *extra), *fragments)
    assert tree(run) == before


def test_fewer_steps_on_a_finished_run_change_nothing(cli, copy_run, ring8_run):
    """Minimal reproduction: --steps 10 on a finished 20-step run said 'already trained' but rewrote config.json
    with steps=10."""
    run = copy_run(ring8_run)
    before = tree(run)
    result = cli(*ring8_args(run, 10))
    assert result.code == 0 and "already trained to step 20 (steps=10)" in result.err
    assert tree(run) == before


@pytest.mark.parametrize("killed", ["before_the_checkpoint", "before_the_readable_spec"])
def test_a_run_stopped_before_its_first_checkpoint_restarts_in_place(cli, tmp_path, killed):
    """Invariant: a run with metrics (and an export) no further than its first checkpoint's step, but no
    checkpoint (killed between the export and the checkpoint, or between the export's two files), is restarted
    by the same command and ends as a run never stopped. (Found by the SIGKILL test: the second case was refused.)"""
    run = tmp_path / "run"
    assert cli(*ring8_args(run, 10)).code == 0
    shutil.rmtree(run / "checkpoints")
    if killed == "before_the_readable_spec":
        (run / "generator.json").unlink()
    result = cli(*ring8_args(run, 20))
    assert result.code == 0, result.err
    assert logged_steps(run) == [5, 10, 15, 20]
    assert cli(*ring8_args(tmp_path / "reference", 20)).code == 0
    assert_same_final_state(run, tmp_path / "reference", 20)


# --- one writer per run folder ------------------------------------------------------------------


def test_a_second_process_on_a_locked_run_folder_is_refused_and_changes_nothing(cli, copy_run, ring8_run):
    """Invariant: while one process holds a run folder (runlock), another `ganforge train` on it gets one line
    naming the folder and the holder's process id, exit 2, and the folder, temp files included, is byte-identical."""
    run = copy_run(ring8_run)
    (run / ".config.json.x1y2z3.tmp").write_bytes(b"{")  # another process's write in progress
    before = tree(run)
    with runlock.hold(run):
        assert_clean_error(cli(*ring8_args(run, 40)), f"out='{run}' is in use by another ganforge run (process id {os.getpid()})")
    assert tree(run) == before
    assert not runlock.lock_path(run).exists(), "the holder removes its lock file"


def test_two_trainings_at_once_on_one_folder(tmp_path):
    """Invariant: a second `ganforge train` on the --out of a running one exits 2 with the one-line lock error;
    the first goes on (stopped here by SIGTERM: exit 130, its checkpoint saved), every step logged once."""
    run = tmp_path / "run"
    command = [PYTHON, "-m", "ganforge", *ring8_args(run, 1_000_000)]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert wait_until(lambda: (run / "metrics.jsonl").exists() or first.poll() is not None, 120)
        second = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=120)
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=120)
    finally:
        reap(first)
    assert second.returncode == 2 and second.stderr.strip().splitlines() == [
        f"ganforge: error: out='{run}' is in use by another ganforge run (process id {first.pid}): wait for it to end, or choose another --out"
    ]
    assert first.returncode == 130, first_err
    stopped = load_checkpoint(list_checkpoints(run)[-1])["step"]
    assert logged_steps(run) == list(range(5, stopped + 1, 5))
    assert not runlock.lock_path(run).exists()


def test_a_lock_file_left_by_a_killed_run_does_not_block(cli, tmp_path):
    """Invariant: the kernel drops a dead process's lock; its lock file (with its old process id) is reused."""
    run = tmp_path / "run"
    runlock.lock_path(run).write_text("999999\n")
    assert cli(*ring8_args(run, 4)).code == 0
    assert not runlock.lock_path(run).exists()


@pytest.mark.skipif(not _permissions_apply(), reason="permissions do not apply (running as root)")
def test_a_run_folder_in_a_read_only_parent_is_locked_itself(tmp_path):
    """Invariant: where the lock file cannot be made beside the run folder (its parent is read-only), the run
    folder itself is locked: a second holder is still refused, and the folder is unchanged."""
    parent = tmp_path / "mount"
    run = parent / "run"
    run.mkdir(parents=True)
    parent.chmod(0o555)
    try:
        with runlock.hold(run):
            with pytest.raises(GanforgeError, match="is in use by another ganforge run"), runlock.hold(run):
                pass
        assert sorted(p.name for p in parent.iterdir()) == ["run"] and not any(run.iterdir())
    finally:
        parent.chmod(0o755)


def test_a_lock_file_that_cannot_be_made_falls_back_to_the_folder(tmp_path, monkeypatch):
    """Invariant (simulated EACCES, as under root `chmod` does not apply): the run folder itself is locked then."""
    run = tmp_path / "run"
    run.mkdir()
    real_open = os.open

    def no_lock_file(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(runlock.os, "open", no_lock_file)
    with runlock.hold(run):
        with pytest.raises(GanforgeError, match=f"out='{run}' is in use by another ganforge run \\(another process\\)"), runlock.hold(run):
            pass
    with runlock.hold(run):  # released
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# --- bounds for every number a user types ---------------------------------------------------


@pytest.mark.parametrize(("args", "fragments"), [
    (["image_size=100000"], ["image_size=100000 is invalid: expected an integer from 1 to 1,024"]),
    (["latent_dim=1e9"], ["latent_dim=1000000000 is invalid: expected an integer from 1 to 16,384"]),
    (["--g_width", "1e7"], ["g_width=10000000 is invalid: expected an integer from 1 to 16,384"]),
    (["--d_depth", "100000"], ["d_depth=100000 is invalid: expected an integer from 1 to 64"]),
    (["eval_n=1e9"], ["eval_n=1000000000 is invalid: expected an integer from 6 to 1,000,000"]),
    (["threads=1e6"], ["threads=1000000 is invalid: expected an integer from 1 to 1,024"]),
    (["--steps", "1e12"], ["steps=1000000000000 is invalid: expected an integer from 1 to 1,000,000,000"]),
    (["--batch_size", "1e9"], ["batch_size=1000000000 is invalid: expected an integer from 1 to 1,048,576"]),
    (["gp_weight=1e300"], ["gp_weight=1e+300 is invalid: expected a number from 0 to 1e+06"]),
    (["--nproc", "100000"], ["--nproc 100000 is invalid: expected an integer from 1 to"]),
    (["--g_width", "9" * 5000], ["g_width=", "...", "expected an integer"]),
])
def test_every_number_has_an_upper_bound(cli, tmp_path, args, fragments):
    """Invariant: a size, count or width beyond its bound is one line naming the key and its range, exit 2, no
    run folder; a long input is cut in the message."""
    line = assert_clean_error(cli(*ring8_args(tmp_path / "run", 4), *args), *fragments)
    assert len(line) < 300
    assert not (tmp_path / "run").exists()


def test_networks_too_large_for_free_memory_are_refused(cli, tmp_path, monkeypatch):
    """Invariant: networks whose training state would not fit in free memory are refused before they are built."""
    monkeypatch.setattr(limits, "available_memory", lambda device="cpu": 10 * 2**20)
    assert_clean_error(cli(*ring8_args(tmp_path / "run", 4), "--g_width", "2000", "--g_depth", "2"),
                       "parameters and batches of 16 need", "GiB to train", "expected smaller widths")
    assert not (tmp_path / "run").exists()


def test_batches_too_large_for_free_memory_are_refused(cli, tmp_path, monkeypatch):
    """Minimal reproduction: a batch of a million samples through 1,024-wide networks (192 GiB of activations) was
    left to the allocator; the activations are now counted by a forward pass on the meta device first."""
    monkeypatch.setattr(limits, "available_memory", lambda device="cpu": 64 * 2**30)
    assert_clean_error(cli(*ring8_args(tmp_path / "run", 4), "--batch_size", "1048576", "--g_width", "1024", "--d_width", "1024"),
                       "parameters and batches of 1,048,576 need", "batch_size")
    assert not (tmp_path / "run").exists()


def test_an_image_size_too_large_for_free_memory_is_refused(cli, tmp_path, monkeypatch):
    """Minimal reproduction: digits at image_size=1024 (1,797 images resized) was killed by the kernel for memory."""
    monkeypatch.setattr(limits, "available_memory", lambda device="cpu": 64 * 2**20)
    assert_clean_error(cli("train", "--data", "digits", "--image_size", "256", "--out", tmp_path / "run", *TINY_CONV),
                       "image_size=256 is invalid for 1,797 images of 1 channel(s): expected at most")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("command", "fragments"), [
    (["sample", "--n", "1000000000", "--out", "x.npy"], ["--n 1000000000 is invalid: expected an integer from 1 to"]),
    (["sample", "--n", "5", "--seed", "-1", "--out", "x.npy"], ["--seed -1 is invalid: expected an integer from 0 to 2**31 - 1"]),
    (["eval", "--n", "1000000000"], ["--n 1000000000 is invalid: expected an integer from 6 to 1,000,000"]),
    (["eval", "--n", "3"], ["--n 3 is invalid: expected an integer from 6"]),
    (["eval", "--seed", "99999999999"], ["--seed 99999999999 is invalid"]),
])
def test_sample_and_eval_counts_are_bounded(cli, copy_run, ring8_run, tmp_path, command, fragments):
    run = copy_run(ring8_run)
    before = tree(run)
    name, *rest = command
    rest = [str(tmp_path / a) if a.endswith(".npy") else a for a in rest]
    assert_clean_error(cli(name, run, *rest), *fragments)
    assert tree(run) == before and not (tmp_path / "x.npy").exists()


# --- the exported generator is checked as checkpoints are ------------------------------------


def _unseal(run: Path) -> dict:
    """Turns the export into one written before the checksum (plain safetensors); returns its generator.json."""
    (run / "generator.safetensors").write_bytes(save(load_file(run / "generator.safetensors")))
    return json.loads((run / "generator.json").read_text())


SPEC_DAMAGE = {
    "negative_shape": (lambda s: s.update(sample_shape=[-2]), "sample_shape [-2] is not a list of 1 to 3 positive sizes"),
    "text_shape": (lambda s: s.update(sample_shape="2"), "'sample_shape' is missing or not a list"),
    "huge_shape": (lambda s: s.update(sample_shape=[10**12]), "sample_shape [1000000000000] is not a list"),
    "latent_mismatch": (lambda s: s["noise"].update(latent_dim=7), "the network's latent_dim 1 differs from the noise's 7"),
    "short_shift": (lambda s: s["transform"].update(shift=[0.0]), "transform shift is not 2 finite numbers"),
    "huge_width": (lambda s: s["config"].update(width=16000, depth=60), "parameters need"),
    "spec_is_a_list": (lambda s: s.clear(), "'class' is missing"),
    "unknown_class": (lambda s: s.update({"class": "Nope"}), "network 'Nope' is unknown"),
}


@pytest.mark.parametrize("case", list(SPEC_DAMAGE))
def test_a_damaged_generator_spec_is_one_line(cli, copy_run, ring8_run, tmp_path, monkeypatch, case):
    """Invariant: every field of generator.json is checked before anything is built (an export without a checksum,
    as older versions wrote): `sample` and `eval` answer a bad one with one line, exit 2, and write nothing."""
    monkeypatch.setattr(limits, "available_memory", lambda device="cpu": 2**30)
    run = copy_run(ring8_run)
    spec = _unseal(run)
    change, fragment = SPEC_DAMAGE[case]
    change(spec)
    (run / "generator.json").write_text(json.dumps(spec))
    assert_clean_error(cli("sample", run, "--n", "4", "--out", tmp_path / "x.npy"), "generator.json", fragment)
    assert_clean_error(cli("eval", run, "--no-cache"), fragment)
    assert not (tmp_path / "x.npy").exists() and not (run / "eval.json").exists()


def test_a_flipped_byte_in_the_exported_generator_is_detected(cli, copy_run, ring8_run, tmp_path):
    """Minimal reproduction: one changed byte in generator.safetensors was sampled from without a word."""
    run = copy_run(ring8_run)
    raw = bytearray((run / "generator.safetensors").read_bytes())
    raw[-1] ^= 0x01
    (run / "generator.safetensors").write_bytes(bytes(raw))
    assert_clean_error(cli("sample", run, "--n", "4", "--out", tmp_path / "x.npy"), "generator.safetensors is corrupt: its checksum does not match")


def test_the_sealed_spec_wins_over_an_edited_generator_json(copy_run, ring8_run):
    """Invariant: generator.json is a readable copy; the spec sealed with the weights is the one used, so an
    export cut between its two files (or an edited copy) still loads as written."""
    run = copy_run(ring8_run)
    (run / "generator.json").write_text("{not json")
    assert load_generator(run).sample(3).shape == (3, 2)


# --- --nproc ------------------------------------------------------------------------------------


def test_nproc_checks_config_and_data_before_torchrun_starts(cli, tmp_path, monkeypatch):
    """Minimal reproduction: `--nproc 2` with a bad value exited 143 after 8 lines, the error buried."""
    import ganforge.cli as cli_module

    monkeypatch.setattr(cli_module, "_launch", lambda *a: pytest.fail("torchrun started"))
    assert_clean_error(cli(*ring8_args(tmp_path / "run", 4), "--nproc", "2", "--g_width", "0"), "g_width=0 is invalid")
    assert_clean_error(cli("train", "--data", tmp_path / "none.csv", "--nproc", "2", "--out", tmp_path / "run"), "no such file")
    assert_clean_error(cli(*ring8_args(tmp_path / "run", 4), "--nproc", "2", "arch=conv"), "arch='conv' needs image data")
    assert not (tmp_path / "run").exists()


def test_a_failing_process_of_a_torchrun_job_reports_its_own_error(tmp_path):
    """Invariant: when one process of `--nproc 2` fails (here: the run folder is locked by this test), the job ends
    with that process's own error line and exit code (2), not a line about the peer torchrun then stopped."""
    run = tmp_path / "run"
    with runlock.hold(run):
        result = subprocess.run([PYTHON, "-m", "ganforge", *ring8_args(run, 10), "--nproc", "2"],
                                capture_output=True, text=True, env=subprocess_env(), timeout=300)
    ours = [line for line in result.stderr.splitlines() if line.startswith("ganforge: ")]
    assert result.returncode == 2, result.stderr
    assert ours == [f"ganforge: error: out='{run}' is in use by another ganforge run (process id {os.getpid()}): wait for it to end, "
                    "or choose another --out", "ganforge: error: process 0 failed with exit code 2"], result.stderr
    assert "Traceback" not in result.stderr and not run.exists()


def _failure(exitcode: int, timestamp: int):
    return types.SimpleNamespace(exitcode=exitcode, timestamp=timestamp)


@pytest.mark.parametrize(("failures", "rank", "code"), [
    ({0: _failure(2, 5), 1: _failure(-signal.SIGTERM, 6)}, 0, 2),  # its own error, then the launcher's SIGTERM to its peer
    ({0: _failure(-signal.SIGTERM, 1), 1: _failure(2, 5)}, 1, 2),  # even when the SIGTERM is recorded first
    ({0: _failure(4, 5), 1: _failure(-signal.SIGKILL, 6)}, 1, -signal.SIGKILL),  # killed: the cause of its peer's lost contact
    ({0: _failure(4, 5), 1: _failure(3, 6)}, 1, 3),  # an own error before a lost connection
    ({0: _failure(130, 5), 1: _failure(130, 5)}, 0, 130),
    ({0: _failure(-signal.SIGTERM, 6), 1: _failure(130, 5)}, 1, 130),  # stopped and saved, then its peer ended by the launcher
    ({0: _failure(130, 6), 1: _failure(-signal.SIGTERM, 5)}, 0, 130),  # even when the SIGTERM is recorded first
])
def test_the_launcher_reports_the_failure_that_caused_the_others(failures, rank, code):
    found_rank, failure = launch._cause(failures)
    assert (found_rank, failure.exitcode) == (rank, code)


# --- the command line never shows a traceback --------------------------------------------------


def test_an_unexpected_exception_is_one_line_with_exit_1(cli, ring8_run, tmp_path, monkeypatch):
    """Invariant: an error nobody foresaw (a bug) is one line with its type and message, the --debug hint, exit 1;
    with --debug the traceback shows."""
    monkeypatch.setattr(export_module, "load_generator", lambda *a, **k: (_ for _ in ()).throw(ZeroDivisionError("boom\nmore")))
    result = cli("sample", ring8_run, "--out", tmp_path / "x.npy")
    assert result.code == 1 and result.err.strip().splitlines() == [
        "ganforge: error: unexpected ZeroDivisionError: boom (run with --debug for the traceback)"
    ]
    with pytest.raises(ZeroDivisionError):
        cli("--debug", "sample", ring8_run, "--out", tmp_path / "x.npy")


@pytest.mark.parametrize("args", [
    ["sample"], ["train", "--nproc", "x"], ["eval"], ["sample", "run", "--n", "many", "--out", "x.npy"], ["frobnicate"],
])
def test_usage_errors_are_one_line(cli, args):
    """Minimal reproduction: argparse's errors printed a usage block of 4-22 lines."""
    assert_clean_error(cli(*args), "see 'ganforge")


@pytest.fixture(scope="module")
def vectors3_run(tmp_path_factory) -> tuple[Path, str]:
    """A finished 4-step run on 3-D vectors, and its stderr."""
    folder = tmp_path_factory.mktemp("vectors3")
    np.savetxt(folder / "v.csv", np.random.default_rng(0).normal(size=(40, 3)), delimiter=",")
    out = folder / "run"
    code, err = _main_with_stderr(["train", "--data", str(folder / "v.csv"), "--steps", "4", "--out", str(out), *TINY_MLP])
    assert code == 0, err
    return out, err


def _main_with_stderr(args: list[str]) -> tuple[int, str]:
    import contextlib

    from ganforge.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        code = main(args)
    return code, buffer.getvalue()


def test_a_run_without_a_picture_does_not_name_one(vectors3_run):
    """Minimal reproduction: the final line named samples/final.png for 3-D vectors, which have no picture."""
    run, err = vectors3_run
    assert not (run / "samples" / "final.png").exists()
    assert "final.png" not in err and f"Generator: {run / 'generator.safetensors'}" in err


def test_a_png_of_vectors_beyond_2d_is_one_line(cli, vectors3_run, tmp_path):
    """Minimal reproduction: `sample --out x.png` on a 3-D vector run ended in a traceback."""
    assert_clean_error(cli("sample", vectors3_run[0], "--out", tmp_path / "x.png"), "3-dimensional vectors: use .npy or .csv")
    assert not (tmp_path / "x.png").exists()


def test_the_data_own_image_size_is_named_as_the_data(cli, tmp_path):
    """Minimal reproduction: a folder of 1x1 images gave 'image_size=1 is invalid', a key the user never set."""
    (tmp_path / "tiny").mkdir()
    for i in range(4):
        Image.new("L", (1, 1), 40 * i).save(tmp_path / "tiny" / f"{i}.png")
    assert_clean_error(cli("train", "--data", tmp_path / "tiny", "--out", tmp_path / "run", *TINY_CONV),
                       "holds 1x1-pixel images", "set image_size")


def test_a_csv_error_names_the_row_and_the_file_line(tmp_path):
    """Minimal reproduction: the same bad CSV value was 'row 3' in one message and 'line 6' in another."""
    (tmp_path / "t.csv").write_text("a,b\n1,2\n\n3,4\n\nnan,5\n")
    with pytest.raises(GanforgeError, match=r"row 3 holds NaN or Inf \(line 6 of the file\)"):
        load_dataset(str(tmp_path / "t.csv"))


def test_vector_metrics_do_not_depend_on_the_data_units():
    """Invariant: vectors are compared in standardised units, so scaling a column (grams for kilograms) leaves
    every metric as it was (raw units made penguins' FD 415,599, driven by body mass alone)."""
    from ganforge.data.vectors import load_vectors
    from ganforge.evaluate import evaluate_samples

    folder = Path(tempfile.mkdtemp())
    table = np.random.default_rng(1).normal(size=(300, 3))
    scaled = table * np.array([1.0, 1000.0, 0.01])
    results = []
    for name, values in (("a.npy", table), ("b.npy", scaled)):
        np.save(folder / name, values)
        real = load_vectors(folder / name)
        fake = torch.from_numpy(values[:150] * 0.9 + 0.1 * values[150:]).float()
        results.append(evaluate_samples(fake, real, metrics=("fd", "precision_recall"))["metrics"])
    assert results[0]["fd"] == pytest.approx(results[1]["fd"], rel=1e-4)
    assert results[0]["precision"] == results[1]["precision"] and results[0]["recall"] == results[1]["recall"]
    shutil.rmtree(folder)


# --- Benchmark scripts: a stopped script stops its training run ------------------------------


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_a_stopped_benchmark_stops_its_training_run_once(tmp_path, how):
    """benchmarks/_common.training_run: SIGTERM to the script reaches its run as one SIGINT (checkpoint
    and stop); Ctrl-C, which the run gets from the terminal itself, is not doubled (a second SIGINT
    stops a run at once, unsaved); either way the script waits for the run instead of leaving it
    to train on alone."""
    started, stopped = tmp_path / "started", tmp_path / "stopped"
    run = tmp_path / "run.py"  # stands in for `ganforge train`: SIGINT is its stop-and-checkpoint signal
    run.write_text(
        "import os, pathlib, signal, sys, time\n"
        "received = []\n"
        "def stop(*_):\n"
        "    received.append(1)\n"
        f"    pathlib.Path({str(stopped)!r}).write_text(str(len(received)))\n"
        "signal.signal(signal.SIGINT, stop)\n"
        f"pathlib.Path({str(started)!r}).write_text(str(os.getpid()))\n"
        "deadline = time.monotonic() + 120\n"
        "while not received and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "time.sleep(1.0)  # stopping takes a moment: a second SIGINT would arrive here\n"
        "sys.exit(130)\n"
    )
    script = tmp_path / "script.py"
    script.write_text(
        "import signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal, even where SIGINT came ignored\n"
        f"sys.path.insert(0, {str(Path(__file__).parents[1] / 'benchmarks')!r})\n"
        "from _common import training_run\n"
        f"with training_run([sys.executable, {str(run)!r}]) as process:\n"
        "    process.wait()\n"
    )
    process = subprocess.Popen([PYTHON, str(script)], env=subprocess_env(), start_new_session=True)
    try:
        assert wait_until(lambda: started.exists() and started.read_text(), timeout=60, interval=0.05)
        if how == "sigterm":
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the script and its run
        code = process.wait(timeout=90)
    finally:
        reap(process)
    assert code == (128 + signal.SIGTERM if how == "sigterm" else -signal.SIGINT)
    assert stopped.read_text() == "1"
    with pytest.raises(ProcessLookupError):
        os.kill(int(started.read_text()), 0)
