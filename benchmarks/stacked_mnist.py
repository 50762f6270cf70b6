"""Stacked MNIST mode-collapse benchmark (PacGAN protocol) next to PacGAN's Table 2.

Trains on `stackedmnist:PATH` (three independent MNIST digits as R, G, B: 1,000 modes) with
ganforge's `stackedmnist` preset (DCGAN-sized nets, the generator with one more 3x3 layer at
full resolution, trained with the image recipe: the relativistic pairing loss, R1 and R2
penalties on every 8th D step, Adam without momentum and an EMA generator; batches of 128,
15,000 steps, the last 30 % decaying, no packing) in bf16, any key overridable with `--set`
(`--pack`, `--steps`: shorthands); draws 26,000 samples from each exported generator, reads each
channel with the shipped `mnist28` classifier and reports the modes captured (distinct digit
triples) and the KL of the triple histogram against uniform over 1,000; the same samples read by
the second reader `mnist28b` (another design, seed and augmentation, trained independently:
scripts/train_classifiers.py) give the second KL, so a score does not rest on how one classifier
breaks ties between ambiguous digits. Prints mean ± standard error over the seeds as a Markdown
table beside the published rows (Lin et al. 2018, Table 2).

    python benchmarks/stacked_mnist.py --threads 2 --seeds 2            # one seed of the preset's row in docs/BENCHMARKS.md
    python benchmarks/stacked_mnist.py --threads 2 --seeds 2 --set g_extra_layers=0   # the preset before that layer
    python benchmarks/stacked_mnist.py --steps 300 --seeds 0 --json stacked.json
    python benchmarks/stacked_mnist.py --threads 2 --seeds 0 --set loss=nonsaturating --set r2_gamma=0 \
        --set r1_every=16 --set lr_g=0.0002 --set lr_d=0.0004 --set beta1=0.5 --set beta2=0.999 \
        --set ema_kimg=0 --set g_extra_layers=0                          # the former preset (DCGAN's loss and Adam)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import ganforge
from _common import machine, mean_se
from ganforge.config import make_config, parse_overrides
from ganforge.data import load_dataset
from ganforge.evaluate import STACKED_SAMPLES, evaluate
from ganforge.presets import PRESETS
from ganforge.training import train

# On top of the `stackedmnist` preset (src/ganforge/presets.py); docs/studies/ has the settings studied.
SETTINGS = {"precision": "bf16"}

SECOND_READER = "mnist28b"

# PacGAN Table 2 (modes captured out of 1,000; KL against uniform), Stacked MNIST.
PUBLISHED = {
    "DCGAN": (99.0, 3.40),
    "Unrolled GAN": (48.7, 4.32),
    "VEEGAN": (150.0, 2.95),
    "PacDCGAN2": (1000.0, 0.06),
    "PacDCGAN4": (1000.0, 0.07),
}


def run_one(data, seed: int, settings: dict, n: int, workdir: Path, device: str) -> dict:
    """Trains one run with `settings` and scores `n` samples; returns modes, KL and wall times."""
    config = make_config({**settings, "data": data.name, "seed": seed, "out": str(workdir / f"stacked-{seed}"), "device": device})
    start = time.perf_counter()
    run_dir = train(config, new=True, progress=False, say=lambda *_: None)
    seconds = time.perf_counter() - start
    generator = ganforge.load_generator(run_dir, device)
    result = evaluate(generator, data, n=n, seed=seed, metrics=("modes",), device=device)
    second = evaluate(generator, data, n=n, seed=seed, metrics=("modes",), features=SECOND_READER, device=device)["metrics"]
    resolved = json.loads((run_dir / "config.json").read_text())
    return {
        "seed": seed, "steps": resolved["steps"], "pack": resolved["pack"],
        "train_seconds": round(seconds, 1), "eval_seconds": result["seconds"], **result["metrics"],
        "second_reader": {"features": SECOND_READER, "modes": second["modes"], "kl": second["kl"], "channel_kl": second["channel_kl"]},
    }


def _cell(mean: float, se: float, digits: int) -> str:
    return f"{mean:.{digits}f}" if math.isnan(se) else f"{mean:.{digits}f} ± {se:.{digits}f}"


def markdown(runs: list[dict], label: str) -> str:
    lines = [
        f"| Method | modes (of 1,000) | KL | channels' digit KLs, summed | modes, KL read by {SECOND_READER} | train s/run |",
        "|---|---|---|---|---|---|",
    ]
    modes, kl, seconds = (mean_se([r[k] for r in runs]) for k in ("modes", "kl", "train_seconds"))
    channels = mean_se([sum(r["channel_kl"]) for r in runs])
    second_modes, second_kl = (mean_se([r["second_reader"][k] for r in runs]) for k in ("modes", "kl"))
    lines.append(
        f"| {label} ({len(runs)} seed{'s' if len(runs) > 1 else ''}) | {_cell(*modes, 1)} | {_cell(*kl, 3)} | {_cell(*channels, 3)} "
        f"| {_cell(*second_modes, 1)}, {_cell(*second_kl, 3)} | {_cell(*seconds, 0)} |"
    )
    lines += [f"| {name} (PacGAN Table 2) | {m:g} | {k:.2f} | – | – | – |" for name, (m, k) in PUBLISHED.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=Path("../shared/data/mnist"), help="folder of the MNIST IDX files")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    parser.add_argument("--steps", type=int, help=f"generator steps (default {PRESETS['stackedmnist']['steps']:,})")
    parser.add_argument("--pack", type=int, help=f"PacGAN packing (default {PRESETS['stackedmnist']['pack']}; 1 is none, a plain DCGAN's D)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other config key, e.g. --set lr_d=0.0004")
    parser.add_argument("--n", type=int, default=STACKED_SAMPLES, help="generated samples to score (default 26,000)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also save every run's numbers as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = {**SETTINGS, **parse_overrides(args.set)}
    settings.update({k: v for k, v in (("steps", args.steps), ("pack", args.pack)) if v is not None})
    print(f"ganforge {ganforge.__version__}; {machine()}; device {args.device}; settings {json.dumps(settings)}")
    data = load_dataset(f"stackedmnist:{args.mnist}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="stacked_mnist-") as tmp:
        for seed in args.seeds:
            result = run_one(data, seed, settings, args.n, Path(tmp), args.device)
            runs.append(result)
            print(json.dumps(result), flush=True)
    print()
    print(markdown(runs, f"ganforge DCGAN, pack={runs[0]['pack']}"))
    if args.json:
        report = {"machine": machine(), "device": args.device, "settings": settings, "n": args.n, "runs": runs}
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
