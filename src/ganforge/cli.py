"""The `ganforge` command line: `train`, `sample` and `eval`.

Every config key is also a flag of `ganforge train` (`--lr_g 0.001` or `--lr-g 0.001`) and a
`key=value` override; a YAML file sets any of them, and flags win over the file. Bad input
ends with one line on stderr and exit code 2 (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from ganforge.config import Config, field_names, load_yaml, make_config, parse_overrides, unknown_key
from ganforge.errors import GanforgeError
from ganforge.presets import PRESETS, auto_values

KEY_HELP = {
    "data": "dataset: ring8, grid25, digits (default), mnist:FOLDER, an image folder, a .npy/.csv file of vectors, or a table (.csv, .tsv, .data)",
    "image_size": "images: side in pixels after resize/centre-crop (default: the data's own; 8, 16, 28, 32, 64, ...)",
    "channels": "images: 1 (grey) or 3 (RGB) (default: 1 if every image is grey)",
    "on_bad_image": "error (default) or skip: what an unreadable image file in a folder does",
    "table": "true: read a delimited file as a table of typed columns (auto: a .csv with a text column, .tsv, .data); false: as vectors",
    "columns": "tables: comma-separated column names, for a file without a header line (e.g. adult.data)",
    "header": "tables: whether the first line names the columns (auto: true unless columns= is set)",
    "column_types": "tables: NAME:TYPE,... overriding the inferred types (numeric, integer, categorical, boolean, datetime)",
    "target": "tables: the column the ML-efficacy classifiers of the evaluation predict, e.g. target=income",
    "test_data": "tables: a file of held-out real rows (same columns and options) for ML efficacy and the privacy check",
    "arch": "network pair: mlp or conv",
    "latent_dim": "noise dimension (default: lower than the data's: 1 for 2D, 32 for digits, ...)",
    "noise": "noise distribution: normal (default) or uniform on [-1, 1]",
    "g_width": "generator width: hidden units (mlp) or base channels (conv)",
    "d_width": "discriminator width: hidden units (mlp) or base channels (conv)",
    "g_depth": "mlp generator: hidden layers",
    "d_depth": "mlp discriminator: hidden layers",
    "g_extra_layers": "conv generator: extra 3x3 layers at full resolution",
    "d_extra_layers": "conv discriminator: extra 3x3 layers at full resolution",
    "g_norm": "generator normalisation: batch or none",
    "d_norm": "discriminator normalisation: batch, none or spectral (spectral norm on every layer)",
    "d_mbstd": "minibatch standard deviation in the discriminator (ProGAN): group size, e.g. 4; 0 turns it off",
    "pack": "PacGAN packing: samples the discriminator judges jointly",
    "loss": "minimax, nonsaturating (default), wasserstein, hinge or least_squares",
    "gp_weight": "WGAN-GP gradient penalty weight (default 0: off)",
    "r1_gamma": "R1 penalty on real data, weighted gamma/2; 0 turns it off",
    "r1_every": "lazy R1: apply the penalty on every Nth discriminator step, N times as strong",
    "steps": "generator steps to train for",
    "batch_size": "samples per batch (real and generated)",
    "d_steps_per_g_step": "discriminator steps per generator step (default 1)",
    "lr_g": "generator learning rate (Adam)",
    "lr_d": "discriminator learning rate (Adam)",
    "lr_decay": "final fraction of the steps over which both learning rates fall linearly to 0",
    "beta1": "Adam beta1",
    "beta2": "Adam beta2",
    "ema_decay": "moving average of the generator's weights used for samples and export; 0 turns it off",
    "seed": "random seed (default 0)",
    "precision": "fp32 (default), bf16 or fp16: autocast for the networks; losses and penalties stay fp32",
    "compile": "off (default), on (torch.compile each network) or graphs (also CUDA graphs); eager where compiling fails",
    "channels_last": "conv nets: NHWC memory layout (auto: on for conv nets)",
    "threads": "torch's CPU threads for the run, e.g. threads=1 for several runs side by side (auto: one per core, or OMP_NUM_THREADS)",
    "device": "auto (default: cuda if available), cpu, cuda or cuda:N",
    "sync_batchnorm": "true: synchronised BatchNorm across GPUs under torchrun (default false: per-process "
    "statistics, averaged across processes before sampling and saving)",
    "max_nonfinite_steps": "divergence guard: steps with NaN/Inf loss or gradients are skipped; this many in a row "
    "trigger on_divergence (default 20; 0 turns the guard and its per-step check off)",
    "on_divergence": "stop (default: exit with code 3, last good checkpoint kept) or rollback (to the last checkpoint, "
    "with fresh noise and batches, at most 3 times)",
    "out": "run folder (default: runs/<dataset>); an existing run of the same config resumes",
    "log_every": "steps between metrics.jsonl lines and progress updates",
    "sample_every": "steps between sample images in OUT/samples",
    "checkpoint_every": "steps between checkpoints in OUT/checkpoints",
    "keep_checkpoints": "how many recent checkpoints to keep (default 2)",
    "eval_every": "steps between evaluations during training (the metrics of `ganforge eval`), logged to metrics.jsonl "
    "and shown in the progress line (default 0: off)",
    "eval_n": "generated samples per evaluation (auto: 2,500 for 2D mixtures, 26,000 for Stacked MNIST, else up to 10,000)",
    "best_metric": "metric that keeps the best generator in OUT/best and its state in OUT/checkpoints/best.pt",
}


def _key_help(name: str) -> str | None:
    """A key's flag help; the keys every preset sets end with the presets' values, read from PRESETS."""
    if all(name in preset for preset in PRESETS.values()):
        return f"{KEY_HELP[name]} ({auto_values(name)})"
    return KEY_HELP.get(name)


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganforge",
        allow_abbrev=False,
        description="Train generative adversarial networks with PyTorch, sample from them.",
        epilog="Run 'ganforge train --help', 'ganforge sample --help' or 'ganforge eval --help' for each command's options.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

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
        keys.add_argument(*flags, dest=f"key_{name}", metavar="VALUE", help=_key_help(name))

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
    sample.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    sample.add_argument("--force", action="store_true", help="overwrite an existing output")
    sample.add_argument("--where", action="append", metavar="COLUMN=CATEGORY",
                        help="tables: only rows with this category (repeatable: all must hold), e.g. --where sex=Female")
    sample.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    evaluate = commands.add_parser(
        "eval", help="measure a trained run's samples against real data", epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score a run's exported generator against its real data. The defaults pick the metrics for the data: "
        "mode statistics for 2D mixtures and Stacked MNIST; Fréchet distance, KID, precision/recall, density/coverage "
        "and class statistics in the shipped classifier's features for digits and MNIST; Inception features for other "
        "images when torch-fidelity is installed.",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'ganforge train'")
    evaluate.add_argument("--n", type=int, help="generated samples (default: 2,500 for mixtures, 26,000 for Stacked MNIST, else as many as real, <= 10,000)")
    evaluate.add_argument("--metrics", nargs="+", metavar="METRIC", help="fd, kid, precision_recall, density_coverage, classes, modes (default: by data)")
    evaluate.add_argument("--features", default="auto", help="auto (default: by data), digits8, mnist28, inception, pixels or raw (vectors)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the noise, the real subset and KID's subsets (default 0)")
    evaluate.add_argument("--real-baseline", action="store_true", help="also report each metric between two halves of the real data")
    evaluate.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    evaluate.add_argument("--cache-dir", help="folder for cached real-data features (default $GANFORGE_CACHE or ~/.cache/ganforge/eval)")
    evaluate.add_argument("--no-cache", action="store_true", help="compute real-data features afresh and store nothing")
    evaluate.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


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
    from ganforge.train import train

    if args.nproc < 1:
        raise GanforgeError(f"--nproc {args.nproc} is invalid: expected an integer >= 1")
    if args.nproc > 1 and not distributed.launched():
        return _launch(args.nproc, _without_nproc(argv))

    yaml_files = [a for a in args.args if "=" not in a]
    if len(yaml_files) > 1:
        raise GanforgeError(f"expected at most one config file, got {len(yaml_files)}: {' '.join(yaml_files)}")
    layers = [load_yaml(yaml_files[0])] if yaml_files else []
    flags = {name: getattr(args, f"key_{name}") for name in field_names() if getattr(args, f"key_{name}") is not None}
    layers += [flags, parse_overrides([a for a in args.args if "=" in a])]
    config: Config = make_config(*layers)
    try:
        train(config, new=args.new, progress=not args.quiet, say=lambda m: print(m, file=sys.stderr))
    except KeyboardInterrupt:
        return 130
    return 0


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    from ganforge.export import load_generator
    from ganforge.plots import save_samples, to_image
    from ganforge.trainer import pick_device

    if args.n < 1:
        raise GanforgeError(f"--n {args.n} is invalid: expected an integer >= 1")
    out = Path(args.out)
    if out.exists() and not args.force and not (out.is_dir() and not any(out.iterdir())):
        raise GanforgeError(f"--out {out} exists: choose another path or add --force to overwrite")
    generator = load_generator(args.run_dir, pick_device(args.device))
    if generator.spec["transform"]["kind"] == "table":
        return _sample_table(generator, args, out)
    if args.where:
        raise GanforgeError(f"--where {args.where[0]}: conditions apply to tables, but {args.run_dir} generates {generator.spec['transform']['kind']} data")
    samples = generator.sample(args.n, seed=args.seed).cpu()
    is_image = samples.dim() == 4
    suffix = out.suffix.lower()
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
    from ganforge.trainer import pick_device

    if args.n is not None and args.n < 2:
        raise GanforgeError(f"--n {args.n} is invalid: expected an integer >= 2")
    metrics = tuple(m for group in args.metrics or [] for m in group.split(",") if m) or None
    cache = None if args.no_cache else Path(args.cache_dir) if args.cache_dir else cache_dir()
    record = evaluate_run(
        args.run_dir, n=args.n, metrics=metrics, features=args.features, seed=args.seed,
        real_baseline=args.real_baseline, cache=cache, device=pick_device(args.device),
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
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "train":
            # key=value overrides may stand anywhere, also after flags
            args.args += [a for a in unknown if "=" in a and not a.startswith("-")]
            unknown = [a for a in unknown if a not in args.args]
        if unknown:
            flag = unknown[0].split("=")[0]
            if args.command == "train" and flag.startswith("--"):
                raise unknown_key(flag[2:].replace("-", "_"), "as a flag")
            raise GanforgeError(f"unrecognized argument {unknown[0]!r}: see 'ganforge {args.command} --help'")
        if args.command == "train":
            return _train(args, argv)
        return _sample(args) if args.command == "sample" else _eval(args)
    except GanforgeError as err:
        if args.debug:
            raise
        print(f"ganforge: error: {_one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        if args.debug:
            raise
        where = f" {err.filename}" if getattr(err, "filename", None) else ""
        print(_one_line(f"ganforge: error: cannot read or write{where}: {err.strerror or err}"), file=sys.stderr)
        return 2
