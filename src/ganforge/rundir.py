"""The run folder: what is in it, whether it can be resumed, and starting over without loss."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

from ganforge.checkpoint import atomic_write, latest_checkpoint, list_checkpoints
from ganforge.config import Config, diff
from ganforge.errors import GanforgeError

CONFIG, METRICS = "config.json", "metrics.jsonl"
# Temporary files of checkpoint.atomic_write for the files a run writes.
LEFTOVER = re.compile(r"^\.(config\.json|metrics\.jsonl|generator\.(safetensors|json)|checkpoint-\d{8}\.pt|best\.pt|[\w.-]+\.png)(\.\w+)?\.tmp$")


def archive(run_dir: Path) -> Path:
    """Moves an existing run folder aside to the first free `<name>.old-N` and returns that path."""
    n = 1
    while (target := run_dir.with_name(f"{run_dir.name}.old-{n}")).exists():
        n += 1
    shutil.move(str(run_dir), str(target))
    return target


def prepare(run_dir: Path, config: Config, new: bool, say, extra: dict | None = None) -> dict | None:
    """Makes `run_dir` ready for `config` and returns the checkpoint to resume from, if any.

    An existing run of the same config resumes; a run of a different config, or a folder
    that is not a run, is refused with an error and left untouched; with `new`, an existing
    folder is moved aside (never deleted) and the run starts over. `extra` adds derived,
    informational values to config.json (e.g. the world size and per-process batch).
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise GanforgeError(f"out='{run_dir}' is a file: expected a run folder")
    for leftover in [*run_dir.glob(".*.tmp"), *run_dir.glob("*/.*.tmp")]:
        if LEFTOVER.match(leftover.name):
            leftover.unlink()  # a write of ours cut short by a crash; the file it was replacing is intact
    occupied = run_dir.is_dir() and any(run_dir.iterdir())
    if occupied and new:
        say(f"--new: moved the previous run to {archive(run_dir)}")
        occupied = False
    state = None
    if occupied:
        config_path = run_dir / CONFIG
        if not config_path.is_file():
            raise GanforgeError(f"out='{run_dir}' holds files but no {CONFIG}: it is not a ganforge run folder; choose another --out")
        try:
            saved = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise GanforgeError(f"{config_path} is corrupt ({err}); use --new to start over (the old run is kept)") from None
        changed = diff(saved, config)
        if changed:
            raise GanforgeError(
                f"out='{run_dir}' holds a run with a different config ({'; '.join(changed[:3])}): "
                "use --new to start over (the old run is kept) or choose another --out"
            )
        state, warnings = latest_checkpoint(run_dir)
        if state is None and list_checkpoints(run_dir):
            raise GanforgeError(f"every checkpoint in {run_dir / 'checkpoints'} is corrupt; use --new to start over (the old run is kept)")
        for warning in warnings:
            say(f"warning: {warning}")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, {**dataclasses.asdict(config), **(extra or {})})
    keep_metrics_until(run_dir / METRICS, state["step"] if state else 0)
    return state


def write_json(path: Path, value: dict) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(value, indent=2) + "\n").encode()))


def keep_metrics_until(path: Path, step: int) -> None:
    """Drops metrics.jsonl lines logged after `step`: a resumed run logs them again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a crash
    atomic_write(path, lambda f: f.write("".join(kept).encode()))
