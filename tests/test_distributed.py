"""Data-parallel training under torchrun on the CPU (Gloo): agreement, equivalence, resume, failure."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dist_worker import run as run_single_process
from ganforge import distributed
from ganforge.checkpoint import load_checkpoint
from ganforge.config import make_config, resolve
from ganforge.data import load_dataset
from ganforge.errors import GanforgeError
from ganforge.training.duties import STOP_CHECK_EVERY
from ganforge.training.state import Trainer
from helpers import PYTHON, subprocess_env

HERE = Path(__file__).parent
TINY_RING = ["batch_size=32", "g_width=16", "d_width=16", "g_depth=2", "d_depth=2"]
TORCHRUN = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


# On this torch (2.13, gloo, CPU) a worker used to abort now and then in the C++ runtime with this
# line while the interpreter tore itself down; ganforge's workers now leave without that teardown
# (cli.main). Should it still happen, the job is run once more, as a user would rerun it (a ganforge
# run resumes from its last checkpoint), and the rerun is reported as a warning. Any other failure
# fails the test.
RUNTIME_ABORT = "terminate called without an active exception"


def job(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs a multi-process command; once more, with a warning, if a worker hit RUNTIME_ABORT."""
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0 and RUNTIME_ABORT in result.stderr:
        warnings.warn(f"a worker aborted ({RUNTIME_ABORT!r}); running the job once more", stacklevel=2)
        result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    return result


def torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return job([*TORCHRUN, *args], timeout=timeout)


