"""Averages across processes under torchrun (2 CPU processes, Gloo): what is logged and saved is the mean
of what each process holds, and BatchNorm and R1 nets train as one process with the same global batch.

One torchrun job (tests/dist_loop_worker.py) runs a ring8 MLP with R1 on every discriminator step, then
the training loop on digits (BatchNorm in both players, R1), and records each process's own values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dist_loop_worker import R1_RING
from dist_worker import run as run_single_process
from ganforge.checkpoint import load_checkpoint
from ganforge.config import make_config, parse_overrides, resolve
from ganforge.data import load_dataset
from ganforge.training import train
from ganforge.training.state import Trainer
from test_distributed import HERE, torchrun

STEPS = 6
# Conv nets with BatchNorm in both players and R1 through the DDP wrapper; 3 log lines, 2 checkpoints.
DIGITS = ["data=digits", "device=cpu", "batch_size=64", "g_width=4", "d_width=4", "r1_gamma=1", "log_every=2",
          "checkpoint_every=3", "sample_every=1000", "lr_decay=0"]
# Per-process BatchNorm (32 + 32 samples) normalises with other statistics than one process does (64 samples),
# so the two runs differ by more than rounding. A player's distance to the one-process run, as a fraction of the
# distance between the one-process run and one on other batches and noise, stays under these (measured with
# seeds 0, 1, 2: generator 0.44, 0.44, 0.48; discriminator 0.21, 0.31, 0.21).
BATCHNORM_PARITY = {"generator": 0.6, "discriminator": 0.4}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two")
    result = torchrun(str(HERE / "dist_loop_worker.py"), str(out), str(STEPS), *DIGITS, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _ranks(out: Path) -> list[dict]:
    return [torch.load(out / f"rank{rank}.pt") for rank in (0, 1)]


def test_logged_scalars_are_the_mean_of_each_processs_own(two_processes):
    """Each log line's d_loss, g_loss, D(x), D(G(z)) = the mean over ranks of each rank's mean over the interval."""
    ranks = _ranks(two_processes)
    own = torch.tensor([rank["scalars"] for rank in ranks], dtype=torch.float64)  # (rank, step, 4)
    assert own.shape == (2, STEPS, 4)
    assert not torch.allclose(own[0], own[1]), "the ranks' shards must give different values"
    logged = [json.loads(line) for line in (two_processes / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in logged] == [2, 4, 6]
    for line in logged:
        interval = own[:, line["step"] - 2 : line["step"]]
        expected = interval.mean(1).mean(0).tolist()
        assert [line[k] for k in ("d_loss", "g_loss", "d_real", "d_fake")] == pytest.approx(expected, rel=1e-6), line


def test_saved_batchnorm_statistics_are_the_mean_of_each_processs_own(two_processes):
    """The last checkpoint's running statistics of both players = the mean of the two ranks' own before saving."""
    ranks = _ranks(two_processes)
    state = load_checkpoint(two_processes / "run" / "checkpoints" / f"checkpoint-{STEPS:08d}.pt")
    for player, name in (("generator", "ConvGenerator"), ("discriminator", "ConvDiscriminator")):
        own = [rank["buffers"][name] for rank in ranks]
        assert own[0] and own[0].keys() == own[1].keys()
        assert any(not torch.equal(own[0][k], own[1][k]) for k in own[0]), f"the ranks' {player} statistics must differ"
        for key in own[0]:
            torch.testing.assert_close(state[player][key], (own[0][key] + own[1][key]) / 2, rtol=1e-6, atol=1e-7, msg=f"{player}.{key}")


def test_r1_through_the_ddp_wrapper_matches_one_process(two_processes):
    """R1 differentiates the discriminator twice through DDP: 2 x 16 samples give the weights 1 x 32 give."""
    two = torch.load(two_processes / "r1.pt")
    assert two["agreed"] == [True] * STEPS
    one = run_single_process(STEPS, "ring8", R1_RING)
    start = run_single_process(0, "ring8", R1_RING)["params"]
    assert not torch.allclose(one["params"], start), "training moved the weights"
    torch.testing.assert_close(two["params"], one["params"], rtol=1e-4, atol=1e-5)


def _flat(state: dict) -> torch.Tensor:
    return torch.cat([v.flatten() for k, v in state.items() if k.endswith(("weight", "bias"))])


def test_batchnorm_nets_match_one_process_with_the_same_global_batch(two_processes, tmp_path):
    """Per player, the two-process weights lie within BATCHNORM_PARITY of the one-process run's distance to a
    run that differs only in its batches and noise (the same start, other draws)."""
    config = make_config({"out": str(tmp_path / "one"), "steps": STEPS}, parse_overrides(DIGITS))
    train(config, progress=False, say=lambda message: None)
    name = f"checkpoint-{STEPS:08d}.pt"
    one, two = load_checkpoint(tmp_path / "one" / "checkpoints" / name), load_checkpoint(two_processes / "run" / "checkpoints" / name)
    dataset = load_dataset("digits")
    other = Trainer(resolve(config, dataset.kind, dataset.sample_shape, "digits"), dataset, torch.device("cpu"), say=lambda *_: None)
    other.reseed(1)
    for _ in range(STEPS):
        other.iteration(skip_nonfinite=True)
    for player in ("generator", "discriminator"):
        reference = _flat(one[player])
        apart = (_flat(two[player]) - reference).norm()
        elsewhere = (_flat(getattr(other, player).state_dict()) - reference).norm()
        assert apart <= BATCHNORM_PARITY[player] * elsewhere, f"{player}: {apart:.3g} from one process; other batches: {elsewhere:.3g}"
