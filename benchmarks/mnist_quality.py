"""MNIST sample-quality benchmark with ganforge's default image settings.

Trains `ganforge train --data mnist:PATH --seed S` once per seed (the `images` preset,
nothing overridden but `--steps` when given), then scores 10,000 samples of each exported
generator against MNIST's 10,000 test images with `ganforge.evaluate`: Fréchet distance,
KID, precision/recall and density/coverage in the features of the shipped `mnist28`
classifier, classes covered and class-histogram KL. Prints one line per run and a
Markdown table with the real-vs-real baseline (two halves of the test images) beside it.

    python benchmarks/mnist_quality.py                               # seed 0, default steps
    python benchmarks/mnist_quality.py --steps 300 --seeds 0 --json mnist.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import ganforge
from _common import machine
from ganforge.config import make_config
from ganforge.evaluate import cache_dir, evaluate, reference_dataset
from ganforge.training import train

COLUMNS = ("fd", "kid_mean", "precision", "recall", "density", "coverage", "classes_covered", "class_kl")


def run_one(folder: Path, seed: int, steps: int | None, n: int, workdir: Path, device: str) -> tuple[dict, dict]:
    """Trains one default MNIST run and evaluates it; returns its numbers and the real-vs-real baseline."""
    settings = {"data": f"mnist:{folder}", "seed": seed, "out": str(workdir / f"mnist-{seed}"), "device": device}
    if steps is not None:
        settings["steps"] = steps
    start = time.perf_counter()
    run_dir = train(make_config(settings), new=True, progress=False, say=lambda *_: None)
    seconds = time.perf_counter() - start
    config = json.loads((run_dir / "config.json").read_text())
    generator = ganforge.load_generator(run_dir, device)
    result = evaluate(generator, reference_dataset(config), n=n, seed=seed, real_baseline=True, cache=cache_dir(), device=device)
    numbers = {"seed": seed, "steps": config["steps"], "train_seconds": round(seconds, 1), "eval_seconds": result["seconds"], **result["metrics"]}
    return numbers, result["real_baseline"]


def markdown(runs: list[dict], baseline: dict) -> str:
    header = ["run", "steps", *COLUMNS, "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in runs:
        lines.append("| " + " | ".join([f"seed {r['seed']}", str(r["steps"]), *(_fmt(r[c]) for c in COLUMNS), f"{r['train_seconds']:.0f}"]) + " |")
    # The scale of "perfect": the same metrics between two random halves of the test images.
    lines.append("| " + " | ".join(["real vs real (5,000 / 5,000)", "–", *(_fmt(baseline[c]) for c in COLUMNS), "–"]) + " |")
    return "\n".join(lines)


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=Path("../shared/data/mnist"), help="folder of the MNIST IDX files")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    parser.add_argument("--steps", type=int, help="generator steps (default: the images preset's)")
    parser.add_argument("--n", type=int, default=10_000, help="generated samples to score (default 10,000)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also save every run's numbers as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"ganforge {ganforge.__version__}; {machine()}; device {args.device}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="mnist_quality-") as tmp:
        for seed in args.seeds:
            result, baseline = run_one(args.mnist, seed, args.steps, args.n, Path(tmp), args.device)
            runs.append(result)
            print(json.dumps(result), flush=True)
    print()
    print(markdown(runs, baseline))
    if args.json:
        report = {"machine": machine(), "device": args.device, "n": args.n, "runs": runs, "real_baseline": baseline}
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
