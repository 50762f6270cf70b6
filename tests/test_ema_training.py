"""What a user samples and exports: the weight average after real training iterations, and the
BatchNorm statistics of the exported generator.

The runs go through the command line and the training loop with the divergence guard on (its
default), so these tests see the weight average the way a trained run holds it.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import ganforge.training.state as trainer_module
from ganforge.checkpoint import load_checkpoint
from ganforge.config import make_config, resolve
from ganforge.data import load_dataset
from ganforge.nets import build_network
from ganforge.noise import NoiseSampler
from helpers import digits_args

DECAY = 0.7  # far from 1, so after 12 iterations the average differs from both the initial and the live weights
STEPS = 12


@pytest.fixture
def history(monkeypatch):
    """Records the live generator after every training iteration: {"initial": state, "steps": [state, ...]}."""
    record: dict = {"steps": []}
    iteration = trainer_module.Trainer.iteration

    def recorded(self, skip_nonfinite):
        if "initial" not in record:
            record["initial"] = _copy(self.generator)
            record["guard"] = skip_nonfinite
        result = iteration(self, skip_nonfinite)
        record["steps"].append(_copy(self.generator))
        return result

    monkeypatch.setattr(trainer_module.Trainer, "iteration", recorded)
    return record


def _copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _nan_generator_loss_at(monkeypatch, calls: set[int]) -> None:
    """Makes the generator's loss NaN at the given (0-based) generator steps: those updates must be skipped."""
    get_loss = trainer_module.get_loss

    def faulty_get_loss(name):
        loss = get_loss(name)
        count = iter(range(10**6))

        def generator_loss(fake_logits, real_logits=None):
            value = loss.generator(fake_logits, real_logits)
            return value * float("nan") if next(count) in calls else value

        return dataclasses.replace(loss, generator=generator_loss)

    monkeypatch.setattr(trainer_module, "get_loss", faulty_get_loss)


def _average_by_hand(record: dict, skipped: set[int]) -> dict[str, torch.Tensor]:
    """average_0 = initial weights; at each applied step t: average = DECAY * average + (1 - DECAY) * w_t (float64).

    Buffers (BatchNorm running statistics) are the live ones of the last applied step."""
    average = {k: v.double() for k, v in record["initial"].items()}
    for t, live in enumerate(record["steps"]):
        if t in skipped:
            continue
        for key, value in live.items():
            floating = value.is_floating_point() and not key.endswith(("running_mean", "running_var"))
            average[key] = DECAY * average[key] + (1 - DECAY) * value.double() if floating else value.double()
    return average


@pytest.mark.parametrize("skipped", [set(), {3, 4, 9}], ids=["every-step", "nan-steps-skipped"])
def test_ema_after_training_iterations_is_the_average_of_the_live_weights(cli, tmp_path, monkeypatch, history, skipped):
    """The checkpoint's EMA after 12 iterations of the loop equals the average computed by hand from the live
    generator after each iteration; an update skipped for NaN leaves the average as it was."""
    _nan_generator_loss_at(monkeypatch, skipped)
    run = tmp_path / "run"
    result = cli(*digits_args(run, STEPS), "--ema_decay", str(DECAY), "--checkpoint_every", "100")
    assert result.code == 0, result.err
    assert history["guard"] is True and len(history["steps"]) == STEPS
    state = load_checkpoint(run / "checkpoints" / f"checkpoint-{STEPS:08d}.pt")
    assert state["skipped_steps"] == len(skipped)
    for t in skipped:  # the skipped generator updates left the live weights as they were
        assert all(torch.equal(history["steps"][t][k], history["steps"][t - 1][k]) for k in history["initial"])
    expected = _average_by_hand(history, skipped)
    for key, value in state["ema"].items():
        torch.testing.assert_close(value.double(), expected[key], rtol=1e-5, atol=1e-6, msg=key)
    live, initial = state["generator"], history["initial"]
    weights = [k for k in live if k.endswith("weight")]
    assert all(not torch.equal(state["ema"][k], live[k]) and not torch.equal(state["ema"][k], initial[k]) for k in weights)


