"""The run folder: what is in it, whether it can be resumed, and starting over without loss.

A resume is checked whole before anything is written: the saved config, the checkpoint
(its seal, its own config and step, that its state fits the networks) and the metrics file.
Only a run that can go on rewrites config.json and cuts metrics.jsonl back to its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

from ganforge.checkpoint import atomic_write, checkpoint_mismatch, checkpoint_step, list_checkpoints, load_checkpoint
from ganforge.config import ADDED_KEYS, RESUMABLE_CHANGES, Config, default_out, diff, validate
from ganforge.errors import GanforgeError
from ganforge.export import exported_step

CONFIG, METRICS = "config.json", "metrics.jsonl"
# Temporary files of checkpoint.atomic_write for the files a run writes.
LEFTOVER = re.compile(r"^\.(config\.json|metrics\.jsonl|generator\.(safetensors|json)|checkpoint-\d{8}\.pt|best\.pt|[\w.-]+\.png)(\.\w+)?\.tmp$")
START_OVER = "use --new to start over (the old run is kept)"


def archive(run_dir: Path) -> Path:
    """Moves an existing run folder aside to the first free `<name>.old-N` and returns that path."""
    n = 1
    while (target := run_dir.with_name(f"{run_dir.name}.old-{n}")).exists():
        n += 1
    shutil.move(str(run_dir), str(target))
    return target


def prepare(run_dir: Path, config: Config, new: bool, say, extra: dict | None = None, trainer=None) -> dict | None:
    """Makes `run_dir` ready for `config` and returns the checkpoint to resume from, if any.

    An existing run of the same config resumes; a run of a different config, a folder that
    is not a run, or a run that cannot be resumed is refused with an error and left
    byte-identical; with `new`, an existing folder is moved aside (never deleted) and the
    run starts over. `trainer` (its networks and optimizers) is what the checkpoint's state
    must fit. A run already trained to `config.steps` is returned as it is, unchanged.
    `extra` adds derived, informational values to config.json (e.g. the world size).
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise GanforgeError(f"out='{run_dir}' is a file: expected a run folder")
    occupied = run_dir.is_dir() and any(not LEFTOVER.match(p.name) for p in run_dir.iterdir())
    if occupied and new:
        say(f"--new: moved the previous run to {archive(run_dir)}")
        occupied = False
    state, kept, warnings = None, [], []
    if occupied:
        saved = saved_config(run_dir, config)
        state, warnings = resume_point(run_dir, config, trainer)
        step = state["step"] if state else 0
        kept = metrics_until(run_dir / METRICS, step)
        if state is None:
            _refuse_restart_over_results(run_dir, saved)
    for warning in warnings:  # once the run is known to go on: a refusal stays one line
        say(f"warning: {warning}")
    _remove_leftovers(run_dir)
    if state is not None and state["step"] >= config.steps:
        return state  # nothing to train: the run's own files stay as they are
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, {**dataclasses.asdict(config), **(extra or {})})
    if (run_dir / METRICS).is_file():
        atomic_write(run_dir / METRICS, lambda f: f.write("".join(kept).encode()))
    return state


def keep_run_settings(config: Config, run_name: str, new: bool) -> Config:
    """`config` with each auto key the run in its folder was started with set to that run's value.

    A run keeps its settings: resumed by a later ganforge whose presets changed, it goes on as it
    began instead of being refused as a different config. Keys that only steer a run
    (RESUMABLE_CHANGES) stay auto. With `new`, without a readable config.json of a run, or with
    saved values that are not valid, `config` comes back as it is (`saved_config` then judges it).
    """
    if new:
        return config
    path = Path(config.out or default_out(run_name)) / CONFIG
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return config
    if not isinstance(saved, dict):
        return config
    saved = {**ADDED_KEYS, **saved}
    kept = {
        f.name: saved[f.name] for f in dataclasses.fields(Config)
        if getattr(config, f.name) is None and f.name not in RESUMABLE_CHANGES and saved.get(f.name) is not None
    }
    try:
        settled = dataclasses.replace(config, **kept)
        validate(settled)
    except (GanforgeError, TypeError, ValueError):
        return config
    return settled


