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
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from ganforge.data.table import parse_column_types
from ganforge.errors import GanforgeError
from ganforge.nets import mbstd_group
from ganforge.presets import PRESETS


@dataclass
class Config:
    # Data
    data: str = "digits"  # ring8 | grid25 | digits | mnist:FOLDER | image folder | .npy/.csv file
    image_size: int | None = None  # images: side in pixels (auto: the data's own)
    channels: int | None = None  # images: 1 or 3 (auto: 1 if every image is grey)
    on_bad_image: str = "error"  # error | skip: what an unreadable image file does
    table: bool | None = None  # read a delimited file as a table of typed columns (auto: when a column holds text)
    columns: str | None = None  # tables: comma-separated column names (a file without a header line)
    header: bool | None = None  # tables: whether the first line names the columns (auto: unless `columns` is set)
    column_types: str | None = None  # tables: NAME:TYPE,... overriding the inferred types
    target: str | None = None  # tables: the column the ML-efficacy classifiers predict
    test_data: str | None = None  # tables: held-out real rows (same columns) for ML efficacy and the privacy check
    # Networks
    arch: str = "auto"  # mlp | conv (auto: conv for images, mlp for vectors)
    latent_dim: int | None = None
    noise: str = "normal"  # normal | uniform on [-1, 1]
    g_width: int | None = None
    d_width: int | None = None
    g_depth: int | None = None  # mlp: hidden layers
    d_depth: int | None = None
    g_extra_layers: int | None = None  # conv: 3x3 layers at full resolution
    d_extra_layers: int | None = None
    g_norm: str | None = None  # batch | none
    d_norm: str | None = None  # batch | none | spectral
    d_mbstd: int | None = None  # minibatch standard deviation in D: group size (0: off)
    pack: int | None = None  # PacGAN: samples the discriminator judges jointly (auto: 2 for Stacked MNIST, else 1)
    # Objective and optimisation
    loss: str = "nonsaturating"  # minimax | nonsaturating | wasserstein | hinge | least_squares
    gp_weight: float = 0.0  # WGAN-GP gradient penalty weight
    r1_gamma: float | None = None  # R1 penalty on real data, weighted gamma / 2 (auto: on for the 2D mixtures)
    r1_every: int | None = None  # lazy R1: the penalty on every Nth discriminator step, weighted N times
    steps: int | None = None  # generator steps
    batch_size: int | None = None
    d_steps_per_g_step: int = 1
    lr_g: float | None = None
    lr_d: float | None = None
    lr_decay: float | None = None  # final fraction of the steps over which lr_g and lr_d fall linearly to 0
    beta1: float | None = None  # Adam
    beta2: float | None = None
    ema_decay: float | None = None  # exponential moving average of G's weights (0: off)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    sync_batchnorm: bool = False  # several GPUs: BatchNorm statistics over the global batch
    # Speed: how the same computation runs (resolved once by the Trainer)
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast for the networks; losses and penalties stay fp32
    compile: str = "off"  # off | on | graphs: torch.compile each network (graphs: also CUDA graphs); eager where it fails
    channels_last: bool | None = None  # conv nets: NHWC memory layout (auto: on for conv nets)
    threads: int | None = None  # torch's CPU threads for the run (auto: torch's choice, one per core or OMP_NUM_THREADS)
    # Divergence guard
    max_nonfinite_steps: int = 20  # consecutive NaN/Inf steps (skipped) before `on_divergence`; 0: no guard
    on_divergence: str = "stop"  # stop | rollback (to the last checkpoint, with fresh noise and batches)
    # Run folder
    out: str | None = None  # auto: runs/<dataset name>
    log_every: int | None = None  # steps between metrics.jsonl lines
    sample_every: int | None = None  # steps between sample images
    checkpoint_every: int | None = None  # steps between checkpoints
    keep_checkpoints: int = 2
    # Evaluation during training (the metrics of `ganforge eval`)
    eval_every: int = 0  # steps between evaluations, logged to metrics.jsonl (0: off)
    eval_n: int | None = None  # generated samples per evaluation (auto: as `ganforge eval`)
    best_metric: str | None = None  # keeps checkpoints/best.pt by this metric (auto: reverse_kl for 2D mixtures, kl for Stacked MNIST, else fd)


CHOICES = {
    "on_bad_image": ("error", "skip"),
    "arch": ("auto", "mlp", "conv"),
    "noise": ("normal", "uniform"),
    "g_norm": ("batch", "none"),
    "d_norm": ("batch", "none", "spectral"),
    "loss": ("minimax", "nonsaturating", "wasserstein", "hinge", "least_squares"),
    "channels": (1, 3),
    "on_divergence": ("stop", "rollback"),
    "precision": ("fp32", "bf16", "fp16"),
    "compile": ("off", "on", "graphs"),
}
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
    "threads",
}

# Values config.json records beside the config, derived at run time: a config file may
# hold them (a saved config.json is a valid config file); they are recomputed, not read.
DERIVED = ("world_size", "batch_per_process")