# --- the exported generator's BatchNorm statistics -------------------------------------------------


def _recalibrated_by_hand(network: nn.Module, noise: NoiseSampler, batches: int, batch_size: int) -> dict[str, torch.Tensor]:
    """Each BatchNorm's population statistics for `network`'s weights: the mean over `batches` noise batches of
    the per-batch mean and unbiased variance of its inputs (training-mode forward passes)."""
    norms = {name: m for name, m in network.named_modules() if isinstance(m, nn.BatchNorm2d)}
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in norms}
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: inputs[name].append(args[0].detach())) for name, m in norms.items()]
    network.train()
    with torch.no_grad():
        for _ in range(batches):
            network(noise(batch_size))
    for hook in hooks:
        hook.remove()
    expected = {}
    for name, seen in inputs.items():
        expected[f"{name}.running_mean"] = torch.stack([x.mean((0, 2, 3)) for x in seen]).mean(0)
        expected[f"{name}.running_var"] = torch.stack([x.transpose(0, 1).flatten(1).var(1) for x in seen]).mean(0)
    return expected


def test_exported_and_sampled_generator_has_batchnorm_statistics_recalibrated_for_the_average(cli, digits_run, tmp_path):
    """generator.safetensors holds, for the EMA weights, the running statistics of 16 noise batches of 64
    (the calibration noise stream), not the live network's; `ganforge sample` draws with exactly those."""
    exported = load_file(digits_run / "generator.safetensors")
    spec = json.loads((digits_run / "generator.json").read_text())
    state = load_checkpoint(digits_run / "checkpoints" / "checkpoint-00000010.pt")
    network = build_network(spec["class"], spec["config"])
    network.load_state_dict(state["ema"])
    config = state["config"]
    calibration = NoiseSampler(config["latent_dim"], config["noise"], seed=config["seed"] + trainer_module.SAMPLE_SEED_OFFSET + 1)
    expected = _recalibrated_by_hand(network, calibration, batches=16, batch_size=max(config["batch_size"], 64))
    assert len(expected) >= 4
    for key, value in expected.items():
        torch.testing.assert_close(exported[key], value, rtol=1e-4, atol=1e-5, msg=key)
        assert not torch.allclose(exported[key], state["ema"][key], rtol=1e-3, atol=1e-4), f"{key} is the live network's"
    network.load_state_dict(exported)
    network.eval()
    out = tmp_path / "samples.npy"
    assert cli("sample", digits_run, "--n", "20", "--seed", "3", "--out", out).code == 0
    with torch.no_grad():
        z = NoiseSampler(config["latent_dim"], config["noise"], seed=3)(20)
        by_hand = ((network(z) + 1) / 2).clamp(0, 1).numpy()
    np.testing.assert_allclose(np.load(out), by_hand, rtol=1e-5, atol=1e-6)


def test_a_restored_trainer_samples_and_evaluates_with_the_exported_generator(digits_run):
    """A Trainer restored from the last checkpoint (as a resumed run is) gives, for pictures and evaluation
    (`sampling_generator`), the EMA weights and recalibrated statistics that generator.safetensors holds."""
    state = load_checkpoint(digits_run / "checkpoints" / "checkpoint-00000010.pt")
    dataset = load_dataset("digits")
    config = resolve(make_config(state["config"]), dataset.kind, dataset.sample_shape, "digits")
    trainer = trainer_module.Trainer(config, dataset, torch.device("cpu"), say=lambda *_: None)
    trainer.load_state_dict(state)
    sampled = trainer.sampling_generator().state_dict()
    exported = load_file(digits_run / "generator.safetensors")
    assert sampled.keys() == exported.keys()
    for key, value in sampled.items():
        torch.testing.assert_close(value, exported[key], rtol=1e-6, atol=1e-7, msg=key)
