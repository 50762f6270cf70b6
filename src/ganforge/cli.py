"""The `ganforge` command line: `train`, `sample`, `eval` and `report`.

Every config key is also a flag of `ganforge train` (`--lr_g 0.001` or `--lr-g 0.001`) and a
`key=value` override; a YAML file sets any of them, and flags win over the file. Bad input
ends with one line on stderr and exit code 2 (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

from ganforge.config import Config, field_names, key_help, load_yaml, make_config, parse_overrides, unknown_key
from ganforge.errors import GanforgeError, cut

UNEXPECTED = 1  # the exit code of an error the command line did not expect (a bug): distinct from bad input's 2
MAX_SAMPLES = 10_000_000  # samples one `ganforge sample` draws at most (fewer where memory is the limit)
MAX_GRID = 4096  # images one .png grid holds at most


TRAIN_EXAMPLES = """examples:
  ganforge train                                   # digits, about 2 minutes on 2 CPU cores -> runs/digits
  ganforge train --data ring8 --steps 5000         # 2D mixture of 8 Gaussians -> runs/ring8
  ganforge train --data mnist:data/mnist --out runs/mnist loss=hinge lr_d=0.0004
  ganforge train my.yaml --data photos/ --image_size 64 --device cuda
  ganforge train --new                             # start runs/digits over (the old run is moved aside)
  ganforge train --data mnist:data/mnist --nproc 2    # 2 processes (torchrun) on this machine
Run the same command again to resume from the last checkpoint. Config keys can be given as
--key VALUE or key=VALUE; a YAML file of key: value lines sets any of them."""

SAMPLE_EXAMPLES = """examples:
  ganforge sample runs/digits --n 64 --out grid.png       # one image grid
  ganforge sample runs/digits --n 1000 --out samples.npy  # array (1000, 1, 8, 8) in [0, 1]
  ganforge sample runs/ring8 --n 2500 --out ring.npy      # array (2500, 2)
  ganforge sample runs/digits --n 100 --out pngs/         # a folder of 100 PNG files
  ganforge sample runs/adult --n 1000 --where sex=Female --where race=Black --out rows.csv  # table rows"""


EVAL_EXAMPLES = """examples:
  ganforge eval runs/digits                         # Fréchet distance, KID, precision/recall, density/coverage, classes
  ganforge eval runs/mnist --real-baseline          # the same between two halves of the real data, for scale
  ganforge eval runs/ring8 --n 2500                 # modes, % high quality, reverse KL (PacGAN protocol)
  ganforge eval runs/mnist --metrics fd kid --features mnist28 --seed 1
Prints one JSON object; also writes it to RUN_DIR/eval.json and appends it to RUN_DIR/eval.jsonl.
Real-data features are cached in $GANFORGE_CACHE (default ~/.cache/ganforge/eval)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line (exit 2) instead of a usage block."""

    def error(self, message: str):
        raise GanforgeError(f"{cut(message)}: see '{self.prog} --help'")




REPORT_EXAMPLES = """examples:
  ganforge report runs/digits                       # -> runs/digits/report.html
  ganforge report runs/digits runs/digits-hinge     # both on the same plots -> runs/digits/compare.html
  ganforge report runs/a runs/b --out ab.html
The page is one self-contained HTML file (inline SVG plots and PNG samples, no script): it opens offline."""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ganforge",
        allow_abbrev=False,
        description="Train generative adversarial networks with PyTorch, sample from them.",
        epilog="Run 'ganforge COMMAND --help' (train, sample, eval or report) for each command's options.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_train, _add_sample, _add_eval, _add_report):
        add(commands)
    return parser


def _add_train(commands) -> None:
    train = commands.add_parser(
        "train", allow_abbrev=False, help="train a GAN (resumes an existing run)", epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a GAN and write config.json, metrics.jsonl, samples/, checkpoints/ and the exported generator into the run folder.",
    )
    train.add_argument("args", nargs="*", metavar="[CONFIG.yaml] [key=value ...]", help="a YAML config file and/or key=value overrides")
    train.add_argument("--new", action="store_true", help="start over even if the run folder holds a run (it is moved to OUT.old-N)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--nproc", type=int, default=1, metavar="N",
        help="data-parallel training in N processes on this machine, started through torchrun (one per GPU, or Gloo on CPU)",
    )
    train.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    keys = train.add_argument_group("config keys (flags, key=value or YAML)")
    for name in field_names():
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        keys.add_argument(*flags, dest=f"key_{name}", metavar="VALUE", help=key_help(name))


