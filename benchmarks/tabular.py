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
    python benchmarks/tabular.py --systems ganforge --keys loss=hinge --out runs/bench-tabular-hinge   # another setting

`--fit-ctgan` is the child mode that runs inside .venv-ctgan; it imports only pandas and ctgan.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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


def fit_ctgan(train: Path, seed: int, out: Path, n: int, epochs: int | None = None) -> None:
    """Child mode, inside .venv-ctgan: reads the raw file, fits CTGAN (its defaults, unless `epochs`), writes samples and timings."""
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
    model = CTGAN(**({"epochs": epochs} if epochs else {}))
    model.set_random_state(seed)
    model.fit(frame, list(DISCRETE))
    timings["fit_s"] = time.perf_counter() - start
    timings["fit_cpu_s"] = time.process_time()  # the whole process so far: imports, reading, set-up and training
    start = time.perf_counter()
    model.sample(n).to_csv(out / "samples.csv", index=False)
    timings["sample_s"] = time.perf_counter() - start
    (out / "timings.json").write_text(json.dumps(timings))


def clean_test_file(out: Path) -> Path:
    """adult.test as adult.data writes rows: without its first (comment) line and the dot after each label."""
    lines = (ADULT / "adult.test").read_text().splitlines()
    rows = [line.rstrip().removesuffix(".") for line in lines if line.strip() and not line.startswith("|")]
    path, text = out / "adult.test.clean", "\n".join(rows) + "\n"
    if not path.is_file() or path.read_text() != text:  # written whole, then renamed: runs of other seeds may be reading it
        partial = out / f"adult.test.clean.{os.getpid()}"
        partial.write_text(text)
        os.replace(partial, path)
    return path


def fit_ganforge(seed: int, out: Path, test: Path, steps: int | None, keys: list[str]) -> dict:
    """`ganforge train` on adult.data in its own process with one thread; the wall time is the fit time."""
    from _common import training_run  # here, not above: the --fit-ctgan child imports only pandas and ctgan

    command = [sys.executable, "-m", "ganforge", "train", "--data", str(ADULT / "adult.data"), f"columns={COLUMNS}", "header=false",
               "target=income", f"test_data={test}", "--out", str(out), "--seed", str(seed), "threads=1", "--quiet", "--new"]
    command += (["--steps", str(steps)] if steps else []) + keys
    start, cpu = time.perf_counter(), _children_cpu()
    with training_run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}) as process:
        if process.wait():
            raise subprocess.CalledProcessError(process.returncode, command)
    return {"fit_s": time.perf_counter() - start, "fit_cpu_s": _children_cpu() - cpu}


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes: a fit's cost apart from the machine's other load."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def setup_seconds() -> dict:
    """ganforge's set-up alone, wall and CPU seconds: reading adult.data, typing the columns, fitting and applying the transform."""
    import sklearn.mixture  # noqa: F401  (imports are not set-up)

    from ganforge.data.table import TableOptions, load_table

    start, cpu = time.perf_counter(), time.process_time()
    load_table(ADULT / "adult.data", TableOptions(columns=COLUMNS.split(","), header=False))
    return {"setup_s": time.perf_counter() - start, "setup_cpu_s": time.process_time() - cpu}


def score(synthetic: dict, seed: int) -> dict:
    """ganforge's table metrics of synthetic rows: quality against adult.data, ML efficacy and privacy on adult.test."""
    from ganforge.data.table import TableOptions, load_table, read_held_out
    from ganforge.metrics.tabular import table_report

    options = TableOptions(columns=COLUMNS.split(","), header=False)
    real = load_table(ADULT / "adult.data", options)
    test = read_held_out(clean_test_file(Path(os.environ["TABULAR_BENCH_OUT"])), options, real.transform)
    metrics, _ = table_report(real.table, synthetic, real.transform["columns"], "income", test, seed)
    return {**metrics, "contradictory_rows": contradictory_share(synthetic), **capital_figures(synthetic)}


def contradictory_share(rows: dict) -> float:
    """The share of rows whose relationship contradicts their sex or marital status: a husband who is
    female, a wife who is male, or either not married (0.01 % of adult.data's rows: 3 of 32,561)."""
    import numpy as np

    relationship, sex, marital = (np.asarray(rows[c]).astype(str) for c in ("relationship", "sex", "marital-status"))
    spouse = np.isin(relationship, ["Husband", "Wife"])
    wrong = ((relationship == "Husband") & (sex == "Female")) | ((relationship == "Wife") & (sex == "Male"))
    return float((wrong | (spouse & ~np.char.startswith(marital, "Married"))).mean())


