"""Several EMA half-lives from one training run: which average of the generator's weights scores best.

The exponential moving average does not steer training (the generator and discriminator never
see it), so one run can keep several averages side by side and score each at the same steps,
free of the run-to-run noise that separate runs would add. The run trains in this process with
the settings given (the data's preset otherwise); beside its own EMA, the script keeps one average
per `--half-lives` value (thousands of images, ramped up over the start as `ema_kimg` is), saves
each at every `--at-steps` mark, and after training scores each saved average as the run's own
exported generator is scored: BatchNorm recalibrated for its weights, `--eval-n` samples, the
features `ganforge eval` picks (`mnist28` for MNIST, against its 10,000 test images).

    python benchmarks/ema_half_life.py --data mnist:../shared/data/mnist --half-lives 5 10 20 40:0.1 \\
        --at-steps 2000 4000 6000 --threads 2

The average kept with the run's own half-life is compared with the run's EMA at each mark (their
largest difference is printed), so the bookkeeping is checked on every use.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from _common import machine
from ganforge.cli import main as ganforge_main
from ganforge.ema import recalibrate_batchnorm
from ganforge.evaluate import evaluate_samples, reference_dataset
from ganforge.export import SampleableGenerator, load_generator
from ganforge.noise import NoiseSampler
from ganforge.training import state

SEED = 1234  # the samples and BatchNorm calibration of every average: the same for all
COLUMNS = ("fd", "precision", "recall", "classes_covered", "class_kl")


def average_name(text: str) -> str:
    """A `--half-lives` value, KIMG or KIMG:RAMPUP, checked before any training starts."""
    kimg, _, rampup = text.partition(":")
    try:
        ok = float(kimg) > 0 and (not rampup or 0 < float(rampup) <= 1)
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{text!r} is not KIMG or KIMG:RAMPUP (KIMG > 0, RAMPUP in (0, 1])")
    return text


class Averages:
    """One average of the generator's parameters per half-life, updated with the run's own EMA."""

    def __init__(self, half_lives: list[str], marks: list[int], run: Path) -> None:
        self.half_lives, self.marks, self.run = half_lives, set(marks), run
        self.averages: dict[str, list[torch.Tensor]] | None = None
        self.batch_size, self.rampup = 0, 0.0
        self.step = 0

    def decay(self, average: str) -> float:
        """The decay at this step for an average `KIMG[:RAMPUP]`: a half-life of KIMG thousand images, at most
        RAMPUP times the images seen so far (the run's `ema_rampup` unless given), as `state.ema_decay` ramps it."""
        kimg, _, rampup = average.partition(":")
        images = (self.step + 1) * self.batch_size
        return 0.5 ** (self.batch_size / min(float(kimg) * 1000, images * float(rampup or self.rampup)))

    def update(self, ema, generator, applied) -> None:
        if self.averages is None:  # the run's EMA before its first update: the initial generator
            config = json.loads((self.run / "config.json").read_text())
            self.batch_size, self.rampup = config["batch_size"], config["ema_rampup"]
            self.averages = {k: [p.detach().clone() for p in ema.average.parameters()] for k in self.half_lives}
        weight = 1.0 if applied is None else applied.float()
        current = [p.detach() for p in generator.parameters()]
        for name, average in self.averages.items():
            torch._foreach_lerp_(average, current, [(1.0 - self.decay(name)) * weight] * len(average))
        self.step += 1
        if self.step in self.marks:
            own = [p.detach().clone() for p in ema.average.parameters()]
            torch.save({"averages": self.averages, "own": own}, self.run / f"averages-{self.step}.pt")


def score(run: Path, saved: list[torch.Tensor], real, eval_n: int, cache: Path) -> dict:
    """The metrics of the run's exported generator with the parameters `saved` in place of its own."""
    exported = load_generator(run)
    net = exported.network
    with torch.no_grad():
        for parameter, value in zip(net.parameters(), saved):
            parameter.copy_(value)
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
    parser.add_argument("overrides", nargs="*", help="key=value settings for the run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = args.workdir / f"seed{args.seed}"
    run.mkdir(parents=True, exist_ok=True)
    print(f"# {machine()}", flush=True)

    original = state._update_ema
    averages = Averages(args.half_lives, args.at_steps, run)

    def update(ema, generator, applied) -> None:
        original(ema, generator, applied)
        averages.update(ema, generator, applied)

    command = [
        "train",
        "--data",
        args.data,
        "--out",
        str(run),
        "--new",
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
    print(f"# trained {max(args.at_steps)} steps in {time.time() - started:.0f} s", flush=True)

    config = json.loads((run / "config.json").read_text())
    own = f"{config.get('ema_kimg'):g}"
    real = reference_dataset(config)
    cache = args.workdir / "feature-cache"
    print("| step | half-life (kimg) | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for step in sorted(args.at_steps):
        saved = torch.load(run / f"averages-{step}.pt")
        if own in saved["averages"]:
            gap = max((a - b).abs().max().item() for a, b in zip(saved["averages"][own], saved["own"]))
            print(f"# step {step}: the average with the run's half-life ({own} kimg) differs from its EMA by at most {gap:.2e}")
        for name, params in saved["averages"].items():
            metrics = score(run, params, real, args.eval_n, cache)
            cells = [f"{metrics[c]:.3f}" if isinstance(metrics.get(c), float) else str(metrics.get(c, "-")) for c in COLUMNS]
            print(f"| {step} | {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
