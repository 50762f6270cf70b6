"""Plain helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch

PYTHON = sys.executable

# Flags for a tiny, fast training run; combine with --data, --steps and --out.
TINY_MLP = [
    "--batch_size", "16", "--g_width", "8", "--d_width", "8", "--g_depth", "1", "--d_depth", "1",
    "--device", "cpu", "--quiet",
]
TINY_CONV = ["--batch_size", "16", "--g_width", "4", "--d_width", "4", "--device", "cpu", "--quiet"]


def ring8_args(out: Path, steps: int = 20, *extra: str) -> list[str]:
    """`ganforge train` arguments for a tiny MLP run on ring8: logs every 5 steps, checkpoints every 10."""
    return [
        "train", "--data", "ring8", "--steps", str(steps), "--out", str(out),
        "--log_every", "5", "--sample_every", "10", "--checkpoint_every", "10", *TINY_MLP, *extra,
    ]


def digits_args(out: Path, steps: int = 10, *extra: str) -> list[str]:
    """`ganforge train` arguments for a tiny conv (BatchNorm) run on digits: logs/checkpoints every 5 steps."""
    return [
        "train", "--data", "digits", "--steps", str(steps), "--out", str(out),
        "--log_every", "5", "--sample_every", "5", "--checkpoint_every", "5", *TINY_CONV, *extra,
    ]


def load_benchmark(name: str, monkeypatch) -> types.ModuleType:
    """benchmarks/NAME.py as a module, with its folder first on sys.path as `python benchmarks/NAME.py` has it."""
    folder = Path(__file__).parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def reap(process) -> None:
    """Kills a child process a test started, if it is still running, and waits for it."""
    if process.poll() is None:
        process.kill()
        process.wait()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def tree(path: Path) -> dict[str, str]:
    """Every file under `path` (relative name -> sha256 of its bytes): a folder's exact content."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def assert_clean_error(result: CliResult, *fragments: str) -> str:
    """Exit code 2 and exactly one line on stderr, without a traceback, containing each fragment."""
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("ganforge: error: "), result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def write_sealed(path: Path, obj: object) -> None:
    """Writes `obj` with torch.save inside a valid checksum header: a checkpoint file whose content is `obj`."""
    import io

    import torch

    from ganforge.checkpoint import seal

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.write_bytes(seal(buffer.getvalue()))


class LabelSpy(torch.nn.Module):
    """Wraps a generator and records the labels each call receives (in `seen`)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.seen = network, []

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(labels)
        return self.network(z, labels)
