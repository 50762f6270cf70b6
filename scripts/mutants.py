"""Mutation check: plants plausible bugs in a copy of ganforge, one at a time, and runs the test suite on each.

A mutant is "killed" when the suite fails with it, and "survives" when the suite still passes: a bug a
user would meet that no test catches. Each mutant is a text substitution in one file under src/ganforge
whose pattern must occur exactly once there, so a mutant that no longer applies is reported, not skipped.

    python scripts/mutants.py                      # the default suite on every mutant
    python scripts/mutants.py --jobs 2             # two mutants at a time, each in its own copy
    python scripts/mutants.py --list               # the mutants, one per line
    python scripts/mutants.py --only ema_ -- tests/test_ema_training.py   # some mutants, some tests

The default suite runs with -x and its slowest files last, so a killed mutant stops at its first failure.

Exit code 0 when every mutant is killed, 1 when one survives, 2 when a mutant no longer applies or the
unmutated suite fails.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to src/ganforge
    old: str
    new: str
    why: str


MUTANTS = [
    # the two training steps
    Mutant("steps_d_not_frozen", "steps.py", "    with frozen(discriminator):\n        z = noise", "    with nullcontext():\n        z = noise",
           "the generator step trains against a discriminator that is not frozen"),
    Mutant("steps_buffers_not_restored", "steps.py", "                buffer.copy_(saved)", "                buffer.copy_(buffer)",
           "frozen() leaves the BatchNorm statistics the frozen player updated"),
    Mutant("steps_wrong_optimizer", "training/state.py",
           "players.g_run, players.d_frozen, self.g_optimizer,", "players.g_run, players.d_frozen, self.d_optimizer,",
           "the generator step is given the discriminator's optimizer"),
    Mutant("steps_skipped_update_keeps_buffers", "steps.py",
           "buffer.copy_(torch.where(applied, buffer, value))", "buffer.copy_(buffer)",
           "a step skipped for NaN/Inf keeps the BatchNorm statistics it computed"),
    # losses and penalties
    Mutant("loss_d_swapped", "steps.py", "loss.discriminator(real_logits, fake_logits)", "loss.discriminator(fake_logits, real_logits)",
           "the discriminator is trained to call real data fake"),
    Mutant("loss_nonsaturating_sign", "losses.py", "lambda fake, real=None: F.softplus(-fake).mean()", "lambda fake, real=None: F.softplus(fake).mean()",
           "the non-saturating generator loss helps the discriminator"),
    Mutant("loss_r1_half", "steps.py", "0.5 * r1_gamma * r1_penalty", "r1_gamma * r1_penalty", "R1 weighted gamma instead of gamma / 2"),
    Mutant("loss_lazy_r1_unscaled", "training/state.py", "lazy = config.r1_every if", "lazy = 1.0 if",
           "lazy R1 not made r1_every times as strong"),
    # the weight average (EMA)
    Mutant("ema_decay_swapped", "training/state.py", "weight = (1.0 - ema.decay) * applied.float()", "weight = ema.decay * applied.float()",
           "the average moves by decay instead of 1 - decay"),
    Mutant("ema_never_updated", "training/state.py", "            _update_ema(self.ema, self.generator, g_out.applied)", "            pass",
           "the average stays at the initial weights"),
    Mutant("ema_ignores_skipped_steps", "training/state.py", "weight = (1.0 - ema.decay) * applied.float()", "weight = (1.0 - ema.decay) + 0 * applied.float()",
           "a step skipped for NaN/Inf still moves the average"),
    # the exported generator
    Mutant("export_live_weights", "training/state.py", "source = self.ema.average if self.ema is not None else self.generator", "source = self.generator",
           "the export and the samples use the live weights, not the average"),
    Mutant("export_batchnorm_not_recalibrated", "training/state.py",
           "recalibrate_batchnorm(net, calibration, batch_size=max(config.batch_size, 64))", "net.eval()",
           "the export keeps the live network's BatchNorm statistics"),
    Mutant("export_recalibration_momentum", "ema.py", "        m.momentum = None\n", "        m.momentum = 0.5\n",
           "recalibration keeps an exponential average instead of the population statistics"),
    # resume
    Mutant("resume_noise_rng_not_restored", "training/state.py", "self.noise.load_state_dict(state[\"noise\"])", "self.noise.rng.manual_seed(0)",
           "a resumed run draws other noise than an uninterrupted one"),
    Mutant("resume_torch_rng_not_restored", "training/state.py", "        torch.set_rng_state(state[\"torch_rng\"])\n", "",
           "the global RNG (gradient penalty interpolation) restarts on resume"),
    Mutant("resume_step_off_by_one", "training/state.py", "self.step, self.seconds = state[\"step\"], state[\"seconds\"]",
           "self.step, self.seconds = state[\"step\"] + 1, state[\"seconds\"]", "a resumed run skips one step"),
    Mutant("resume_ema_not_restored", "training/state.py", "            self.ema.average.load_state_dict(state[\"ema\"])\n", "            pass\n",
           "a resumed run restarts the weight average from the live weights"),
    Mutant("resume_optimizer_not_restored", "training/state.py", "        self.g_optimizer.load_state_dict(state[\"g_optimizer\"])\n", "",
           "a resumed run restarts the generator's Adam moments"),
    # several processes
    Mutant("dist_sum_not_mean", "distributed.py", "        tensor /= world_size()\n", "",
           "logged scalars and BatchNorm statistics summed over ranks instead of averaged"),
    Mutant("dist_rank0_value", "distributed.py", "        dist.all_reduce(tensor)\n        tensor /= world_size()\n", "        dist.broadcast(tensor, 0)\n",
           "rank 0's value stands for every rank's"),
    Mutant("dist_buffers_not_averaged", "training/state.py", "        distributed.average_buffers(self.generator)\n", "",
           "the generator's BatchNorm statistics saved from rank 0 alone"),
    Mutant("dist_same_shard", "distributed.py", "batch[rank() * size : (rank() + 1) * size]", "batch[:size]",
           "every rank trains on the same shard of the global batch"),
    # metrics
    Mutant("metrics_precision_le", "metrics/manifolds.py", "fake_inside |= (block < real_radii", "fake_inside |= (block <= real_radii",
           "precision counts a sample on a ball's boundary as inside"),
    Mutant("metrics_recall_le", "metrics/manifolds.py", "(block < fake_radii[None, :])", "(block <= fake_radii[None, :])",
           "recall counts a sample on a ball's boundary as inside"),
    Mutant("metrics_density_le", "metrics/manifolds.py", "inside = block < real_radii", "inside = block <= real_radii",
           "density/coverage count a sample on a ball's boundary as inside"),
    Mutant("metrics_knn_radius_off_by_one", "metrics/manifolds.py", "np.partition(block, k, axis=1)[:, k]", "np.partition(block, k - 1, axis=1)[:, k - 1]",
           "k-NN radii to the (k-1)-th neighbour"),
    Mutant("metrics_fd_sign", "metrics/distributions.py", "np.trace(sigma2) - 2.0 * trace_sqrt", "np.trace(sigma2) - 4.0 * trace_sqrt",
           "the Fréchet distance's cross term counted twice (negative, clamped to 0 on equal sets)"),
    Mutant("metrics_fd_trace", "metrics/distributions.py", "np.trace(sigma1) + np.trace(sigma2)", "np.trace(sigma1) + np.trace(sigma1)",
           "the Fréchet distance uses the first covariance's trace twice"),
    Mutant("metrics_kid_biased", "metrics/distributions.py", "/ (m * (m - 1))", "/ (m * m)", "KID's within-set sums divided as if biased"),
    # the loop
    Mutant("loop_log_sums_not_means", "training/duties.py", "sums / max(count, 1)", "sums", "logged losses are sums over the interval"),
]


def tracked_files(root: Path) -> list[str]:
    """The repository's files as a fresh clone plus new, not ignored files has them."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root, capture_output=True, check=True)
    return [name for name in listing.stdout.decode().split("\0") if name and (root / name).is_file()]


