"""Several EMA half-lives from one training run: which average of the generator's weights scores best.

The exponential moving average does not steer training (the generator and discriminator never
see it), so one run can keep several averages side by side and score each at the same steps,
free of the run-to-run noise that separate runs would add. The run trains in this process with
the settings given (the data's preset otherwise); beside its own EMA, the script keeps one average
per `--half-lives` value (KIMG thousands of images, at most RAMPUP of the images seen as
`ema_kimg` and `ema_rampup` are, the run's own `ema_rampup` where no RAMPUP is given), saves
each at every `--at-steps` mark, and after training scores each saved average as the run's own
exported generator is scored: BatchNorm recalibrated for its weights, `--eval-n` samples, the
features `ganforge eval` picks (`mnist28` for MNIST, against its 10,000 test images).

    python benchmarks/ema_half_life.py --data mnist:../shared/data/mnist --half-lives 5 10 20 40:0.1 \\
        --at-steps 2000 4000 6000 --threads 2

The average kept with the run's own half-life is compared with the run's EMA at each mark (their
largest difference is printed), so the bookkeeping is checked on every use. `--resume` trains such
a run on from its last checkpoint to later marks (the same seed and settings); its averages go on
from the ones saved at that checkpoint's step, which must be one of the first run's marks:

    python benchmarks/ema_half_life.py --data mnist:../shared/data/mnist --half-lives 5 10 20 40:0.1 \\
        --at-steps 8000 10000 --threads 2 --resume
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from _common import machine
from ganforge.checkpoint import checkpoint_step, list_checkpoints
from ganforge.cli import main as ganforge_main
from ganforge.config import Config
from ganforge.ema import EMA, recalibrate_batchnorm
from ganforge.evaluate import evaluate_samples, reference_dataset
from ganforge.export import SampleableGenerator, load_generator
from ganforge.noise import NoiseSampler
from ganforge.training import state

SEED = 1234  # the samples and BatchNorm calibration of every average: the same for all
COLUMNS = ("fd", "precision", "recall", "classes_covered", "class_kl")


def half_life(name: str) -> tuple[float, float | None]:
    """KIMG and RAMPUP of a `--half-lives` value, KIMG or KIMG:RAMPUP (None: the run's own ramp)."""
    kimg, _, rampup = name.partition(":")
    return float(kimg), float(rampup) if rampup else None


def average_name(text: str) -> str:
    """A `--half-lives` value, KIMG or KIMG:RAMPUP, checked before any training starts."""
    try:
        kimg, rampup = half_life(text)
        ok = kimg > 0 and (rampup is None or 0 < rampup <= 1)
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{text!r} is not KIMG or KIMG:RAMPUP (KIMG > 0, RAMPUP in (0, 1])")
    return text


class Averages:
    """One EMA of the generator per half-life, each updated as the run's own is, by the same functions."""

    def __init__(self, half_lives: list[str], marks: list[int], run: Path, update, resumed: dict | None = None) -> None:
        self.half_lives, self.marks, self.run, self.update_one = half_lives, set(marks), run, update
        self.averages: dict[str, EMA] = {}
        self.configs: dict[str, Config] = {}
        self.resumed = resumed  # a resumed run: {"step": N, "saved": the averages file of step N}
        self.step = resumed["step"] if resumed else 0

    def start(self, ema: EMA) -> None:
        """Copies the run's EMA before its first update once per half-life: the initial generator, or
        in a resumed run the averages saved at its checkpoint's step, after checking that the run's own
        EMA is the one saved beside them (so the run went on from that step)."""
        run = json.loads((self.run / "config.json").read_text())
        for name in self.half_lives:
            kimg, rampup = half_life(name)
            self.configs[name] = Config(ema_kimg=kimg, ema_rampup=rampup or run["ema_rampup"], batch_size=run["batch_size"], ema_decay=0.0)
            self.averages[name] = EMA(ema.average, 0.0)
        if self.resumed:
            saved = self.resumed["saved"]
            own, kept = ema.average.state_dict(), as_state_dict(saved["own"], ema.average)
            if kept.keys() != own.keys() or any(not torch.equal(kept[k], v) for k, v in own.items()):
                raise SystemExit(f"the run's EMA at step {self.step} is not the one saved beside its averages: it did not resume from step {self.step}")
            for name, average in self.averages.items():
                average.average.load_state_dict(as_state_dict(saved["averages"][name], ema.average))

    def update(self, ema: EMA, generator, applied) -> None:
        for name, average in self.averages.items():
            average.decay = state.ema_decay(self.configs[name], self.step)
            self.update_one(average, generator, applied)
        self.step += 1
        if self.step in self.marks:
            torch.save(
                {"averages": {name: a.average.state_dict() for name, a in self.averages.items()}, "own": ema.average.state_dict()},
                self.run / f"averages-{self.step}.pt",
            )


def as_state_dict(saved: dict | list, like: torch.nn.Module) -> dict:
    """A saved average as a state dict. The script's first files hold the parameters alone, a list in
    `like.parameters()` order; the buffers, which every update copies from the generator, are then
    those of `like`, the run's EMA at the same step."""
    if isinstance(saved, dict):
        return saved
    names = [name for name, _ in like.named_parameters()]
    if len(names) != len(saved):
        raise SystemExit(f"--resume: a saved average holds {len(saved)} tensors where the generator has {len(names)} parameters")
    return {**like.state_dict(), **dict(zip(names, saved))}


def resume_point(run: Path, half_lives: list[str], marks: list[int]) -> dict:
    """The step of the run's last checkpoint and the averages saved at it, checked before training."""
    checkpoints = list_checkpoints(run)
    if not checkpoints:
        raise SystemExit(f"--resume: {run} has no checkpoint to resume from")
    step = checkpoint_step(checkpoints[-1])
    path = run / f"averages-{step}.pt"
    if not path.exists():
        raise SystemExit(f"--resume: {path} is missing: the run's last checkpoint (step {step}) must be one of its marks")
    if min(marks) <= step:
        raise SystemExit(f"--resume: every --at-steps mark must come after step {step}, the run's last checkpoint (got {min(marks)})")
    saved = torch.load(path)
    if missing := [name for name in half_lives if name not in saved["averages"]]:
        raise SystemExit(f"--resume: {path} holds no average {', '.join(missing)}; it holds {', '.join(saved['averages'])}")
    return {"step": step, "saved": saved}


def score(exported: SampleableGenerator, saved: dict, real, eval_n: int, cache: Path) -> dict:
    """The metrics of the run's exported generator with the weights `saved` in place of its own."""
    net = copy.deepcopy(exported.network)
    net.load_state_dict(saved)
    counts = exported.clusters
    stream = torch.Generator().manual_seed(SEED + 1)
    labels = (lambda n: torch.multinomial(torch.tensor(counts, dtype=torch.float64), n, True, generator=stream)) if counts else None
    recalibrate_batchnorm(net, NoiseSampler(exported.latent_dim, exported.spec["noise"]["distribution"], seed=SEED + 2), labels=labels)
    samples = SampleableGenerator(net, exported.spec).sample(eval_n, seed=SEED)
    return evaluate_samples(samples, real, cache=cache)["metrics"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist:../shared/data/mnist")
    parser.add_argument(
        "--half-lives",
        dest="half_lives",
        type=average_name,
        nargs="+",
        default=["5", "10", "20", "40"],
        help="KIMG[:RAMPUP]: thousands of images, and the most the half-life may be as a fraction of the images seen",
    )
    parser.add_argument("--at-steps", dest="at_steps", type=int, nargs="+", default=[2000, 4000, 6000])
    parser.add_argument("--eval-n", dest="eval_n", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("runs/ema-half-life"))
    parser.add_argument("--resume", action="store_true", help="train the seed's run on from its last checkpoint to later marks")
    parser.add_argument("overrides", nargs="*", help="key=value settings for the run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = args.workdir / f"seed{args.seed}"
    resumed = resume_point(run, args.half_lives, args.at_steps) if args.resume else None
    run.mkdir(parents=True, exist_ok=True)
    print(f"# {machine()}", flush=True)

    original = state._update_ema
    averages = Averages(args.half_lives, args.at_steps, run, original, resumed)

    def update(ema, generator, applied) -> None:
        if not averages.averages:
            averages.start(ema)
        original(ema, generator, applied)
        averages.update(ema, generator, applied)

    command = [
        "train",
        "--data",
        args.data,
        "--out",
        str(run),
        *([] if resumed else ["--new"]),
        "--seed",
        str(args.seed),
        "--steps",
        str(max(args.at_steps)),
        f"threads={args.threads}",
        *args.overrides,
    ]
    state._update_ema = update
    try:
        started = time.time()
        code = ganforge_main(command)
    finally:
        state._update_ema = original
    if code != 0:
        return code  # stopped or refused: the marks it did not reach have nothing to score
    first = resumed["step"] if resumed else 0
    print(f"# trained steps {first} to {max(args.at_steps)} in {time.time() - started:.0f} s", flush=True)

    config = json.loads((run / "config.json").read_text())
    # The half-life the run's own EMA has, however it was written (`40` and `40:0.1` are one average where the run ramps at 0.1).
    own = next((n for n, c in averages.configs.items() if (c.ema_kimg, c.ema_rampup) == (config["ema_kimg"], config["ema_rampup"])), None)
    real = reference_dataset(config)
    exported = load_generator(run)
    cache = args.workdir / "feature-cache"
    print("| step | half-life (kimg) | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for step in sorted(args.at_steps):
        saved = torch.load(run / f"averages-{step}.pt")
        if own is not None:
            gap = max((value - saved["own"][key]).abs().max().item() for key, value in saved["averages"][own].items())
            print(f"# step {step}: the average with the run's half-life ({own}) differs from its EMA by at most {gap:.2e}")
        for name, weights in saved["averages"].items():
            metrics = score(exported, weights, real, args.eval_n, cache)
            cells = [f"{metrics[c]:.3f}" if isinstance(metrics.get(c), float) else str(metrics.get(c, "-")) for c in COLUMNS]
            print(f"| {step} | {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
