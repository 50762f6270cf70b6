"""Synthetic UCI Adult tables: ganforge's table GAN beside CTGAN, on the same split and seeds.

Both systems fit on `adult.data` (the official training file) and are judged on `adult.test`
(the official test file) with ganforge's table metrics: quality score (column shapes and
column-pair trends), ML efficacy (F1 of `>50K`, mean of four classifiers trained on synthetic
rows) and the privacy check. Each fit is timed from the raw file to a fitted model, in its
own process with one torch thread.

CTGAN (pip `ctgan`, its defaults) runs in its own environment, never a dependency of
ganforge: create it with

    python3 -m venv .venv-ctgan && .venv-ctgan/bin/pip install torch==2.13.0 && .venv-ctgan/bin/pip install ctgan

Usage:
    python benchmarks/tabular.py --systems ganforge ctgan --seeds 0 1 2
    python benchmarks/tabular.py --systems ganforge --seeds 0 --steps 500   # a quick look

`--fit-ctgan` is the child mode that runs inside .venv-ctgan; it imports only pandas and ctgan.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT.parent / "shared" / "data" / "adult"
COLUMNS = (
    "age,workclass,fnlwgt,education,education-num,marital-status,occupation,relationship,race,sex,"
    "capital-gain,capital-loss,hours-per-week,native-country,income"
)
DISCRETE = ("workclass", "education", "marital-status", "occupation", "relationship", "race", "sex", "native-country", "income")
CTGAN_PYTHON = ROOT / ".venv-ctgan" / "bin" / "python"


def fit_ctgan(train: Path, seed: int, out: Path, n: int) -> None:
    """Child mode, inside .venv-ctgan: reads the raw file, fits CTGAN with its defaults, writes samples and timings."""
    import pandas as pd
    import torch
    from ctgan import CTGAN
    from ctgan.synthesizers import ctgan as ctgan_module

    torch.set_num_threads(1)
    timings: dict = {}
    transformer_fit = ctgan_module.DataTransformer.fit

    def timed_fit(self, *args, **kwargs):  # measures CTGAN's set-up (its per-column mixtures) inside fit
        start = time.perf_counter()
        transformer_fit(self, *args, **kwargs)
        timings["setup_s"] = time.perf_counter() - start

    ctgan_module.DataTransformer.fit = timed_fit
    start = time.perf_counter()
    frame = pd.read_csv(train, header=None, names=COLUMNS.split(","), skipinitialspace=True)
    model = CTGAN()
    model.set_random_state(seed)
    model.fit(frame, list(DISCRETE))
    timings["fit_s"] = time.perf_counter() - start
    start = time.perf_counter()
    model.sample(n).to_csv(out / "samples.csv", index=False)
    timings["sample_s"] = time.perf_counter() - start
    (out / "timings.json").write_text(json.dumps(timings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-ctgan", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-tabular")
    parser.add_argument("--n", type=int, default=32_561, help="synthetic rows per fit (default: as many as adult.data)")
    args, _ = parser.parse_known_args()
    if args.fit_ctgan:
        args.out.mkdir(parents=True, exist_ok=True)
        fit_ctgan(ADULT / "adult.data", args.seed, args.out, args.n)
        return
    from benchmarks_tabular_compare import compare  # noqa: F401  (filled in below)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