def copy_repository(root: Path, target: Path) -> None:
    for name in tracked_files(root):
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, destination)


def check_applies(copy: Path, mutant: Mutant) -> str | None:
    """None when the mutant's pattern occurs exactly once in its file, else why not."""
    path = copy / "src" / "ganforge" / mutant.path
    if not path.is_file():
        return f"{mutant.path} does not exist"
    count = path.read_text(encoding="utf-8").count(mutant.old)
    return None if count == 1 else f"its pattern occurs {count} times in {mutant.path}: expected exactly once"


# The default suite, fastest-failing files first: the files that run a training process under torchrun, kill
# one or fuzz inputs take most of its time, so they come last and a mutant caught earlier stops sooner (-x).
LAST = ("test_resume.py", "test_distributed_averages.py", "test_distributed.py", "test_reliability.py", "test_fuzz.py")


def default_suite(copy: Path) -> list[str]:
    """Every test file of the copy (the default suite, markers as pyproject.toml sets them), slow ones last."""
    names = sorted(p.name for p in (copy / "tests").glob("test_*.py"))
    return [f"tests/{name}" for name in sorted(names, key=lambda name: (name in LAST, LAST.index(name) if name in LAST else 0, name))]


def run_suite(copy: Path, tests: list[str], timeout: float) -> tuple[int, float, str]:
    """Runs pytest in `copy` with its src first on the path; returns (exit code, seconds, last line)."""
    env = dict(os.environ, PYTHONPATH=str(copy / "src"), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--basetemp={copy.parent / 'pytest'}",
               *(tests or default_suite(copy))]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, time.perf_counter() - start, f"timed out after {timeout:.0f} s"
    lines = [line for line in result.stdout.strip().splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return result.returncode, time.perf_counter() - start, (failed or lines or ["(no output)"])[-1]


def judge(copy: Path, mutant: Mutant | None, tests: list[str], timeout: float) -> bool:
    """Runs the suite on `copy` with `mutant` applied (then removed; None: unmutated); prints the outcome and
    returns whether the suite failed.

    pytest exits 1 when a test failed; any other non-zero code (an error while collecting, a timeout)
    also means the mutant did not get through the suite unnoticed.
    """
    if mutant is None:
        code, seconds, last = run_suite(copy, tests, timeout)
        print(f"{'(unmutated)':40} {'FAIL' if code else 'pass':8} {seconds:6.0f} s  {last}", flush=True)
        return code != 0
    path = copy / "src" / "ganforge" / mutant.path
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
    try:
        code, seconds, last = run_suite(copy, tests, timeout)
    finally:
        path.write_text(original, encoding="utf-8")
    print(f"{mutant.name:40} {'killed' if code else 'survived':8} {seconds:6.0f} s  {last}", flush=True)
    return code != 0


def judge_all(copies: list[Path], mutants: list[Mutant], args: argparse.Namespace) -> tuple[bool, list[bool]]:
    """The unmutated suite (unless --no-baseline) and every mutant, each in a free copy, len(copies) at a time.

    Returns whether the unmutated suite passed and, per mutant, whether it was killed."""
    free: queue.Queue[Path] = queue.Queue()
    for copy in copies:
        free.put(copy)

    def in_a_free_copy(mutant: Mutant | None) -> bool:
        copy = free.get()
        try:
            return judge(copy, mutant, args.tests, args.timeout)
        finally:
            free.put(copy)

    runs = ([] if args.no_baseline else [None]) + mutants
    with ThreadPoolExecutor(len(copies)) as pool:
        failed = list(pool.map(in_a_free_copy, runs))
    baseline_failed = failed.pop(0) if not args.no_baseline else False
    return not baseline_failed, failed


def uses_the_copy(copy: Path) -> bool:
    """True when `python -c 'import ganforge'` in the copy imports the copy's source."""
    env = dict(os.environ, PYTHONPATH=str(copy / "src"))
    found = subprocess.run([sys.executable, "-c", "import ganforge; print(ganforge.__file__)"], cwd=copy, env=env, capture_output=True, text=True)
    return Path(found.stdout.strip()).resolve().is_relative_to((copy / "src").resolve())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", nargs="+", default=[], metavar="PREFIX", help="only the mutants whose name starts with one of these")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of the unmutated suite")
    parser.add_argument("--jobs", type=int, default=1, help="mutants judged at once, each in its own copy (default 1)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per suite run (default 900); a run past it counts as killed")
    parser.add_argument("tests", nargs="*", help="pytest arguments (default: the default suite)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mutants = [m for m in MUTANTS if not args.only or m.name.startswith(tuple(args.only))]
    if args.list:
        for mutant in mutants:
            print(f"{mutant.name:40} {mutant.path:26} {mutant.why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="ganforge-mutants-") as folder:
        copies = [Path(folder) / f"job{index}" / "repo" for index in range(max(args.jobs, 1))]
        for copy in copies:
            copy_repository(ROOT, copy)
        if not uses_the_copy(copies[0]):
            print("error: python does not import ganforge from the copy's src (is ganforge installed non-editable?)", file=sys.stderr)
            return 2
        broken = [f"{m.name}: {why}" for m in mutants if (why := check_applies(copies[0], m))]
        if broken:
            print("error: mutants that no longer apply:\n  " + "\n  ".join(broken), file=sys.stderr)
            return 2
        baseline_passed, killed = judge_all(copies, mutants, args)
    if not baseline_passed:
        print("error: the unmutated suite fails; fix it before judging mutants", file=sys.stderr)
        return 2
    survivors = [m.name for m, k in zip(mutants, killed) if not k]
    print(f"{len(mutants) - len(survivors)} of {len(mutants)} mutants killed" + (f"; survived: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
