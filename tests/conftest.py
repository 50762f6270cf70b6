"""Fixtures for the ganforge test suite.

Everything runs on the CPU with tiny networks: a few channels, 8 px images, a handful of
steps. Torch is limited to one thread: on a 2-core machine small ops are much faster
single-threaded (subprocesses get the same through OMP_NUM_THREADS, see helpers.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ganforge.cli import main
from helpers import CliResult, digits_args, ring8_args

torch.set_num_threads(1)


@pytest.fixture
def cli(capsys):
    """Runs `ganforge.cli.main(args)` in-process; returns its exit code, stdout and stderr."""

    def run(*args) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def ring8_run(tmp_path_factory) -> Path:
    """A finished 20-step ring8 run (MLP). Read-only: `copy_run` it before changing it."""
    out = tmp_path_factory.mktemp("session") / "ring8"
    assert main(ring8_args(out)) == 0
    return out


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """A finished 10-step digits run (conv with BatchNorm). Read-only: `copy_run` it before changing it."""
    out = tmp_path_factory.mktemp("session") / "digits"
    assert main(digits_args(out)) == 0
    return out


@pytest.fixture
def copy_run(tmp_path):
    """Copies a session run into this test's tmp_path, so the test may change it."""

    def copy(run: Path, name: str = "run") -> Path:
        target = tmp_path / name
        shutil.copytree(run, target)
        return target

    return copy