def saved_config(run_dir: Path, config: Config) -> dict:
    """The config.json of the run in `run_dir`, checked to be a config object equal to `config` where it matters."""
    path = run_dir / CONFIG
    if not path.is_file():
        raise GanforgeError(f"out='{run_dir}' holds files but no {CONFIG}: it is not a ganforge run folder; choose another --out")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise GanforgeError(f"{path} is corrupt ({str(err)[:200]}); {START_OVER}") from None
    if not isinstance(saved, dict):
        raise GanforgeError(f"{path} holds {json.dumps(saved)[:40]}: expected a JSON object (the config of a ganforge run); {START_OVER}")
    changed = diff(saved, config)
    if changed:
        raise GanforgeError(
            f"out='{run_dir}' holds a run with a different config ({'; '.join(changed[:3])[:300]}): "
            f"{START_OVER} or choose another --out"
        )
    return saved


def resume_point(run_dir: Path, config: Config, trainer=None) -> tuple[dict | None, list[str]]:
    """The newest checkpoint that loads, checked to be of this run (config, step, shapes), or None
    if there is none; and a warning for each damaged newer one, which is skipped.

    A checkpoint that loads but belongs to another run (or lies about its step) is refused,
    as resuming an older one would hide it.
    """
    warnings = []
    folder = run_dir / "checkpoints"
    if folder.exists() and not folder.is_dir():
        raise GanforgeError(f"{folder} is not a folder: expected the run's checkpoints; {START_OVER}")
    paths = list_checkpoints(run_dir)
    for path in reversed(paths):
        try:
            state = load_checkpoint(path)
        except GanforgeError as err:
            warnings.append(f"{err}; using an older checkpoint")
            continue
        problem = checkpoint_mismatch(state, checkpoint_step(path), trainer)
        if problem is None:
            changed = diff(state["config"], config)
            problem = f"is of a run with a different config ({'; '.join(changed[:3])[:300]})" if changed else None
        if problem:
            raise GanforgeError(f"checkpoint {path} {problem}: move it out of the run folder, or {START_OVER}")
        return state, warnings
    if paths:
        raise GanforgeError(f"every checkpoint in {folder} is corrupt; {START_OVER}")
    return None, warnings


def _refuse_restart_over_results(run_dir: Path, saved: dict) -> None:
    """A run without a checkpoint restarts in place only if it lost no more than its first checkpoint would hold.

    That is a run stopped before its first checkpoint was complete (the export is written
    just before it); anything further means checkpoints were removed.
    """
    first = saved.get("checkpoint_every")
    export_step = exported_step(run_dir)
    steps = [json.loads(line)["step"] for line in metrics_until(run_dir / METRICS, float("inf"))]
    furthest = max([*steps, export_step or 0])
    if isinstance(first, int) and export_step is not None and furthest <= first:
        return
    raise GanforgeError(
        f"out='{run_dir}' holds results up to step {furthest} but no checkpoint in {run_dir / 'checkpoints'} to resume from: "
        f"{START_OVER}"
    )


def _remove_leftovers(run_dir: Path) -> None:
    """Removes temporary files of writes cut short by a crash (the files they were replacing are intact).

    Called with the run folder's lock held, so no other process owns them.
    """
    for leftover in [*run_dir.glob(".*.tmp"), *run_dir.glob("*/.*.tmp")]:
        if LEFTOVER.match(leftover.name):
            leftover.unlink()


def write_json(path: Path, value: dict) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(value, indent=2) + "\n").encode()))


def metrics_until(path: Path, step: float) -> list[str]:
    """The lines of metrics.jsonl logged up to `step` (a resumed run logs the later ones again), newline-terminated.

    A last line that does not parse was cut short by a crash and is dropped; any other line
    that is not a JSON record with a step, or bytes that are not UTF-8, refuse the run.
    """
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    kept = []
    for number, raw in enumerate(lines, 1):
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            if number == len(lines):
                break  # a line cut short by a crash
            raise GanforgeError(f"{path}: line {number} is not a JSON record with a step: repair or remove that line, or {START_OVER}") from None
        if record["step"] <= step:
            kept.append(raw.decode("utf-8") + "\n")
    return kept


def keep_metrics_until(path: Path, step: int) -> None:
    """Drops metrics.jsonl lines logged after `step` (after a rollback)."""
    if path.is_file():
        kept = metrics_until(path, step)
        atomic_write(path, lambda f: f.write("".join(kept).encode()))
