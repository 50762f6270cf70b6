"""Time to quality: the training seconds a default ganforge run needs to reach a quality target.

Runs `ganforge train` as a user would (defaults, plus evaluation every `--eval-every` steps),
watches the evaluations it appends to metrics.jsonl and stops the run (SIGINT: it saves a
checkpoint and exits) at the first one that meets the target:

- ring8, grid25: the toy benchmark's targets (`benchmarks/toy_modes.py`): every mode, % of
  high-quality samples and reverse KL, on 2,500 samples;
- mnist: a Fréchet distance in the shipped `mnist28` classifier's features, `--n` samples
  against the 10,000 test images (`--fd`, default 100).

The time reported is the run's own training time (`seconds` in metrics.jsonl: evaluation
left out, start-up left out); wall time from launch is printed beside it.

    python benchmarks/time_to_quality.py --case ring8 --seeds 0 1 2
    python benchmarks/time_to_quality.py --case mnist --mnist ../shared/data/mnist --fd 100
    python benchmarks/time_to_quality.py --case mnist --device cuda --json ttq_gpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ganforge
from _common import machine, stop_run, training_run

# The toy benchmark's targets (ring8: 8 modes, >= 98 % HQ, KL <= 0.02; grid25: 25 modes, >= 95 %, <= 0.03).
TOY_TARGETS = {"ring8": (8, 98.0, 0.02), "grid25": (25, 95.0, 0.03)}
CASES = (*TOY_TARGETS, "mnist")


def target_met(case: str, scores: dict, fd: float) -> bool:
    if case == "mnist":
        return scores["fd"] <= fd
    modes, hq, kl = TOY_TARGETS[case]
    return scores["modes"] >= modes and scores["hq_percent"] >= hq and scores["reverse_kl"] <= kl


def describe(case: str, fd: float) -> str:
    if case == "mnist":
        return f"Fréchet distance <= {fd:g} (mnist28 features)"
    modes, hq, kl = TOY_TARGETS[case]
    return f"{modes} modes, >= {hq:g} % HQ, reverse KL <= {kl:g}"


def evaluations(metrics: Path) -> list[dict]:
    """The evaluation records written so far (a half-written last line is left for the next read)."""
    if not metrics.exists():
        return []
    records = []
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if "eval" in record:
            records.append(record)
    return records


def run_one(case: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    """One default run of `case`, stopped at the first evaluation that meets the target."""
    data = f"mnist:{args.mnist}" if case == "mnist" else case
    run_dir = workdir / f"{case}-{seed}"
    command = [
        sys.executable, "-m", "ganforge", "train", "--data", data, "--seed", str(seed), "--out", str(run_dir),
        "--device", args.device, "--quiet", f"eval_every={args.eval_every or (1000 if case == 'mnist' else 250)}",
        f"eval_n={args.n if case == 'mnist' else 2500}", *([f"threads={args.threads}"] if args.threads else []),
    ]
    launched = time.perf_counter()
    reached, trajectory = None, []
    with training_run(command) as process:
        while reached is None:
            finished = process.poll() is not None
            trajectory = evaluations(run_dir / "metrics.jsonl")
            reached = next((r for r in trajectory if target_met(case, r["eval"], args.fd)), None)
            if finished:
                break
            time.sleep(0.5)
        wall = time.perf_counter() - launched
        stop_run(process)
        code = process.returncode
    if reached is None and code != 0:
        raise SystemExit(f"{case} seed {seed}: ganforge train exited with code {code}: {' '.join(command)}")
    key = "fd" if case == "mnist" else "hq_percent"
    result = {
        "case": case, "seed": seed, "reached": reached is not None,
        "step": reached["step"] if reached else None, "seconds": reached["seconds"] if reached else None,
        "wall_seconds": round(wall, 1), "evaluated_steps": [r["step"] for r in trajectory],
        key: [r["eval"][key] for r in trajectory],
    }
    if reached is None:
        result["last"] = trajectory[-1]["eval"] if trajectory else None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, required=True, help="ring8, grid25 or mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    parser.add_argument("--mnist", type=Path, default=Path("../shared/data/mnist"), help="folder of the MNIST IDX files")
    parser.add_argument("--fd", type=float, default=100.0, help="mnist: the Fréchet distance to reach (default 100)")
    parser.add_argument("--n", type=int, default=10_000, help="mnist: samples per evaluation (default 10,000)")
    parser.add_argument("--eval-every", type=int, help="steps between evaluations (default: 250 toy, 1,000 mnist)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, help="torch's CPU threads for the runs (default: torch's choice)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also save every run's numbers as JSON")
    args = parser.parse_args(argv)
    if args.case == "mnist" and not args.mnist.is_dir():
        parser.error(f"--mnist {args.mnist}: no such folder; expected the folder of the MNIST IDX files")

    print(f"ganforge {ganforge.__version__}; {machine()}; device {args.device}")
    print(f"{args.case}: target {describe(args.case, args.fd)}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="time_to_quality-") as tmp:
        for seed in args.seeds:
            result = run_one(args.case, seed, args, Path(tmp))
            runs.append(result)
            print(json.dumps(result), flush=True)
    times = sorted(r["seconds"] for r in runs if r["reached"])
    reached = f"{len(times)} of {len(runs)} seeds"
    if times:
        print(f"\n{args.case}: target reached in {reached}; training seconds: median {statistics.median(times):.1f}, "
              f"range {times[0]:.1f}-{times[-1]:.1f}")
    else:
        print(f"\n{args.case}: target not reached in any of {len(runs)} seeds")
    if args.json:
        report = {"machine": machine(), "device": args.device, "target": describe(args.case, args.fd), "runs": runs}
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