# Keys added after run folders were saved, with the value that computes what those runs did:
# a saved config.json without one reads as that value, so an older run still resumes.
ADDED_KEYS = {"d_mbstd": 0, "table": None, "columns": None, "header": None, "column_types": None, "target": None, "test_data": None}

_TYPES = typing.get_type_hints(Config)


def field_names() -> list[str]:
    return [f.name for f in fields(Config)]


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
    if word in ("none", "null", "auto", "") and optional:
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
        raise GanforgeError(f"{key}={value!r} is invalid: expected {expected}") from None


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
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
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
        raise GanforgeError(f"{key}={value!r} is invalid: expected {expected}")


def validate(config: Config) -> None:
    """Checks every set value; None (auto) always passes."""
    for key, options in CHOICES.items():
        value = getattr(config, key)
        _require(value is None or value in options, key, value, "one of " + ", ".join(map(str, options)))
    positive = ("image_size", "latent_dim", "r1_every", "g_width", "d_width", "g_depth", "d_depth", "pack", "steps",
                "batch_size", "d_steps_per_g_step", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints",
                "threads")
    for key in positive:
        value = getattr(config, key)
        _require(value is None or value >= 1, key, value, "an integer >= 1")
    for key in ("g_extra_layers", "d_extra_layers", "max_nonfinite_steps", "eval_every"):
        value = getattr(config, key)
        _require(value is None or value >= 0, key, value, "an integer >= 0")
    for key in ("lr_g", "lr_d"):
        value = getattr(config, key)
        _require(value is None or 0 < value < 10, key, value, "a learning rate > 0")
    for key in ("beta1", "beta2"):
        value = getattr(config, key)
        _require(value is None or 0 <= value < 1, key, value, "a number in [0, 1)")
    _require(config.ema_decay is None or 0 <= config.ema_decay < 1, "ema_decay", config.ema_decay, "a number in [0, 1)")
    _require(0 <= config.seed < 2**31, "seed", config.seed, "an integer from 0 to 2**31 - 1")
    _require(config.gp_weight >= 0, "gp_weight", config.gp_weight, "a number >= 0")
    _require(config.r1_gamma is None or config.r1_gamma >= 0, "r1_gamma", config.r1_gamma, "a number >= 0")
    _require(config.d_mbstd in (None, 0) or config.d_mbstd >= 2, "d_mbstd", config.d_mbstd, "0 (off) or a group size >= 2")
    _require(config.lr_decay is None or 0 <= config.lr_decay <= 1, "lr_decay", config.lr_decay, "a fraction in [0, 1]")
    _require(config.eval_n is None or config.eval_n >= 2, "eval_n", config.eval_n, "an integer >= 2")
    _require(config.best_metric in (None, *BEST_METRICS), "best_metric", config.best_metric, "one of " + ", ".join(BEST_METRICS))
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


def preset_name(config: Config, kind: str, sample_shape: tuple[int, ...]) -> str:
    if kind == "table":
        return "table"
    if config.data in ("ring8", "grid25"):
        return config.data
    if config.data == "digits":
        return "digits"
    if config.data.startswith("stackedmnist:"):
        return "stackedmnist"
    return "images" if kind == "images" else "vectors"


def resolve(config: Config, kind: str, sample_shape: tuple[int, ...], run_name: str) -> Config:
    """Fills every auto (None) field from the preset for this data; returns a new Config.

    Only `image_size` and `channels` stay None, for vector data, where they do not apply,
    `eval_n`, which the evaluation picks from the size of the reference data, and `threads`,
    left to torch (one per core, or OMP_NUM_THREADS).
    """
    preset = PRESETS[preset_name(config, kind, sample_shape)]
    values = dataclasses.asdict(config)
    for key, value in preset.items():
        if values[key] is None:
            values[key] = value
    if values["arch"] == "auto":
        values["arch"] = preset["arch"]
    if kind == "images":
        values["channels"] = sample_shape[0]
        values["image_size"] = sample_shape[-1]
    elif values["arch"] == "conv":
        raise GanforgeError(f"arch='conv' needs image data, but data='{config.data}' holds vectors: use arch=mlp")
    dim = math.prod(sample_shape)
    if values["latent_dim"] is None:
        # Lower than the data's dimension, as the generator maps a thin latent space onto the data.
        values["latent_dim"] = max(1, min(100, dim // 8 if kind == "images" else dim // 2))
    if values["out"] is None:
        values["out"] = str(Path("runs") / run_name)
    if values["channels_last"] is None:
        values["channels_last"] = values["arch"] == "conv"
    if values["checkpoint_every"] > values["steps"]:
        values["checkpoint_every"] = values["steps"]
    resolved = Config(**values)
    validate(resolved)
    return resolved


def diff(saved: dict, current: Config) -> list[str]:
    """Keys (outside RESUMABLE_CHANGES) whose values differ between a saved and a current config."""
    now = dataclasses.asdict(current)
    saved = {**ADDED_KEYS, **saved}
    return [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
