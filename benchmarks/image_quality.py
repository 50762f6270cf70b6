"""Image quality against wall-clock training time: the default settings beside the DCGAN settings.

Each setting trains `ganforge train --data DATA` in a subprocess with evaluation during training
(`eval_every`, `eval_n` samples; the loop leaves evaluation time out of its training seconds) and
is stopped (SIGINT: a clean save) once its training time passes the last mark. For each mark
(minutes of training) the table shows the last evaluation at or before it: Fréchet distance,
precision/recall and, for digit data, classes covered and class-histogram KL (and, for a
conditional run, how often the classifier reads the requested class), in the features
`ganforge eval` picks (`mnist28` for MNIST; Inception with `ganforge[inception]`, else pixels,
for other images).

Settings: `default` (nothing overridden), `dcgan` (the DCGAN settings that were the images
default before the residual recipe), or NAME:key=value,key=value for anything else. The run is
sized by time, not steps (`--steps` is set far beyond reach), so a learning-rate decay, which
the image presets do not use, would not start.

    python benchmarks/image_quality.py --data mnist:../shared/data/mnist --minutes 5 10 --threads 1
    python benchmarks/image_quality.py --data ../shared/data/cifar10-test-jpg --setting default --minutes 10

`--at-steps` marks steps instead of minutes, and trains to the last: for seeds run side by side
on shared cores, read at the steps a timed run of another seed reached at its marks. `--resume`
carries on the runs already in `--workdir` (from their last checkpoint: the whole training state,
optimisers and random streams included) to a later last mark, so a curve can be extended without
training its start again.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from _common import machine, mean_se, stop_run, training_run

DCGAN = (
    "arch=conv,loss=nonsaturating,g_width=64,d_width=64,g_norm=batch,d_norm=batch,r1_gamma=0,r2_gamma=0,r1_every=1,"
    "batch_size=64,lr_g=0.0002,lr_d=0.0002,beta1=0.5,beta2=0.999,ema_decay=0.999,ema_kimg=0,augment=none"
)
SETTINGS = {"default": "", "dcgan": DCGAN}
COLUMNS = ("fd", "precision", "recall", "classes_covered", "class_kl", "class_accuracy")  # those the runs report
NEVER = 10**8  # steps: the run stops on time, never on its step count


def parse_setting(text: str) -> tuple[str, list[str]]:
    """'dcgan' or 'NAME:k=v,k=v' -> (name, ['k=v', ...])."""
    name, _, overrides = text.partition(":")
    if not overrides and name in SETTINGS:
        overrides = SETTINGS[name]
    return name, [pair for pair in overrides.split(",") if pair]


def train_for(args: argparse.Namespace, name: str, overrides: list[str], seed: int) -> list[dict]:
    """Trains one setting for the last mark's minutes of training time; returns its evaluation records."""
    out = Path(args.workdir) / f"{name}-{seed}"
    if args.resume and not (out / "checkpoints").is_dir():
        raise SystemExit(f"--resume: {out} holds no checkpoints to carry on from")
    command = [
        sys.executable, "-m", "ganforge", "train", "--data", args.data, "--out", str(out), *([] if args.resume else ["--new"]), "--quiet",
        "--steps", str(max(args.at_steps) if args.at_steps else NEVER), "--seed", str(seed), "--eval_every", str(args.eval_every), "--eval_n", str(args.eval_n),
        "--log_every", "50", "--sample_every", str(args.eval_every * 4), "--checkpoint_every", str(NEVER), "--device", args.device,
        *([f"threads={args.threads}"] if args.threads else []), *overrides,
    ]
    limit = float("inf") if args.at_steps else 60 * max(args.minutes)
    with training_run(command) as process:
        while process.poll() is None:
            time.sleep(5)
            if trained_seconds(out) >= limit:
                stop_run(process)
    if process.returncode not in (0, 130, -signal.SIGINT):
        raise SystemExit(f"{name} seed {seed}: ganforge train exited with {process.returncode}")
    return [r for r in read_metrics(out) if "eval" in r]


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def trained_seconds(run: Path) -> float:
    records = read_metrics(run)
    return max((r.get("seconds", 0.0) for r in records), default=0.0)


def at_marks(records: list[dict], marks: list[float], by_step: bool = False) -> dict[float, dict]:
    """The last evaluation at or before each mark (minutes of training, or steps `by_step`), with its step and training seconds."""
    table = {}
    for mark in marks:
        done = [r for r in records if (r["step"] if by_step else r["seconds"] / 60) <= mark]
        if done:
            table[mark] = {"step": done[-1]["step"], "seconds": done[-1]["seconds"], **done[-1]["eval"]}
    return table


def markdown(results: dict[str, dict[int, dict]], marks: list[float], unit: str = "minutes") -> str:
    rows = [row for by_seed in results.values() for table in by_seed.values() for row in table.values()]
    columns = [column for column in COLUMNS if any(column in row for row in rows)]
    header = ["setting", unit, "seeds", "steps", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, by_seed in results.items():
        for mark in marks:
            rows = [table[mark] for table in by_seed.values() if mark in table]
            if not rows:
                continue
            cells = [name, f"{mark:g}", ", ".join(map(str, by_seed)), "/".join(str(r["step"]) for r in rows)]
            for column in columns:
                values = [r[column] for r in rows if column in r]
                mean, se = mean_se(values) if values else (float("nan"), float("nan"))
                cells.append(f"{mean:.4g}" + (f" ± {se:.2g}" if len(values) > 1 else ""))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist:../shared/data/mnist")
    parser.add_argument("--setting", action="append", help="default, dcgan or NAME:k=v,k=v (repeatable; default: default and dcgan)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20, 30], help="marks, minutes of training time")
    parser.add_argument("--at-steps", dest="at_steps", type=int, nargs="+", help="marks in steps instead of minutes; trains to the last")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eval-every", dest="eval_every", type=int, default=500, help="steps between evaluations")
    parser.add_argument("--eval-n", dest="eval_n", type=int, default=10_000, help="samples per evaluation")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (e.g. 1 on a shared machine)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", default="runs/image_quality")
    parser.add_argument("--json", default=None, help="also write the per-seed records here")
    parser.add_argument("--resume", action="store_true", help="carry on the runs in --workdir to the last mark instead of starting anew")
    args = parser.parse_args()
    print(f"# {machine()}; data {args.data}; eval_n {args.eval_n}; threads {args.threads or 'auto'}", flush=True)
    results: dict[str, dict[int, dict]] = {}
    marks = args.at_steps or args.minutes
    for text in args.setting or ["default", "dcgan"]:
        name, overrides = parse_setting(text)
        for seed in args.seeds:
            table = at_marks(train_for(args, name, overrides, seed), marks, by_step=bool(args.at_steps))
            results.setdefault(name, {})[seed] = table
            print(json.dumps({"setting": name, "overrides": overrides, "seed": seed, "marks": table}), flush=True)
    print(markdown(results, marks, "steps" if args.at_steps else "minutes"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
