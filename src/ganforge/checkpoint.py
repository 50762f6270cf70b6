"""Full-state checkpoints, written atomically and loaded without executing code."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from pathlib import Path

import torch

from ganforge.errors import GanforgeError, first_line

FORMAT_VERSION = 2
# A checkpoint file is MAGIC, the SHA-256 of the payload in hex, a newline, then the payload
# (torch.save's bytes): any changed byte is caught before the payload is unpickled.
MAGIC = b"GANFORGE-CHECKPOINT\n"
_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")


def _file_mode() -> int:
    """The mode a plain open() would give a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write) -> None:
    """Calls write(file) on a temporary file beside `path`, fsyncs it, then renames it over `path`.

    A crash at any moment leaves either the old file or the complete new one, never a
    partial file under `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _file_mode())  # mkstemp makes 0600 files; run files follow the umask
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"checkpoint-{step:08d}.pt"


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint file's name gives (the inverse of `checkpoint_path`)."""
    match = _NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a checkpoint file name: expected checkpoint-STEP.pt, STEP in 8 digits")
    return int(match.group(1))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def save_checkpoint(run_dir: Path, state: dict, keep: int) -> Path:
    """Writes `state` as the checkpoint of step state['step'] and prunes all but the newest `keep`."""
    path = checkpoint_path(run_dir, state["step"])
    write_checkpoint(path, state)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def write_checkpoint(path: Path, state: dict) -> None:
    """Writes `state` to `path` in the checkpoint format, atomically (e.g. checkpoints/best.pt)."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buffer)
    sealed = seal(buffer.getvalue())  # serialised first: a full disk shows as OSError from the write
    atomic_write(path, lambda f: f.write(sealed))


def seal(payload: bytes) -> bytes:
    """A checkpoint file's bytes: MAGIC, the payload's SHA-256 in hex, a newline, the payload."""
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Loads and validates a checkpoint: checksum first, then torch.load(weights_only=True), so no pickled code can run."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise GanforgeError(f"checkpoint {path} cannot be read ({err.strerror})") from None
    header = len(MAGIC) + 65
    if not raw.startswith(MAGIC) or len(raw) < header or raw[header - 1 : header] != b"\n":
        raise GanforgeError(f"checkpoint {path} is not a ganforge checkpoint of format {FORMAT_VERSION} (truncated, corrupt or foreign)")
    payload = raw[header:]
    if hashlib.sha256(payload).hexdigest().encode() != raw[len(MAGIC) : header - 1]:
        raise GanforgeError(f"checkpoint {path} is corrupt or truncated: its checksum does not match")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt, truncated or unsafe files
        first = first_line(err, 10_000)
        raise GanforgeError(f"checkpoint {path} is corrupt, truncated or unsafe to load ({first[:200]})") from None
    required = {"format_version", "step", "config", "generator", "discriminator", "g_optimizer", "d_optimizer"}
    if not isinstance(state, dict) or not required <= state.keys():
        raise GanforgeError(f"checkpoint {path} is not a ganforge checkpoint: expected keys {', '.join(sorted(required))}")
    if state["format_version"] != FORMAT_VERSION:
        raise GanforgeError(f"checkpoint {path} has format version {state['format_version']}: expected {FORMAT_VERSION}")
    return state


def latest_checkpoint(run_dir: Path, map_location: str | torch.device = "cpu") -> tuple[dict | None, list[str]]:
    """The newest loadable checkpoint of a run (or None) and a warning for each bad newer one."""
    warnings = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(path, map_location), warnings
        except GanforgeError as err:
            warnings.append(f"{err}; using an older checkpoint")
    return None, warnings


def checkpoint_mismatch(state: dict, name_step: int, trainer=None) -> str | None:
    """Why a loaded checkpoint cannot resume this run, or None.

    Checks that its step is the one its file name says and, given a `trainer` (anything
    with generator, discriminator, ema, g_optimizer, d_optimizer and dataset as the Trainer has),
    that every saved tensor has the key and shape the networks and optimizers expect, and that a
    table is encoded as it was.
    """
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"holds step {str(step)[:40]}: expected a step count"
    if step != name_step:
        return f"holds step {step} but its name says step {name_step}"
    if not isinstance(state["config"], dict):
        return "holds no config object"
    sampler = state.get("sampler")
    # The batch sampler's position: epoch and position for a dataset's sampler, batches drawn for a table's.
    streams = isinstance(sampler, dict) and isinstance(sampler.get("seed"), int) and all(isinstance(v, int) for v in sampler.values())
    if not (streams and isinstance(state.get("seconds"), (int, float)) and isinstance(state.get("skipped_steps"), int)
            and isinstance(state.get("torch_rng"), torch.Tensor) and isinstance(state.get("noise"), dict)):
        return "holds no complete training state (seconds, skipped steps, random streams)"
    if trainer is None:
        return None
    if sampler.keys() != trainer.sampler.state_dict().keys():
        return f"holds a batch sampler of another kind of data ({', '.join(sorted(sampler))[:80]})"
    networks = {"generator": trainer.generator, "discriminator": trainer.discriminator}
    if trainer.ema is not None:
        networks["ema"] = trainer.ema.average
    for key, network in networks.items():
        problem = _tensors_mismatch(state.get(key), network.state_dict())
        if problem:
            return f"does not fit this run's {key} ({problem})"
    for key in ("g_optimizer", "d_optimizer"):
        problem = _optimizer_mismatch(state[key], getattr(trainer, key))
        if problem:
            return f"does not fit this run's {key} ({problem})"
    transform = trainer.dataset.transform if trainer.dataset.kind == "table" else None
    if transform is not None and state.get("transform") is not None and _encoding(state["transform"]) != _encoding(transform):
        return "encodes the table's columns otherwise than they are encoded now (the data file, or how a column is encoded, changed)"
    if trainer.config.clusters:
        clusters = state.get("clusters")
        if not (isinstance(clusters, torch.Tensor) and clusters.shape == trainer.labels.shape and not clusters.is_floating_point()
                and len(clusters) and 0 <= int(clusters.min()) and int(clusters.max()) < trainer.config.clusters):
            return f"holds no cluster of each of the {len(trainer.labels)} training images in 0..{trainer.config.clusters - 1}"
    return None


def _encoding(transform: dict) -> dict:
    """A table transform without its timing: what decides the rows the networks see."""
    return {k: v for k, v in transform.items() if k != "fit_seconds"}


def _tensors_mismatch(saved: object, expected: dict) -> str | None:
    if not isinstance(saved, dict):
        return "no state dict"
    if saved.keys() != expected.keys():
        different = sorted(map(str, saved.keys() ^ expected.keys()))
        return f"keys differ: {', '.join(different[:3])[:200]}"
    for name, tensor in expected.items():
        value = saved[name]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            return f"{name} is {shape}: expected {tuple(tensor.shape)}"
    return None


def _optimizer_mismatch(saved: object, optimizer: torch.optim.Optimizer) -> str | None:
    """Same parameter groups and counts, and each moment tensor shaped as its parameter."""
    try:
        groups = saved["param_groups"]
        ids = [i for group in groups for i in group["params"]]
        moments = saved["state"]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if len(groups) != len(optimizer.param_groups) or len(ids) != len(params):
            return f"{len(ids)} parameters: expected {len(params)}"
        for index, param in zip(ids, params):
            for name, value in moments.get(index, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    return f"{name} of parameter {index} is {tuple(value.shape)}: expected {tuple(param.shape)}"
    except (KeyError, TypeError, AttributeError):
        return "not an optimizer state"
    return None