def test_two_processes_agree_every_step_and_match_one_process(tmp_path):
    """Ranks hold bit-identical parameters after every step, and 2 x 16 samples == 1 x 32 samples."""
    out = tmp_path / "two.pt"
    result = torchrun(str(HERE / "dist_worker.py"), str(out), "8", "ring8", *TINY_RING)
    assert result.returncode == 0, result.stderr[-3000:]
    two = torch.load(out)
    assert two["agreed"] == [True] * 8
    one = run_single_process(8, "ring8", TINY_RING)
    assert not torch.equal(one["params"], run_single_process(0, "ring8", TINY_RING)["params"]), "training moved the weights"
    torch.testing.assert_close(two["params"], one["params"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("extra", [[], ["clusters=4"]], ids=["plain", "self-conditioned"])
def test_batchnorm_conv_nets_agree_across_processes(tmp_path, extra):
    """With BatchNorm (per-process statistics) the parameters still stay identical on every rank, as do
    the clusters of a self-conditioned run (found by the main process)."""
    out = tmp_path / "bn.pt"
    result = torchrun(str(HERE / "dist_worker.py"), str(out), "4", "digits", "batch_size=16", "g_width=4", "d_width=4", "r1_gamma=1", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(out)["agreed"] == [True] * 4


def _train_args(out: Path, steps: int) -> list[str]:
    # No learning-rate decay: its schedule depends on `steps`, which these runs extend.
    return ["train", "--data", "ring8", "--out", str(out), "--steps", str(steps), "--quiet", "--device", "cpu",
            "--checkpoint_every", "10", "--log_every", "5", "--sample_every", "1000", "--lr_decay", "0", *TINY_RING]


def test_checkpoint_from_two_processes_resumes_in_one(tmp_path):
    """A run checkpointed at world size 2 resumes at world size 1 and ends where a 1-process run ends."""
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    first = job([PYTHON, "-m", "ganforge", *_train_args(resumed, 20), "--nproc", "2"])
    assert first.returncode == 0, first.stderr[-3000:]
    config = json.loads((resumed / "config.json").read_text())
    assert (config["world_size"], config["batch_size"], config["batch_per_process"]) == (2, 32, 16)
    for out in (resumed, straight):
        done = subprocess.run([PYTHON, "-m", "ganforge", *_train_args(out, 40)], env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        assert (f"resuming {out} from step 20" in done.stderr) == (out == resumed)
    a = load_checkpoint(resumed / "checkpoints" / "checkpoint-00000040.pt")
    b = load_checkpoint(straight / "checkpoints" / "checkpoint-00000040.pt")
    assert json.loads((resumed / "config.json").read_text())["world_size"] == 1
    for player in ("generator", "discriminator"):
        for key in b[player]:
            torch.testing.assert_close(a[player][key], b[player][key], rtol=1e-3, atol=1e-4)


@contextlib.contextmanager
def _running_with_a_checkpoint(command: list[str], out: Path) -> Iterator[subprocess.Popen]:
    """Starts `command` in a process group of its own and yields it once `out` holds a checkpoint; kills the group if it is still running at the end."""
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not list((out / "checkpoints").glob("checkpoint-*.pt")):
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                _, stderr = process.communicate()
                raise AssertionError(f"no checkpoint appeared (exit code {process.returncode}): {stderr[-3000:]}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _signal_a_worker_after_the_first_checkpoint(torchrun_args: list[str], out: Path, sig: str = "KILL") -> tuple[int, str, float]:
    """Starts torchrun, sends SIG`sig` to one of its 2 workers once a checkpoint exists; returns (exit code, stderr, seconds to exit)."""
    with _running_with_a_checkpoint([*TORCHRUN, *torchrun_args], out) as process:
        workers = subprocess.run(["pgrep", "-f", "-P", str(process.pid), "ganforge"], capture_output=True, text=True).stdout.split()
        assert len(workers) == 2, f"workers found: {workers}"
        killed_at = time.monotonic()
        subprocess.run(["kill", f"-{sig}", workers[-1]], check=True)
        _, stderr = process.communicate(timeout=120)
        return process.returncode, stderr, time.monotonic() - killed_at


@pytest.mark.skipif(sys.platform != "linux", reason="finds the workers with pgrep -P")
def test_a_killed_process_fails_the_job_fast_and_the_run_resumes(tmp_path):
    """SIGKILL one worker: torchrun ends the job promptly (no hang); the same command then resumes."""
    out = tmp_path / "run"
    code, stderr, seconds = _signal_a_worker_after_the_first_checkpoint(["-m", "ganforge", *_train_args(out, 100_000)], out)
    assert code != 0 and seconds < 60, f"exit code {code} after {seconds:.0f} s: {stderr[-3000:]}"
    step = load_checkpoint(sorted((out / "checkpoints").glob("checkpoint-*.pt"))[-1])["step"]
    again = job([PYTHON, "-m", "ganforge", *_train_args(out, step + 10), "--nproc", "2"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {out} from step {step}" in again.stderr, again.stderr[-3000:]


@pytest.mark.skipif(sys.platform != "linux", reason="finds the workers with pgrep -P")
def test_a_stop_request_to_one_process_stops_every_process_at_the_same_step(tmp_path):
    """SIGTERM to rank 1 only: the processes agree to stop at the next multiple of STOP_CHECK_EVERY,
    rank 0 saves that step and both exit 130 (no hang waiting for a peer); the same command resumes there."""
    out = tmp_path / "run"
    code, stderr, seconds = _signal_a_worker_after_the_first_checkpoint(["-m", "ganforge", *_train_args(out, 100_000)], out, "TERM")
    assert code != 0 and seconds < 60 and "stopped at step " in stderr, f"exit code {code} after {seconds:.0f} s: {stderr[-3000:]}"
    assert stderr.count("exitcode  : 130") == 2, stderr[-3000:]
    stopped = int(stderr.split("stopped at step ")[1].split(";")[0])
    assert stopped % STOP_CHECK_EVERY == 0
    assert load_checkpoint(sorted((out / "checkpoints").glob("checkpoint-*.pt"))[-1])["step"] == stopped
    again = job([PYTHON, "-m", "ganforge", *_train_args(out, stopped + 10), "--nproc", "2"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {out} from step {stopped}" in again.stderr, again.stderr[-3000:]


def test_ctrl_c_on_nproc_stops_every_process_at_one_saved_step_without_a_traceback(tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) on `ganforge train --nproc 2`: exit 130, the
    workers' one "stopped at step N" line and nothing from torchrun but its log lines; the last checkpoint holds that step."""
    out = tmp_path / "run"
    with _running_with_a_checkpoint([PYTHON, "-m", "ganforge", *_train_args(out, 100_000), "--nproc", "2"], out) as process:
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=90)
    assert process.returncode == 130, stderr[-3000:]
    assert "stopped at step " in stderr and "Traceback" not in stderr and "Error" not in stderr, stderr[-3000:]
    stopped = int(stderr.split("stopped at step ")[1].split(";")[0])
    assert load_checkpoint(sorted((out / "checkpoints").glob("checkpoint-*.pt"))[-1])["step"] == stopped


@pytest.mark.skipif(sys.platform != "linux", reason="finds the workers with pgrep -P")
def test_max_restarts_resumes_after_a_killed_process(tmp_path):
    """Under torchrun --max-restarts a killed worker restarts the job, which resumes and finishes.

    Two restarts: one for the killed worker, one spare for a RUNTIME_ABORT.
    """
    out = tmp_path / "run"
    code, stderr, _ = _signal_a_worker_after_the_first_checkpoint(["--max-restarts", "2", "-m", "ganforge", *_train_args(out, 400)], out)
    assert code == 0, stderr[-3000:]
    assert "resuming" in stderr and "done: 400 steps" in stderr


def test_nproc_flag_is_not_a_config_key(tmp_path):
    """--nproc starts torchrun; a bad value is a clean error."""
    bad = subprocess.run([PYTHON, "-m", "ganforge", *_train_args(tmp_path / "r", 5), "--nproc", "0"],
                         env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "ganforge: error: --nproc 0 is invalid: expected an integer >= 1"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("exitcodes", "code", "line"),
    [
        ({0: 4, 1: -9}, 137, "ganforge: error: process 1 was killed by SIGKILL; the same command resumes from the last checkpoint"),
        ({0: 130, 1: 130}, 130, ""),
        ({0: -15, 1: 130}, 130, ""),  # a stopped process exited first and torchrun ended its peer
        ({1: 2}, 2, "ganforge: error: process 1 failed with exit code 2"),
    ],
)
def test_the_nproc_launcher_ends_a_failed_job_in_one_line_with_the_workers_code(monkeypatch, capsys, exitcodes, code, line):
    """A killed process is named as the cause (its peers then fail on the lost connection); a stopped job says nothing more."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from ganforge import launch

    def failing_run(_args):
        failures = {rank: ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=c, error_file="") for rank, c in exitcodes.items()}
        raise ChildFailedError("ganforge", failures)

    monkeypatch.setattr(launch, "run", failing_run)
    assert launch.main(["--standalone", "--nproc_per_node", "2", "-m", "ganforge", "train"]) == code
    assert capsys.readouterr().err.strip() == line


def test_minibatch_std_groups_must_divide_each_processs_discriminator_batch(monkeypatch):
    """batch_size=24: groups of 8 divide the whole batch, but not the 12 rows each of 2 processes holds."""
    dataset = load_dataset("ring8")
    config = resolve(make_config({"data": "ring8", "batch_size": 24, "d_mbstd": 8}), "vectors", (2,), "ring8")
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(GanforgeError, match=r"d_mbstd=8 does not divide the discriminator's batch of 12 rows per process"):
        Trainer(config, dataset, torch.device("cpu"), say=lambda *_: None)
