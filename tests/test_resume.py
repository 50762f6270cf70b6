"""Interrupting and resuming training.

- A finished run trained again with more steps resumes from its last checkpoint and logs
  each step once.
- A real `python -m ganforge train` process interrupted with SIGINT saves a checkpoint and
  exits with 130; the same command then resumes it to completion.
- Determinism: 2k steps in one go and k steps + a resume to 2k end with bit-identical
  weights, optimizer states, EMA, RNG states and exported generator (CPU, same seed).
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import torch

from ganforge.checkpoint import load_checkpoint
from helpers import PYTHON, TINY_MLP, digits_args, read_metrics, reap, ring8_args, subprocess_env


def test_training_longer_resumes_from_the_last_checkpoint(cli, copy_run, ring8_run):
    run = copy_run(ring8_run)
    first = load_checkpoint(run / "checkpoints" / "checkpoint-00000020.pt")
    result = cli(*ring8_args(run, 30))
    assert result.code == 0, result.err
    assert f"resuming {run} from step 20" in result.err
    steps = [m["step"] for m in read_metrics(run)]
    assert steps == [5, 10, 15, 20, 25, 30], "metrics continue without duplicated steps"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-00000020.pt", "checkpoint-00000030.pt"]
    last = load_checkpoint(run / "checkpoints" / "checkpoint-00000030.pt")
    assert last["step"] == 30 and last["config"]["steps"] == 30
    assert last["seconds"] >= first["seconds"], "training time accumulates across resumes"
    assert not torch.equal(last["generator"]["net.0.weight"], first["generator"]["net.0.weight"])
    assert (run / "samples" / "step_00000030.png").is_file()


def state_tensors(value, prefix=""):
    """Flattens a nested checkpoint entry into {path: tensor or plain value}."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(state_tensors(v, f"{prefix}/{k}"))
        return out
    if isinstance(value, (list, tuple)):
        out = {}
        for i, v in enumerate(value):
            out.update(state_tensors(v, f"{prefix}/{i}"))
        return out
    return {prefix: value}


def assert_identical_states(a: dict, b: dict, keys) -> None:
    for key in keys:
        flat_a, flat_b = state_tensors(a[key]), state_tensors(b[key])
        assert flat_a.keys() == flat_b.keys(), key
        for path, value in flat_a.items():
            other = flat_b[path]
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other), f"{key}{path} differs"
            else:
                assert value == other, f"{key}{path} differs"


def comparable(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in ("seconds", "steps_per_s")} for m in metrics]


@pytest.mark.parametrize(
    ("make_args", "extra"),
    [
        # MLP, Wasserstein loss with gradient penalty: the penalty's interpolation draws from the global RNG.
        (ring8_args, ["--loss", "wasserstein", "--gp_weight", "1", "--ema_decay", "0.9"]),
        # Conv nets with BatchNorm in both players, R1 penalty, two D steps per G step, PacGAN, minibatch std.
        (digits_args, ["--r1_gamma", "1", "--d_steps_per_g_step", "2", "--pack", "2", "--d_mbstd", "4"]),
        # A spectrally normalised D: its power-iteration vectors are state that must resume exactly.
        (digits_args, ["--d_norm", "spectral", "--loss", "hinge"]),
    ],
    ids=["ring8_gp", "digits_r1", "digits_spectral_hinge"],
)
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(cli, tmp_path, make_args, extra):
    k = 10
    # No learning-rate decay: its schedule depends on `steps`, which the split run extends from k to 2k.
    common = [*extra, "--checkpoint_every", str(k), "--sample_every", "1000", "--lr_decay", "0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(*make_args(straight, 2 * k), *common).code == 0
    assert cli(*make_args(split, k), *common).code == 0
    result = cli(*make_args(split, 2 * k), *common)
    assert result.code == 0 and f"from step {k}" in result.err

    name = f"checkpoint-{2 * k:08d}.pt"
    a, b = load_checkpoint(straight / "checkpoints" / name), load_checkpoint(split / "checkpoints" / name)
    assert_identical_states(a, b, ["generator", "discriminator", "g_optimizer", "d_optimizer", "ema", "noise", "sampler", "torch_rng"])
    assert (straight / "generator.safetensors").read_bytes() == (split / "generator.safetensors").read_bytes()
    assert comparable(read_metrics(straight)) == comparable(read_metrics(split))
    # And the k-step checkpoint of the long run is the one the resume started from.
    mid_a = load_checkpoint(straight / "checkpoints" / f"checkpoint-{k:08d}.pt")
    mid_b = load_checkpoint(split / "checkpoints" / f"checkpoint-{k:08d}.pt")
    assert_identical_states(mid_a, mid_b, ["generator", "discriminator", "noise", "sampler", "torch_rng"])


def test_different_seeds_give_different_weights(cli, tmp_path):
    """Guards the determinism test against a vacuous pass (e.g. weights that never change)."""
    assert cli(*ring8_args(tmp_path / "a", 5)).code == 0
    assert cli(*ring8_args(tmp_path / "b", 5), "--seed", "1").code == 0
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "checkpoint-00000005.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "checkpoint-00000005.pt")
    assert not torch.equal(a["generator"]["net.0.weight"], b["generator"]["net.0.weight"])


def test_sigint_saves_a_checkpoint_and_the_same_command_resumes(cli, tmp_path):
    """A real process: SIGINT mid-training -> exit 130 with a checkpoint; the same command finishes the run,
    with exactly the weights of an uninterrupted run."""
    run, steps = tmp_path / "run", 150
    # sample_every=1 makes each step slow enough (a scatter plot per step) that SIGINT lands mid-run.
    command = [
        PYTHON, "-m", "ganforge", "train", "--data", "ring8", "--steps", str(steps), "--out", str(run),
        "--log_every", "1", "--sample_every", "1", "--checkpoint_every", "1000", *TINY_MLP,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        deadline = time.monotonic() + 120
        metrics = run / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().strip()):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        reap(process)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "stopped at step" in err and "run the same command again to resume" in err
    stopped = int(err.split("stopped at step ")[1].split(";")[0])
    assert 1 <= stopped < steps
    checkpoints = sorted((run / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == [f"checkpoint-{stopped:08d}.pt"]
    assert load_checkpoint(checkpoints[0])["step"] == stopped
    assert read_metrics(run)[-1]["step"] <= stopped

    resumed = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run} from step {stopped}" in resumed.stderr
    assert f"done: {steps} steps" in resumed.stderr
    logged = [m["step"] for m in read_metrics(run)]
    assert logged == list(range(1, steps + 1)), "every step logged exactly once across the interruption"
    assert load_checkpoint(run / "checkpoints" / f"checkpoint-{steps:08d}.pt")["step"] == steps
    assert (run / "generator.safetensors").is_file() and (run / "samples" / "final.png").is_file()

    # The same run without interruption (in-process, without the per-step pictures, which must not matter).
    reference = tmp_path / "reference"
    args = [str(reference) if a == str(run) else a for a in command[3:]]
    args[args.index("--sample_every") + 1] = "1000"
    assert cli(*args).code == 0
    name = f"checkpoint-{steps:08d}.pt"
    a, b = load_checkpoint(run / "checkpoints" / name), load_checkpoint(reference / "checkpoints" / name)
    assert_identical_states(a, b, ["generator", "discriminator", "g_optimizer", "d_optimizer", "ema", "noise", "sampler"])