def capital_figures(rows: dict) -> dict:
    """The rare number modes that predict income best: the share of rows with a capital gain of at least
    7,000 (4.3 % of adult.data's rows, 99 % of them `>50K`), that `>50K` share, and the share with any
    capital loss (4.7 %)."""
    import numpy as np

    gain, loss = (np.asarray(rows[c], dtype=float) for c in ("capital-gain", "capital-loss"))
    high = gain >= 7_000
    rich = np.asarray(rows["income"]).astype(str) == ">50K"
    return {"high_gain_rows": float(high.mean()), "high_gain_income": float(rich[high].mean()) if high.any() else float("nan"),
            "capital_loss_rows": float((loss > 0).mean())}


def ganforge_rows(run: Path, n: int, seed: int) -> dict:
    from ganforge.export import load_generator
    from ganforge.tabular import sample_rows

    return sample_rows(load_generator(run), n, seed=seed)[0]


def ctgan_rows(run: Path) -> dict:
    from ganforge.data.table import TableOptions, load_table, read_held_out

    real = load_table(ADULT / "adult.data", TableOptions(columns=COLUMNS.split(","), header=False))
    return read_held_out(run / "samples.csv", TableOptions(header=True), real.transform)


def run_seed(system: str, seed: int, out: Path, n: int, steps: int | None, keys: list[str]) -> dict:
    """Fits one system on one seed (unless its folder already holds the fit) and scores its rows."""
    run = out / f"{system}-seed{seed}"
    if system == "ctgan":
        if not (run / "timings.json").is_file():
            run.mkdir(parents=True, exist_ok=True)
            command = [str(CTGAN_PYTHON), __file__, "--fit-ctgan", "--seed", str(seed), "--out", str(run), "--n", str(n)]
            cpu = _children_cpu()
            subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            timings = json.loads((run / "timings.json").read_text())
            (run / "timings.json").write_text(json.dumps({**timings, "fit_cpu_s": _children_cpu() - cpu}))  # includes sampling
        timings, rows = json.loads((run / "timings.json").read_text()), ctgan_rows(run)
    else:
        if not (run / "timings.json").is_file():
            timings = {**fit_ganforge(seed, run, clean_test_file(out), steps, keys), **setup_seconds()}
            (run / "timings.json").write_text(json.dumps(timings))
        timings = json.loads((run / "timings.json").read_text())
        rows = ganforge_rows(run, n, seed)
    return {"system": system, "seed": seed, **timings, **score(rows, seed)}


def report(results: list[dict]) -> None:
    """One line per system: the mean ± standard error over seeds of each figure."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import mean_se

    keys = ("quality", "column_shapes", "column_pairs", "ml_efficacy", "contradictory_rows", "high_gain_rows", "high_gain_income",
            "capital_loss_rows", "dcr_synthetic", "dcr_holdout", "dcr_closer_share", "fit_s", "fit_cpu_s", "setup_s", "setup_cpu_s")
    print("| system | seeds | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for system in dict.fromkeys(r["system"] for r in results):
        rows = [r for r in results if r["system"] == system]
        cells = []
        for key in keys:
            values = [r[key] for r in rows if key in r]
            mean, se = mean_se(values) if values else (float("nan"), float("nan"))
            cells.append(f"{mean:.3f}" + (f" ± {se:.3f}" if se == se else ""))
        print(f"| {system} | {','.join(str(r['seed']) for r in rows)} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-ctgan", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ctgan-epochs", type=int, help=argparse.SUPPRESS)  # a shorter CTGAN fit, to time one epoch
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-tabular")
    parser.add_argument("--n", type=int, default=32_561, help="synthetic rows per fit (default: as many as adult.data)")
    parser.add_argument("--systems", nargs="+", default=["ganforge", "ctgan"], choices=["ganforge", "ctgan", "real"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="ganforge's training steps (default: the table preset's)")
    parser.add_argument("--keys", nargs="+", default=[], metavar="KEY=VALUE", help="more ganforge config keys, e.g. loss=hinge (default: the preset's)")
    args, _ = parser.parse_known_args()
    if args.fit_ctgan:
        args.out.mkdir(parents=True, exist_ok=True)
        fit_ctgan(ADULT / "adult.data", args.seed, args.out, args.n, args.ctgan_epochs)
        return
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import machine

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["TABULAR_BENCH_OUT"] = str(args.out)
    print(f"# {' '.join(sys.argv)}\n# {machine()}")
    results = []
    for system in args.systems:
        if system == "real":  # the real training rows themselves: the ceiling of each figure
            from ganforge.data.table import TableOptions, load_table

            results.append({"system": "real", "seed": 0, **setup_seconds(),
                            **score(load_table(ADULT / "adult.data", TableOptions(columns=COLUMNS.split(","), header=False)).table, 0)})
            continue
        for seed in args.seeds:
            results.append(run_seed(system, seed, args.out, args.n, args.steps, args.keys))
            print(json.dumps(results[-1]), flush=True)
    report(results)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
