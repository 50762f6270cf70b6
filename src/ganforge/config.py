"""The one typed configuration of a training run: defaults, parsing, validation, resolution.

A YAML file, command-line flags and `key=value` overrides all set fields of `Config`, with
the same names. Fields left at None are "auto": `resolve` fills them from the dataset
(2D mixtures, vectors or images) so that every run folder holds a fully concrete
`config.json`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ganforge import tensorboard_events
from ganforge.augment import parse_policy
from ganforge.data.spec import SPEC_HELP, parse_spec
from ganforge.data.table import parse_column_types
from ganforge.errors import GanforgeError, cut, first_line
from ganforge.losses import LOSSES
from ganforge.nets import ARCHITECTURES, D_NORMS, NORMS, conv_layout, mbstd_group
from ganforge.noise import DISTRIBUTIONS
from ganforge.presets import CONDITIONAL, PRESETS, SMALL_IMAGE_SET, auto_values, shown_value
from ganforge.tabular import DRAWS

# fast: bf16 where the device computes it natively, else fp32 (resolved on the device: training.state.resolve_speed).
PRECISION_CHOICES = ("fast", "fp32", "bf16", "fp16")


def key(default: object, help: str, choices: tuple | None = None):
    """A config field: its default, its flag help and (for a key of a few values) its allowed values.

    Each key is declared once, here; the flag help, validation and `CHOICES` read from it.
    """
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class Config:
    # Data
    data: str = key("digits", f"dataset: {SPEC_HELP}")
    image_size: int | None = key(None, "images: side in pixels after resize/centre-crop (auto: the data's own; 8, 16, 28, 32, 64, ...)")
    channels: int | None = key(None, "images: 1 (grey) or 3 (RGB) (auto: 1 if every image is grey)", (1, 3))
    on_bad_image: str = key("error", "what an unreadable image file in a folder does", ("error", "skip"))
    table: bool | None = key(None, "true: read a delimited file as a table of typed columns (auto: a .csv with a text column, .tsv, .data); false: as vectors")
    columns: str | None = key(None, "tables: comma-separated column names, for a file without a header line (e.g. adult.data)")
    header: bool | None = key(None, "tables: whether the first line names the columns (auto: true unless columns= is set)")
    column_types: str | None = key(None, "tables: NAME:TYPE,... overriding the inferred types (numeric, integer, categorical, boolean, datetime)")
    target: str | None = key(None, "tables: the column the ML-efficacy classifiers of the evaluation predict, e.g. target=income")
    test_data: str | None = key(None, "tables: a file of held-out real rows (same columns and options) for ML efficacy and the privacy check")
    # Networks
    arch: str = key("auto", "network pair: mlp, conv (DCGAN) or resnet (residual, no normalisation, after R3GAN)", ("auto", *ARCHITECTURES))
    latent_dim: int | None = key(None, "noise dimension (auto: lower than the data's: 1 for 2D, 32 for digits, ...)")
    noise: str = key("normal", "noise distribution (uniform: on [-1, 1])", DISTRIBUTIONS)
    g_width: int | None = key(None, "generator width: hidden units (mlp) or base channels (conv, resnet)")
    d_width: int | None = key(None, "discriminator width: hidden units (mlp) or base channels (conv, resnet)")
    g_depth: int | None = key(None, "generator depth: hidden layers (mlp) or residual blocks per resolution (resnet)")
    d_depth: int | None = key(None, "discriminator depth: hidden layers (mlp) or residual blocks per resolution (resnet)")
    groups: int | None = key(None, "resnet: groups of the 3x3 convolution in each residual block (1: a plain convolution)")
    g_extra_layers: int | None = key(None, "conv generator: extra 3x3 layers at full resolution")
    d_extra_layers: int | None = key(None, "conv discriminator: extra 3x3 layers at full resolution")
    g_norm: str | None = key(None, "generator normalisation", NORMS)
    d_norm: str | None = key(None, "discriminator normalisation (spectral: spectral norm on every layer)", D_NORMS)
    d_mbstd: int | None = key(None, "minibatch standard deviation in the discriminator (ProGAN): group size, e.g. 4; 0 turns it off")
    augment: str | None = key(
        None, "DiffAugment for the discriminator: none, or a comma list of translation, cutout and color, applied to real and "
        "generated images in both steps (differentiable, so G learns through it)"
    )
    ada_target: float | None = key(
        None, "adaptive augmentation (ADA): each augment operation reaches each image with a probability that rises while D "
        "tells the real images it trains on from generated ones more surely than this (the mean sign of D(x), or of "
        "D(x) - D(G(z)) for the relativistic and wasserstein losses; 0 is chance, 1 complete) and falls while less; "
        "0: always applied"
    )
    conditional: bool | None = key(
        None, "true: class-conditional generator and discriminator, trained on the data's labels (class sub-folders, MNIST label "
        "files, digits); sample a class with `ganforge sample --class`"
    )
    clusters: int | None = key(
        None, "self-conditioning for unconditional images: G and D are conditioned on this many k-means clusters of the "
        "training images' pixels, found once before training (no labels used); samples draw each cluster as often as the "
        "data holds it; 0 turns it off"
    )
    pack: int | None = key(None, "PacGAN packing: samples the discriminator judges jointly")
    category_draw: str | None = key(
        None, "tables: how the generator picks each category and number mode: argmax (a softmax at temperature 0.2 in "
        "training, its argmax when sampling, so a row's picks are one function of the noise) or gumbel (CTGAN's: Gumbel "
        "noise added to the scores, drawn anew for each column) (auto: argmax)", DRAWS
    )
    # Objective and optimisation
    loss: str | None = key(None, "the GAN loss (relativistic: D on D(x) - D(G(z)) of paired samples, G the mirror)", tuple(LOSSES))
    gp_weight: float | None = key(None, "WGAN-GP gradient penalty weight (0: off)")
    r1_gamma: float | None = key(None, "R1 penalty on real data, weighted gamma/2; 0 turns it off")
    r2_gamma: float | None = key(None, "R2 penalty on generated data, weighted gamma/2; 0 turns it off")
    diversity: float | None = key(
        None, "weight of the mode-seeking term in G's loss (MSGAN): penalises samples of one class or cluster that differ "
        "less than their noise does, for more varied samples; 0 turns it off; a preset's term comes with its clusters, "
        f"and the images preset's conditional runs take {shown_value(CONDITIONAL['images']['diversity'])}"
    )
    diversity_kimg: float | None = key(
        None, "the mode-seeking term stops once this many thousand images have been trained on (steps x batch_size); 0: never; "
        f"the images preset's conditional runs stop it at {shown_value(CONDITIONAL['images']['diversity_kimg'])}"
    )
    r1_every: int | None = key(None, "lazy R1 and R2: apply the penalties on every Nth discriminator step, N times as strong")
    steps: int | None = key(None, "generator steps to train for")
    batch_size: int | None = key(None, "samples per batch (real and generated); the global batch under torchrun")
    d_steps_per_g_step: int | None = key(None, "discriminator steps per generator step")
    lr_g: float | None = key(None, "generator learning rate (Adam)")
    lr_d: float | None = key(None, "discriminator learning rate (Adam)")
    lr_decay: float | None = key(None, "final fraction of the steps over which both learning rates fall linearly to 0")
    beta1: float | None = key(None, "Adam beta1")
    beta2: float | None = key(None, "Adam beta2")
    ema_decay: float | None = key(None, "moving average of the generator's weights used for samples and export; 0 turns it off")
    ema_kimg: float | None = key(
        None, "the moving average's half-life in thousands of images, ramped up over the start of the run (0: a constant ema_decay)"
    )
    ema_rampup: float | None = key(
        None, "with ema_kimg: the half-life is at most this fraction of the images trained on so far, so early weights fade fast"
    )
    seed: int = key(0, "random seed")
    device: str = key("auto", "auto (cuda if available), cpu, cuda or cuda:N")
    sync_batchnorm: bool = key(
        False, "true: synchronised BatchNorm across GPUs under torchrun (false: per-process statistics, averaged across processes before sampling and saving)"
    )
    # Speed: how the same computation runs (resolved once by the Trainer)
    precision: str | None = key(
        None, "autocast for the networks; losses and penalties stay fp32 (fast: bf16 where the device has bf16 arithmetic, a CUDA GPU "
        "of compute capability 8.0 or later or a CPU with AVX512-BF16 or AMX, else fp32)", PRECISION_CHOICES
    )
    compile: str = key("off", "torch.compile each network (on), also with CUDA graphs (graphs); eager where compiling fails", ("off", "on", "graphs"))
    channels_last: bool | None = key(None, "conv nets: NHWC memory layout (auto: on for conv nets)")
    threads: int | None = key(
        None, "torch's CPU threads for the run, e.g. threads=1 for several runs side by side (auto: one per core, or OMP_NUM_THREADS)"
    )
    # Divergence guard
    max_nonfinite_steps: int = key(
        20, "divergence guard: steps with NaN/Inf loss or gradients are skipped; this many in a row trigger on_divergence (0 turns the guard off)"
    )
    on_divergence: str = key(
        "stop", "stop (exit code 3, last good checkpoint kept) or rollback (to the last checkpoint, with fresh noise and batches, at most 3 times)",
        ("stop", "rollback"),
    )
    # Run folder
    out: str | None = key(None, "run folder (auto: runs/<dataset>); an existing run of the same config resumes")
    log_every: int | None = key(None, "steps between metrics.jsonl lines and progress updates")
    sample_every: int | None = key(None, "steps between sample images in OUT/samples")
    checkpoint_every: int | None = key(None, "steps between checkpoints in OUT/checkpoints")
    keep_checkpoints: int = key(2, "how many recent checkpoints to keep")
    # Evaluation during training (the metrics of `ganforge eval`)
    eval_every: int = key(0, "steps between evaluations during training (the metrics of `ganforge eval`), logged to metrics.jsonl (0: off)")
    eval_n: int | None = key(None, "generated samples per evaluation (auto: 2,500 for 2D mixtures, 26,000 for Stacked MNIST, else up to 10,000)")
    best_metric: str | None = key(None, "metric that keeps the best generator in OUT/best and its state in OUT/checkpoints/best.pt")
    tensorboard: bool = key(
        False, "true: also write TensorBoard event files (losses, D(x), D(G(z)), evaluation metrics, sample grids) to OUT/tensorboard; "
        "needs the tensorboard package",
    )


# The allowed values of every key that has a few, from the fields (and the registries they name).
CHOICES = {f.name: f.metadata["choices"] for f in fields(Config) if f.metadata["choices"]}

# Keys whose value is a comma list of names ("none": the empty list).
LISTS = ("augment",)
# Metrics an evaluation reports, any of which can pick the best checkpoint.
BEST_METRICS = (
    "fd", "kid_mean", "precision", "recall", "density", "coverage", "classes_covered", "class_kl", "classifier_score",
    "modes", "hq_percent", "reverse_kl", "kl", "quality", "column_shapes", "column_pairs", "ml_efficacy",
)
# Keys a resumed run may change: they steer the run, not what it computes. Precision, compile,
# memory layout and threads change only rounding, like a move to another device.
RESUMABLE_CHANGES = {
    "eval_every", "eval_n", "target", "test_data",
    "steps", "device", "out", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints",
    "max_nonfinite_steps", "on_divergence", "sync_batchnorm", "precision", "compile", "channels_last",
    "threads", "tensorboard",
}

# Values config.json records beside the config, derived at run time: a config file may
# hold them (a saved config.json is a valid config file); they are recomputed, not read.
DERIVED = ("world_size", "batch_per_process", "precision_used")

# Keys added after run folders were saved, with the value that computes what those runs did:
# a saved config.json without one reads as that value, so an older run still resumes.
ADDED_KEYS = {
    "d_mbstd": 0, "groups": 1, "r2_gamma": 0.0, "ema_kimg": 0.0, "ema_rampup": 0.05, "augment": "none", "ada_target": 0.0, "conditional": False,
    "clusters": 0, "diversity": 0.0, "diversity_kimg": 0.0, "category_draw": "gumbel", "table": None, "columns": None, "header": None, "column_types": None,
    "target": None, "test_data": None,
}

_TYPES = typing.get_type_hints(Config)

# The largest value of each integer key: far beyond any run these networks make sense for,
# small enough that a typo (1e9) is refused here, in one line, rather than by the memory
# allocator. Whether the networks and batches of a run fit in memory is checked again once
# the data's shape is known (`ganforge.limits`).
MAXIMA = {
    "image_size": 1024, "latent_dim": 16_384, "g_width": 16_384, "d_width": 16_384, "g_depth": 64, "d_depth": 64,
    "g_extra_layers": 64, "d_extra_layers": 64, "d_mbstd": 1024, "pack": 64, "r1_every": 1_000_000,
    "steps": 1_000_000_000, "batch_size": 1_048_576, "d_steps_per_g_step": 100, "log_every": 1_000_000_000,
    "sample_every": 1_000_000_000, "checkpoint_every": 1_000_000_000, "keep_checkpoints": 1000,
    "max_nonfinite_steps": 1_000_000_000, "eval_every": 1_000_000_000, "eval_n": 1_000_000, "threads": 1024, "groups": 1024,
    "clusters": 4096,
}
# The largest penalty weight: beyond it the penalty alone decides every step.
MAX_PENALTY = 1e6
# The largest count in thousands of images (a billion images): the EMA half-life, how long the mode-seeking term lasts.
MAX_KIMG = 1e6
# Samples an evaluation needs at least: density/coverage's 5 nearest neighbours and the sample itself.
MIN_EVAL_SAMPLES = 6


def field_names() -> list[str]:
    return [f.name for f in fields(Config)]


def key_help(name: str) -> str:
    """A key's flag help, from its field: the text, its allowed values, and its default, which for
    the keys every preset sets is the presets' values (read from PRESETS)."""
    spec = next(f for f in fields(Config) if f.name == name)
    text = spec.metadata["help"]
    if spec.metadata["choices"]:
        text += f"; one of {', '.join(map(str, spec.metadata['choices']))}"
    if all(name in preset for preset in PRESETS.values()):
        return f"{text} ({auto_values(name)})"
    return text if spec.default is None else f"{text} (default {shown_value(spec.default)})"


