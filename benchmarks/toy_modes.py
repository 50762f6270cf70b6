"""Mode-coverage benchmark on the 2D Gaussian mixtures, with ganforge's default settings.

Trains `ring8` and `grid25` once per seed exactly as `ganforge train --data NAME --seed S`
would (no setting overridden), draws 2,500 samples from each exported generator and
scores them with the PacGAN/VEEGAN protocol (`ganforge.metrics.mixture_mode_stats`):
modes captured, percentage of high-quality samples and reverse KL. Prints mean ± standard
error over the seeds as a Markdown table beside the published rows of PacGAN's Table 1
(Lin et al. 2018, "PacGAN: The power of two samples in generative adversarial networks").

    python benchmarks/toy_modes.py                      # 10 seeds of both mixtures
    python benchmarks/toy_modes.py --seeds 0 1 --datasets ring8 --json ring8.json
    python benchmarks/toy_modes.py --jobs 2             # two runs at once, one CPU thread each
    python benchmarks/toy_modes.py --datasets grid25 --set r1_gamma=0.3   # a study off the defaults
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import torch

import ganforge
from _common import machine, mean_se
from ganforge.config import make_config, parse_overrides
from ganforge.data.toy import mixture_modes
from ganforge.metrics import mixture_mode_stats
from ganforge.presets import PRESETS
from ganforge.training import train

DATASETS = ("ring8", "grid25")
SAMPLES = 2500
SAMPLE_SEED_OFFSET = 10_000  # evaluation noise, apart from any noise used in training
METRICS = ("modes", "hq_percent", "reverse_kl", "seconds")

# PacGAN Table 1 (modes, % high-quality samples, reverse KL), 2D-ring then 2D-grid.
PUBLISHED = {
    "GAN (PacGAN Table 1)": {"ring8": (6.3, 98.2, 0.45), "grid25": (17.3, 94.8, 0.70)},
    "PacGAN2 (PacGAN Table 1)": {"ring8": (7.9, 95.6, 0.07), "grid25": (23.8, 91.3, 0.13)},
    "PacGAN4 (PacGAN Table 1)": {"ring8": (7.8, 95.9, 0.07), "grid25": (24.8, 93.6, 0.04)},
}


def run_one(dataset: str, seed: int, workdir: Path, settings: dict | None = None) -> dict:
    """Trains one run (the defaults, plus `settings`) and scores 2,500 samples of its exported generator."""
    config = make_config({**(settings or {}), "data": dataset, "seed": seed, "out": str(workdir / f"{dataset}-{seed}")})
    start = time.perf_counter()
    run_dir = train(config, new=True, progress=False, say=lambda *_: None)
    seconds = time.perf_counter() - start
    samples = ganforge.load_generator(run_dir).sample(SAMPLES, seed=SAMPLE_SEED_OFFSET + seed)
    modes, std = mixture_modes(dataset)
    stats = mixture_mode_stats(samples, modes, std)
    return {"dataset": dataset, "seed": seed, **stats, "seconds": seconds, "threads": config.threads or torch.get_num_threads()}


def _run_job(job: tuple) -> dict:
    return run_one(*job)


def summarise(runs: list[dict], datasets: list[str]) -> dict:
    return {d: {m: mean_se([r[m] for r in runs if r["dataset"] == d]) for m in METRICS} for d in datasets}


def _cell(mean: float, se: float, digits: int) -> str:
    return f"{mean:.{digits}f}" if math.isnan(se) else f"{mean:.{digits}f} ± {se:.{digits}f}"


def markdown_table(summary: dict, datasets: list[str], n_seeds: int, settings: dict | None = None) -> str:
    """Our row (mean ± s.e.) and the published PacGAN rows, one column group per dataset."""
    label = {"ring8": "2D-ring", "grid25": "2D-grid"}
    header = ["Method"]
    for d in datasets:
        header += [f"{label[d]} modes", f"{label[d]} % HQ", f"{label[d]} reverse KL", f"{label[d]} s/run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    changed = ", ".join(f"{k}={v}" for k, v in (settings or {}).items())
    ours = [f"ganforge {'defaults' if not changed else changed} ({n_seeds} seeds)"]
    for d in datasets:
        s = summary[d]
        ours += [_cell(*s["modes"], 1), _cell(*s["hq_percent"], 1), _cell(*s["reverse_kl"], 3), _cell(*s["seconds"], 0)]
    lines.append("| " + " | ".join(ours) + " |")
    for name, rows in PUBLISHED.items():
        cells = [name]
        for d in datasets:
            modes, hq, kl = rows[d]
            cells += [f"{modes}", f"{hq}", f"{kl}", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="training seeds (default: 0 to 9)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), help="mixtures to train (default: both)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each with one CPU thread (default 1: one run, all threads)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a default for every run, e.g. --set r1_gamma=0.3")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also save every run's numbers and the summary as JSON")
    args = parser.parse_args(argv)
    settings = parse_overrides(args.set)

    print(f"ganforge {ganforge.__version__}; {machine()}")
    for dataset in args.datasets:
        print(f"{dataset} preset: {json.dumps(PRESETS[dataset])}")
    if settings:
        print(f"changed for every run: {json.dumps(settings)}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="toy_modes-") as tmp:
        run_settings = {"threads": 1, **settings} if args.jobs > 1 else settings  # one thread per parallel run
        jobs = [(dataset, seed, Path(tmp), run_settings) for dataset in args.datasets for seed in args.seeds]
        pool = multiprocessing.get_context("spawn").Pool(args.jobs) if args.jobs > 1 else None
        for result in pool.imap(_run_job, jobs) if pool else map(_run_job, jobs):
            runs.append(result)
            print(
                f"{result['dataset']} seed {result['seed']}: {result['modes']} modes, {result['hq_percent']:.1f} % HQ, "
                f"reverse KL {result['reverse_kl']:.4f}, {result['seconds']:.1f} s ({result['threads']} threads)",
                flush=True,
            )
        if pool:
            pool.close()
    summary = summarise(runs, args.datasets)
    print()
    print(markdown_table(summary, args.datasets, len(args.seeds), settings))
    if args.json:
        report = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "presets": {d: PRESETS[d] for d in args.datasets},
            "changed": settings,
            "samples": SAMPLES,
            "runs": runs,
            "summary": {d: {m: {"mean": v[0], "se": None if math.isnan(v[1]) else v[1]} for m, v in s.items()} for d, s in summary.items()},
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