def _add_sample(commands) -> None:
    sample = commands.add_parser(
        "sample", help="draw samples from a trained run", epilog=SAMPLE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw N samples from a run's exported generator. The output's form follows --out: "
        ".npy an array in data space (images in [0, 1]), .png one grid (a scatter plot for 2D data), "
        ".csv a table (vectors), any other path a folder of one PNG per sample.",
    )
    sample.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'ganforge train'")
    sample.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    sample.add_argument("--out", required=True, help="output: FILE.npy, FILE.png, FILE.csv or a folder")
    sample.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    sample.add_argument("--class", dest="class_name", default=None, help="class-conditional runs: the class to draw, by name or number")
    sample.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    sample.add_argument("--force", action="store_true", help="overwrite an existing output")
    sample.add_argument("--where", action="append", metavar="COLUMN=CATEGORY",
                        help="tables: only rows with this category (repeatable: all must hold), e.g. --where sex=Female")
    sample.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _add_eval(commands) -> None:
    evaluate = commands.add_parser(
        "eval", help="measure a trained run's samples against real data", epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score a run's exported generator against its real data. The defaults pick the metrics for the data: "
        "mode statistics for 2D mixtures and Stacked MNIST; Fréchet distance, KID, precision/recall, density/coverage "
        "and class statistics in the shipped classifier's features for digits and MNIST; Inception features for other "
        "images with pip install 'ganforge[inception]' (else downsampled pixels, with a note).",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'ganforge train'")
    evaluate.add_argument("--n", type=int, help="generated samples (default: 2,500 for mixtures, 26,000 for Stacked MNIST, else as many as real, <= 10,000)")
    evaluate.add_argument("--metrics", nargs="+", metavar="METRIC", help="fd, kid, precision_recall, density_coverage, classes, modes (default: by data)")
    evaluate.add_argument(
        "--features", default="auto", help="auto (default: by data), digits8, mnist28, mnist28b (a second MNIST reader), inception, pixels or raw (vectors)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the noise, the real subset and KID's subsets (default 0)")
    evaluate.add_argument(
        "--real-baseline", action="store_true",
        help="also report each metric between two halves of the real data (and, for MNIST, for training images against the test images)",
    )
    evaluate.add_argument("--target", metavar="COLUMN", help="tables: the categorical column ML efficacy predicts (default: the run's target=)")
    evaluate.add_argument("--test-data", dest="test_data", metavar="FILE",
                          help="tables: held-out real rows for ML efficacy and the privacy check (default: the run's test_data=)")
    evaluate.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    evaluate.add_argument("--cache-dir", help="folder for cached real-data features (default $GANFORGE_CACHE or ~/.cache/ganforge/eval)")
    evaluate.add_argument("--no-cache", action="store_true", help="compute real-data features afresh and store nothing")
    evaluate.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _add_report(commands) -> None:
    report = commands.add_parser(
        "report", help="write an HTML page of a run's training: plots, samples, config, diagnosis", epilog=REPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write one self-contained HTML page of a run: losses, D(x) and D(G(z)), every evaluation metric against "
        "steps and training time, the sample grids over training, the config, and a diagnosis of the known failure modes "
        "(discriminator winning, mode collapse, failure to converge, divergence) with what to try. Several runs share the plots.",
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="one or more run folders written by 'ganforge train'")
    report.add_argument("--out", help="the page to write (default: RUN_DIR/report.html; for several runs, FIRST_RUN_DIR/compare.html)")
    report.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _report(args: argparse.Namespace) -> int:
    from ganforge.report import write_report

    print(f"wrote {write_report(args.run_dirs, args.out)}", file=sys.stderr)
    return 0


def _launch(nproc: int, argv: list[str]) -> int:
    """Re-runs this command under torchrun with `nproc` processes on this machine; returns its exit code."""
    command = [sys.executable, "-m", "ganforge.launch", "--standalone", "--nproc_per_node", str(nproc), "-m", "ganforge", *argv]
    # Ctrl-C reaches the launcher too (same process group); it passes the signal on to the workers
    # and waits until they have stopped at one step and saved it, so this process waits with it
    # rather than returning early. A SIGTERM sent to this process alone is passed on likewise.
    process = None

    def pass_on(signum: int, _frame) -> None:
        if signum == signal.SIGTERM and process is not None:
            process.send_signal(signum)

    saved = {s: signal.signal(s, pass_on) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        process = subprocess.Popen(command)
        return process.wait()
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _without_nproc(argv: list[str]) -> list[str]:
    result, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            result.append(arg)
    return result


def _train(args: argparse.Namespace, argv: list[str]) -> int:
    from ganforge import distributed
    from ganforge.training import StoppedAtOnce, train

    most = _most_processes()
    if args.nproc < 1:
        raise GanforgeError(f"--nproc {args.nproc} is invalid: expected an integer >= 1")
    if args.nproc > most:
        raise GanforgeError(f"--nproc {cut(str(args.nproc), 40)} is invalid: expected an integer from 1 to {most} (the devices of this machine)")
    config = _config(args)
    if args.nproc > 1 and not distributed.launched():
        _check_before_launch(config, args.new)
        return _launch(args.nproc, _without_nproc(argv))
    try:
        train(config, new=args.new, progress=not args.quiet, say=lambda m: print(m, file=sys.stderr))
    except StoppedAtOnce:
        print("stopped at once by a second Ctrl-C; the last checkpoint is kept: run the same command again to resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if distributed.launched():
            # Stopped with the step saved: the SIGTERM torchrun sends a job's other processes once
            # one has exited has nothing left to stop in this one, whose exit code stays 130.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return 130
    return 0


def _config(args: argparse.Namespace) -> Config:
    """The config of `ganforge train`'s YAML file, flags and key=value overrides (later wins), validated."""
    yaml_files = [a for a in args.args if "=" not in a]
    if len(yaml_files) > 1:
        raise GanforgeError(f"expected at most one config file, got {len(yaml_files)}: {cut(' '.join(yaml_files))}")
    layers = [load_yaml(yaml_files[0])] if yaml_files else []
    flags = {name: getattr(args, f"key_{name}") for name in field_names() if getattr(args, f"key_{name}") is not None}
    layers += [flags, parse_overrides([a for a in args.args if "=" in a])]
    return make_config(*layers)


def _most_processes() -> int:
    """The most processes `--nproc` may start: one per GPU, or one per CPU core without GPUs."""
    import torch

    return max(torch.cuda.device_count(), os.cpu_count() or 1)


def _check_before_launch(config: Config, new: bool) -> None:
    """What would refuse the run in every process is found once, here, before torchrun starts them:
    the config's values, the data spec and the data, and the config resolved for that data."""
    from ganforge.data import load_dataset
    from ganforge.data.table import table_options
    from ganforge.training.loop import resolve_for

    dataset = load_dataset(config.data, config.image_size, config.channels, config.on_bad_image, table_options(dataclasses.asdict(config)))
    resolve_for(config, dataset, new)


def _sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ganforge.export import load_generator
    from ganforge.limits import check_count
    from ganforge.plots import save_samples, to_image
    from ganforge.training.state import pick_device

    if args.n < 1:
        raise GanforgeError(f"--n {args.n} is invalid: expected an integer >= 1")
    _check_seed(args.seed)
    out = Path(args.out)
    if out.exists() and not args.force and not (out.is_dir() and not any(out.iterdir())):
        raise GanforgeError(f"--out {out} exists: choose another path or add --force to overwrite")
    device = pick_device(args.device)
    generator = load_generator(args.run_dir, device)
    shape = tuple(generator.spec["sample_shape"])
    check_count("--n", args.n, 1, MAX_SAMPLES, shape, device)
    if generator.makes_rows:
        return _sample_table(generator, args, out)
    if args.where:
        raise GanforgeError(f"--where {args.where[0]}: conditions apply to tables, but {args.run_dir} generates {generator.spec['transform']['kind']} data")
    suffix = out.suffix.lower()
    if suffix == ".png":
        _check_picture(out, shape, args.n)
    labels = None if args.class_name is None else torch.tensor(generator.class_index(args.class_name))
    samples = generator.sample(args.n, seed=args.seed, labels=labels).cpu()
    is_image = samples.dim() == 4
    if suffix == ".npy":
        np.save(out, samples.numpy().astype(np.float32))
    elif suffix == ".csv":
        if is_image:
            raise GanforgeError(f"--out {out}: CSV holds vectors, but this run generates images: use .npy, .png or a folder")
        np.savetxt(out, samples.numpy(), delimiter=",", fmt="%.7g")
    elif suffix == ".png":
        save_samples(out, samples)
    elif suffix:
        raise GanforgeError(f"--out {out}: unknown output type '{suffix}': expected .npy, .png, .csv or a folder")
    else:
        if not is_image:
            raise GanforgeError(f"--out {out}: a folder of PNGs needs images, but this run generates vectors: use .npy or .csv")
        out.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(samples):
            to_image(image).save(out / f"{i:06d}.png")
    print(f"wrote {args.n} samples to {out}", file=sys.stderr)
    return 0


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**31:
        raise GanforgeError(f"--seed {cut(str(seed), 40)} is invalid: expected an integer from 0 to 2**31 - 1")


def _check_picture(out: Path, shape: tuple[int, ...], n: int) -> None:
    """A .png is an image grid or a 2D scatter plot: refused for other vectors, or for a grid too large to draw."""
    if len(shape) == 1 and shape != (2,):
        raise GanforgeError(f"--out {out}: a .png shows images or 2D points, but this run generates {shape[0]}-dimensional vectors: use .npy or .csv")
    if len(shape) == 3 and n > MAX_GRID:
        raise GanforgeError(f"--n {n} is invalid for one .png grid: expected at most {MAX_GRID:,} images (a folder or .npy takes more)")


def _sample_table(generator, args: argparse.Namespace, out: Path) -> int:
    """Rows of a table run as a .csv in the data's own formats; `--where` rows all match, by conditioning and rejection."""
    from ganforge.data.table import write_table
    from ganforge.tabular import sample_rows

    if out.suffix.lower() != ".csv":
        raise GanforgeError(f"--out {out}: a table run writes rows as .csv: use e.g. --out rows.csv")
    rows, acceptance = sample_rows(generator, args.n, seed=args.seed, where=args.where)
    write_table(out, rows, generator.spec["transform"])
    condition = f" with {' and '.join(args.where)} (acceptance rate {acceptance:.1%})" if args.where else ""
    print(f"wrote {args.n} rows to {out}{condition}", file=sys.stderr)
    return 0

def _eval(args: argparse.Namespace) -> int:
    import json

    from ganforge.evaluate import cache_dir, evaluate_run
    from ganforge.training.state import pick_device

    if args.n is not None and args.n < 2:
        raise GanforgeError(f"--n {args.n} is invalid: expected an integer >= 2")
    _check_seed(args.seed)
    metrics = tuple(m for group in args.metrics or [] for m in group.split(",") if m) or None
    cache = None if args.no_cache else Path(args.cache_dir) if args.cache_dir else cache_dir()
    record = evaluate_run(
        args.run_dir, n=args.n, metrics=metrics, features=args.features, seed=args.seed,
        real_baseline=args.real_baseline, cache=cache, device=pick_device(args.device), target=args.target, test_data=args.test_data,
        progress=True,
    )
    for note in record["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(json.dumps(record))
    return 0


def _one_line(message: str) -> str:
    """Newlines in a user's value (a path, a key) must not split the one-line error."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # distributed.launched(), without importing torch
        # A process started by torchrun ends here, its run saved and its process group destroyed.
        # Interpreter teardown would then free objects that still hold Gloo's worker threads,
        # which now and then aborts the process in C++ ("terminate called without an active
        # exception") and fails the whole job; so the worker leaves without it, as
        # multiprocessing's children do.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return _command(argv)
    except GanforgeError as err:
        if debug:
            raise
        print(f"ganforge: error: {_one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        if debug:
            raise
        where = f" {err.filename}" if getattr(err, "filename", None) else ""
        print(_one_line(f"ganforge: error: cannot read or write{where}: {err.strerror or err}"), file=sys.stderr)
        return 2
    except Exception as err:  # the last resort: never a traceback without --debug, and never silent
        if debug:
            raise
        message = cut(str(err).strip().splitlines()[0] if str(err).strip() else "no message")
        print(_one_line(f"ganforge: error: unexpected {type(err).__name__}: {message} (run with --debug for the traceback)"), file=sys.stderr)
        return UNEXPECTED


def _command(argv: list[str]) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "train":
        # key=value overrides may stand anywhere, also after flags
        args.args += [a for a in unknown if "=" in a and not a.startswith("-")]
        unknown = [a for a in unknown if a not in args.args]
    if unknown:
        flag = unknown[0].split("=")[0]
        if args.command == "train" and flag.startswith("--"):
            raise unknown_key(cut(flag[2:].replace("-", "_"), 60), "as a flag")
        raise GanforgeError(f"unrecognized argument {cut(repr(unknown[0]), 80)}: see 'ganforge {args.command} --help'")
    if args.command == "train":
        return _train(args, argv)
    if args.command == "report":
        return _report(args)
    return _sample(args) if args.command == "sample" else _eval(args)