def unknown_key(key: str, where: str) -> GanforgeError:
    close = difflib.get_close_matches(key, field_names(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(field_names())}"
    return GanforgeError(f"unknown config key '{key}'{' ' + where if where else ''}{hint}")


def _coerce(key: str, value: object) -> object:
    """Converts a YAML or command-line value to the field's type, or raises a clear error."""
    kind = _TYPES[key]
    optional = type(None) in typing.get_args(kind)
    base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in CHOICES.get(key, ()):
        return word  # "none" is a choice of g_norm and d_norm, not auto
    if word == "" and optional:
        # Not auto: an empty value is more often a variable that was never set (steps=$STEPS).
        raise GanforgeError(f"{key}= is empty: expected a value, or {key}=auto for the default")
    if key in LISTS and word not in (None, "null", "auto"):
        return ",".join(parse_policy(word)) or "none"  # a comma list, "none" for the empty one
    if word in ("none", "null", "auto") and optional:
        return None
    if value is None:
        if optional:
            return None
        raise GanforgeError(f"{key}=None is invalid: expected {base.__name__}")
    if base is str and isinstance(value, bool) and key in CHOICES and "on" in CHOICES[key]:
        return "on" if value else "off"  # YAML reads a bare on/off as a boolean
    expected = {bool: "true or false", int: "an integer", float: "a number"}.get(base, "a string")
    try:
        if base is bool:
            words = {"true": True, "on": True, "yes": True, "1": True, "false": False, "off": False, "no": False, "0": False}
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in words:
                return words[value.strip().lower()]
            raise ValueError
        if isinstance(value, bool):
            raise ValueError
        if base is int:
            number = float(value) if isinstance(value, str) else value
            if not isinstance(number, (int, float)) or number != int(number):
                raise ValueError
            return int(number)
        if base is float:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if not isinstance(value, (str, int, float)):
            raise ValueError
        return str(value)
    except (ValueError, TypeError, OverflowError):
        raise GanforgeError(f"{key}={shown(value)} is invalid: expected {expected}") from None


def parse_overrides(pairs: list[str]) -> dict:
    """['lr_g=0.001', 'loss=hinge'] -> {'lr_g': 0.001, 'loss': 'hinge'} (types checked later)."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise GanforgeError(f"'{pair}' is not a key=value override: expected e.g. lr_g=0.0002")
        if key not in _TYPES:
            raise unknown_key(key, "on the command line")
        result[key] = value.strip()
    return result


def load_yaml(path: str | Path) -> dict:
    """Reads a flat YAML mapping of config keys."""
    path = Path(path)
    if not path.is_file():
        raise GanforgeError(f"config file '{path}' does not exist: expected a YAML file of key: value lines")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise GanforgeError(f"config file '{path}' is nested too deeply: expected a flat mapping of key: value lines") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = first_line(err, 10_000)
        raise GanforgeError(f"config file '{path}' is not valid YAML ({first})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise GanforgeError(f"config file '{path}' holds a {type(loaded).__name__}: expected a mapping of key: value lines")
    for key in loaded:
        if key not in _TYPES and key not in DERIVED:
            raise unknown_key(str(key), f"in {path}")
    return {k: v for k, v in loaded.items() if k not in DERIVED}


def make_config(*layers: dict) -> Config:
    """Builds a Config from dicts applied in order (later wins), coercing and validating each value."""
    config = Config()
    for layer in layers:
        for key, value in layer.items():
            if key not in _TYPES:
                raise unknown_key(str(key), "")
            setattr(config, key, _coerce(key, value))
    validate(config)
    return config


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise GanforgeError(f"{key}={shown(value)} is invalid: expected {expected}")


def shown(value: object, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters, so a message never echoes an unbounded input."""
    return cut(repr(value), limit)


def _require_range(key: str, value: int | None, low: int) -> None:
    """An integer key between `low` and MAXIMA[key]; the message names the range when too large."""
    _require(value is None or value >= low, key, value, f"an integer >= {low}")
    _require(value is None or value <= MAXIMA[key], key, value, f"an integer from {low} to {MAXIMA[key]:,}")


def validate(config: Config) -> None:
    """Checks every set value; None (auto) always passes."""
    for key, options in CHOICES.items():
        value = getattr(config, key)
        _require(value is None or value in options, key, value, "one of " + ", ".join(map(str, options)))
    positive = ("image_size", "latent_dim", "r1_every", "g_width", "d_width", "g_depth", "d_depth", "pack", "steps",
                "batch_size", "d_steps_per_g_step", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints",
                "threads", "groups")
    for key in positive:
        _require_range(key, getattr(config, key), 1)
    for key in ("g_extra_layers", "d_extra_layers", "max_nonfinite_steps", "eval_every"):
        _require_range(key, getattr(config, key), 0)
    for key in ("lr_g", "lr_d"):
        value = getattr(config, key)
        _require(value is None or 0 < value < 10, key, value, "a learning rate > 0")
    for key in ("beta1", "beta2"):
        value = getattr(config, key)
        _require(value is None or 0 <= value < 1, key, value, "a number in [0, 1)")
    _require(config.ema_decay is None or 0 <= config.ema_decay < 1, "ema_decay", config.ema_decay, "a number in [0, 1)")
    _require(0 <= config.seed < 2**31, "seed", config.seed, "an integer from 0 to 2**31 - 1")
    for key in ("gp_weight", "r1_gamma", "r2_gamma", "diversity"):
        value = getattr(config, key)
        _require(value is None or 0 <= value <= MAX_PENALTY, key, value, f"a number from 0 to {MAX_PENALTY:g}")
    ada = config.ada_target
    _require(ada is None or 0 <= ada < 1, "ada_target", ada, "a number from 0 (always augment) up to but not including 1")
    for key in ("ema_kimg", "diversity_kimg"):
        value = getattr(config, key)
        _require(value is None or 0 <= value <= MAX_KIMG, key, value, f"a number from 0 to {MAX_KIMG:g}")
    _require(config.ema_rampup is None or 0 < config.ema_rampup <= 1, "ema_rampup", config.ema_rampup, "a fraction in (0, 1]")
    if config.augment is not None:
        parse_policy(config.augment)
    _require(config.d_mbstd in (None, 0) or config.d_mbstd >= 2, "d_mbstd", config.d_mbstd, "0 (off) or a group size >= 2")
    _require_range("d_mbstd", config.d_mbstd, 0)
    _require(config.clusters in (None, 0) or config.clusters >= 2, "clusters", config.clusters, "0 (off) or a number of clusters >= 2")
    _require_range("clusters", config.clusters, 0)
    _require(config.lr_decay is None or 0 <= config.lr_decay <= 1, "lr_decay", config.lr_decay, "a fraction in [0, 1]")
    _require_range("eval_n", config.eval_n, MIN_EVAL_SAMPLES)
    _require(config.best_metric in (None, *BEST_METRICS), "best_metric", config.best_metric, "one of " + ", ".join(BEST_METRICS))
    if config.tensorboard and not tensorboard_events.installed():
        raise GanforgeError("tensorboard=true needs the tensorboard package: pip install tensorboard (or leave tensorboard=false)")
    device = config.device
    _require(device in ("auto", "cpu", "cuda", "mps") or device.startswith("cuda:"), "device", device, "auto, cpu, cuda, cuda:N or mps")
    _require(bool(config.data.strip()), "data", config.data, "a dataset name or path")
    if config.column_types:
        parse_column_types(config.column_types)
    if config.columns:
        names = [c.strip() for c in config.columns.split(",")]
        _require(all(names) and len(set(names)) == len(names), "columns", config.columns, "unique comma-separated column names")
    if config.batch_size is not None and config.pack is not None:
        _require(config.batch_size % config.pack == 0, "batch_size", config.batch_size, f"a multiple of pack={config.pack}")
        rows = config.batch_size // config.pack  # the discriminator's batch
        if config.d_mbstd:
            _require(mbstd_group(config.d_mbstd, rows) is not None, "d_mbstd", config.d_mbstd, f"a divisor of batch_size / pack = {rows}")


def preset_name(config: Config, kind: str, sample_shape: tuple[int, ...], size: int | None = None) -> str:
    """The preset for this data: its own for the built-in data and Stacked MNIST, else one per kind,
    and for images one for sets of fewer than SMALL_IMAGE_SET (`size`: how many the data holds)."""
    if kind == "table":
        return "table"
    spec = parse_spec(config.data)
    if spec.builtin or spec.source == "stackedmnist":
        return spec.name
    if kind == "images":
        return "small_images" if size is not None and size < SMALL_IMAGE_SET else "images"
    return "vectors"


def default_out(run_name: str) -> str:
    """The run folder when `out` is auto: runs/NAME, NAME from the data spec."""
    return str(Path("runs") / run_name)


def resolve(
    config: Config, kind: str, sample_shape: tuple[int, ...], run_name: str, classes: int | None = None, size: int | None = None
) -> Config:
    """Fills every auto (None) field from the preset for this data (`size`: how many examples it holds); returns a new Config.

    Only `image_size` and `channels` stay None, for vector data, where they do not apply,
    `eval_n`, which the evaluation picks from the size of the reference data, and `threads`,
    left to torch (one per core, or OMP_NUM_THREADS).
    """
    name = preset_name(config, kind, sample_shape, size)
    preset = PRESETS[name]
    values = dataclasses.asdict(config)
    for key, value in preset.items():
        if values[key] is None:
            values[key] = value
    if values["arch"] == "auto":
        values["arch"] = preset["arch"]
    if values["conditional"]:
        _check_conditional(config.data, values, classes)
    _check_clusters(config, values, size)
    _check_diversity(config, values, name)
    if kind == "images":
        values["channels"] = sample_shape[0]
        values["image_size"] = sample_shape[-1]
        if config.image_size is None and values["arch"] == "conv":
            _require_conv_size(config.data, sample_shape[-1])
    elif values["arch"] in ("conv", "resnet"):
        raise GanforgeError(f"arch='{values['arch']}' needs image data, but data='{config.data}' holds vectors: use arch=mlp")
    dim = math.prod(sample_shape)
    if values["latent_dim"] is None:
        # Lower than the data's dimension, as the generator maps a thin latent space onto the data.
        values["latent_dim"] = max(1, min(100, dim // 8 if kind == "images" else dim // 2))
    if values["out"] is None:
        values["out"] = default_out(run_name)
    if values["channels_last"] is None:
        values["channels_last"] = values["arch"] == "conv"
    if values["checkpoint_every"] > values["steps"]:
        values["checkpoint_every"] = values["steps"]
    resolved = Config(**values)
    validate(resolved)
    return resolved


def _require_conv_size(data: str, size: int) -> None:
    """The data's own image size, which the user never set, named as such when the conv networks cannot make it."""
    try:
        conv_layout(size)
    except GanforgeError:
        raise GanforgeError(
            f"data={shown(data)} holds {size}x{size}-pixel images, a size the conv networks cannot make: "
            "set image_size (e.g. 8, 16, 28, 32, 64) or use arch=mlp"
        ) from None


def _check_conditional(data: str, values: dict, classes: int | None) -> None:
    """conditional=true needs labels in the data (`classes`: how many; None when not known here) and conv/resnet networks."""
    if classes is not None and classes < 2:
        raise GanforgeError(
            f"conditional=true needs class labels, but data='{data}' has none: use class sub-folders, MNIST label files "
            "or the digits set, or conditional=false"
        )
    if values["arch"] not in ("conv", "resnet"):
        raise GanforgeError(f"conditional=true needs arch=conv or resnet, not arch={values['arch']}")
    if values["pack"] != 1:
        raise GanforgeError(f"conditional=true needs pack=1 (a packed row mixes classes), not pack={values['pack']}")


def _check_clusters(config: Config, values: dict, size: int | None) -> None:
    """Self-conditioning needs an unconditional run of conv or resnet networks without packing, and no more
    clusters than images. The preset's value yields to a run that cannot take it; a value the user set is refused."""
    if not values["clusters"]:
        return
    problem = None
    if values["conditional"]:
        problem = "a conditional run is conditioned on its labels: set conditional=false"
    elif values["arch"] not in ("conv", "resnet"):
        problem = f"self-conditioning needs arch=conv or resnet, not arch={values['arch']}"
    elif values["pack"] != 1:
        problem = f"self-conditioning needs pack=1 (a packed row mixes clusters), not pack={values['pack']}"
    if problem is None:
        if size is not None and values["clusters"] > size:
            raise GanforgeError(f"clusters={values['clusters']} is more than the {size} examples of data={shown(config.data)}: expected at most {size}")
    elif config.clusters is None:
        values["clusters"] = 0
    else:
        raise GanforgeError(f"clusters={config.clusters} cannot be used here: {problem}, or clusters=0")


def _check_diversity(config: Config, values: dict, preset: str) -> None:
    """A preset's mode-seeking term was tuned with its self-conditioning clusters, and for a conditional run
    with its classes (presets.CONDITIONAL); a run with neither (clusters=0, another arch) goes without.
    A key the user set stays."""
    if values["conditional"]:
        for key, value in CONDITIONAL.get(preset, {"diversity": 0.0}).items():
            if getattr(config, key) is None:
                values[key] = value
    elif config.diversity is None and not values["clusters"]:
        values["diversity"] = 0.0


def diff(saved: dict, current: Config) -> list[str]:
    """Keys (outside RESUMABLE_CHANGES) whose values differ between a saved and a current config."""
    now = dataclasses.asdict(current)
    saved = {**ADDED_KEYS, **saved}
    return [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
