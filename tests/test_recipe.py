"""The modern image recipe's pieces: the relativistic loss, R1/R2, the residual networks, the EMA ramp,
and older runs that still resume now that the recipe's keys exist."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from ganforge.config import ADDED_KEYS, diff, make_config, resolve
from ganforge.errors import GanforgeError
from ganforge.losses import LOSSES, r1_penalty, r2_penalty
from ganforge.nets import ResidualBlock, ResNetDiscriminator, ResNetGenerator, build_network
from ganforge.noise import NoiseSampler
from ganforge.steps import discriminator_step, generator_step
from ganforge.training.state import ema_decay
from helpers import digits_args

REAL = [-120.0, -3.0, -0.3, 0.0, 0.7, 3.0, 45.0]
FAKE = [40.0, -60.0, -1.0, 0.2, 0.9, 2.0, 25.0]


def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def test_relativistic_loss_matches_its_closed_form_on_hand_picked_logits():
    loss = LOSSES["relativistic"]
    real, fake = torch.tensor(REAL, dtype=torch.float64), torch.tensor(FAKE, dtype=torch.float64)
    # D: mean of -log sigmoid(D(x) - D(G(z))); G: the mirror, -log sigmoid(D(G(z)) - D(x)).
    d_expected = sum(softplus(-(r - f)) for r, f in zip(REAL, FAKE)) / len(REAL)
    g_expected = sum(softplus(-(f - r)) for r, f in zip(REAL, FAKE)) / len(REAL)
    assert loss.discriminator(real, fake).item() == pytest.approx(d_expected, rel=1e-12)
    assert loss.generator(fake, real).item() == pytest.approx(g_expected, rel=1e-12)
    # It pairs row i with row i, so it is not a function of the two means alone.
    assert loss.generator(fake, real.flip(0)).item() != pytest.approx(g_expected)
    assert loss.needs_real and not loss.probabilistic
    assert not any(other.needs_real for name, other in LOSSES.items() if name != "relativistic")


def _tiny_critic() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 1)).double()


@pytest.mark.parametrize("penalty", [r1_penalty, r2_penalty], ids=["r1", "r2"])
def test_r1_and_r2_are_the_mean_squared_input_gradient_of_each_sample(penalty):
    critic = _tiny_critic()
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    expected = 0.0
    for row in x:  # one sample at a time, with plain autograd
        row = row.unsqueeze(0).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(row).sum(), row)
        expected += grad.pow(2).sum().item() / len(x)
    value = penalty(critic, x)
    assert value.item() == pytest.approx(expected, rel=1e-10)
    # The penalty trains D: it has a gradient with respect to D's weights.
    value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters() if p.dim() > 1)


def test_discriminator_step_adds_r2_on_the_generated_batch_only():
    torch.manual_seed(1)
    g, d = ResNetGenerator(4, 1, 8, width=4), ResNetDiscriminator(1, 8, width=4)
    real = torch.rand(6, 1, 8, 8) * 2 - 1
    results = []
    for r2 in (0.0, 3.0):
        torch.manual_seed(2)
        d_copy = build_network("ResNetDiscriminator", d.config)
        d_copy.load_state_dict(d.state_dict())
        noise = NoiseSampler(4, seed=5)
        results.append(discriminator_step(g, d_copy, torch.optim.SGD(d_copy.parameters(), lr=0.0), LOSSES["relativistic"], noise, real, r2_gamma=r2))
    with torch.no_grad():
        fake = g(NoiseSampler(4, seed=5)(6))
    assert results[1].loss.item() == pytest.approx(results[0].loss.item() + 1.5 * r2_penalty(d, fake).item(), rel=1e-5)


def test_a_residual_block_starts_as_the_identity():
    block = ResidualBlock(8, groups=4)
    x = torch.randn(3, 8, 5, 5)
    assert torch.equal(block(x), x)
    assert block.branch[2].groups == 4
    with pytest.raises(GanforgeError, match="groups=3 is invalid"):
        ResidualBlock(8, groups=3)


def _skip_path(g: ResNetGenerator, z: torch.Tensor) -> torch.Tensor:
    """The generator with every residual block removed: its skip path, written out by hand."""
    x = g.project(z).view(len(z), g.hidden, g.base, g.base)
    for layer in g.net:
        if not isinstance(layer, ResidualBlock):
            x = layer(x)
    return x


def test_a_new_resnet_generator_is_its_skip_path_and_trains_away_from_it():
    torch.manual_seed(0)
    g = ResNetGenerator(6, 3, 16, width=4, blocks=2, groups=2)
    z = torch.randn(5, 6)
    assert g(z).shape == (5, 3, 16, 16)
    assert torch.allclose(g(z), _skip_path(g, z), atol=1e-6)
    # The branch's last layer starts at zero but still learns (a zero branch is not a dead one).
    g(z).square().mean().backward()
    assert all(block.branch[-1].weight.grad.abs().sum() > 0 for block in g.net if isinstance(block, ResidualBlock))


@pytest.mark.parametrize("size", [8, 28, 32])
def test_resnet_discriminator_gives_one_logit_per_pack_and_rebuilds_from_its_config(size):
    d = ResNetDiscriminator(3, size, width=4, blocks=1, groups=2, pack=2, mbstd=2)
    x = torch.randn(8, 3, size, size)
    assert d(x).shape == (4,)
    twin = build_network("ResNetDiscriminator", json.loads(json.dumps(d.config)))
    twin.load_state_dict(d.state_dict())
    assert torch.equal(twin(x), d(x))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())


def test_relativistic_generator_step_needs_reals_and_leaves_d_frozen():
    torch.manual_seed(0)
    g, d = ResNetGenerator(4, 1, 8, width=4), ResNetDiscriminator(1, 8, width=4)
    optimizer = torch.optim.Adam(g.parameters(), lr=1e-2, betas=(0.0, 0.99))
    loss, noise, real = LOSSES["relativistic"], NoiseSampler(4, seed=1), torch.rand(6, 1, 8, 8) * 2 - 1
    with pytest.raises(ValueError, match="needs a real batch"):
        generator_step(g, d, optimizer, loss, noise, 6)
    before_d = {k: v.clone() for k, v in d.state_dict().items()}
    before_g = {k: v.clone() for k, v in g.state_dict().items()}
    result = generator_step(g, d, optimizer, loss, noise, 6, real=real)
    assert all(torch.equal(before_d[k], v) for k, v in d.state_dict().items())
    assert all(p.grad is None for p in d.parameters())
    assert any(not torch.equal(before_g[k], v) for k, v in g.state_dict().items())
    # The loss it reports is the relativistic loss of the logits it reports.
    assert result.loss.item() == pytest.approx(loss.generator(result.fake_logits, result.real_logits).item(), rel=1e-6)
    assert torch.allclose(result.real_logits, d(real))


def test_ema_half_life_in_images_ramps_up_from_the_first_step():
    config = resolve(make_config({"ema_kimg": 10.0, "batch_size": 64}), "images", (1, 8, 8), "digits")
    assert ema_decay(config, 0) == pytest.approx(0.5 ** (64 / (64 * 0.05)))  # a half-life of 5 % of 64 images
    assert ema_decay(config, 100) < ema_decay(config, 1_000) < ema_decay(config, 10_000)
    assert ema_decay(config, 10**6) == pytest.approx(0.5 ** (64 / 10_000))  # capped at 10,000 images
    plain = dataclasses.replace(config, ema_kimg=0.0, ema_decay=0.99)
    assert ema_decay(plain, 0) == ema_decay(plain, 10**6) == 0.99


def test_ema_rampup_is_the_most_the_half_life_may_be_as_a_fraction_of_the_images_seen():
    config = resolve(make_config({"ema_kimg": 10.0, "ema_rampup": 0.2, "batch_size": 64}), "images", (1, 8, 8), "digits")
    assert ema_decay(config, 99) == pytest.approx(0.5 ** (64 / (0.2 * 6_400)))  # 20 % of the 6,400 images seen
    assert ema_decay(config, 780) == pytest.approx(0.5 ** (64 / (0.2 * 49_984)))  # still under the 10,000-image cap
    assert ema_decay(config, 781) == pytest.approx(0.5 ** (64 / 10_000))  # 0.2 x 50,048 > 10,000: capped from here
    for bad in (0, -0.1, 1.5):
        with pytest.raises(GanforgeError, match=f"ema_rampup={bad}.*a fraction in \\(0, 1\\]"):
            make_config({"ema_rampup": bad})


def test_a_config_saved_before_the_image_keys_reads_as_what_it_ran():
    # category_draw, a table key, reads as what older table runs did; an image run resumes with it (the test below).
    config = resolve(make_config({"data": "digits", "category_draw": "gumbel"}), "images", (1, 8, 8), "digits")
    saved = {k: v for k, v in dataclasses.asdict(config).items() if k not in ADDED_KEYS}
    assert {k: getattr(config, k) for k in ADDED_KEYS} == ADDED_KEYS
    assert diff(saved, config) == []
    assert diff(saved, dataclasses.replace(config, r2_gamma=1.0)) == ["r2_gamma: 0.0 -> 1.0"]


def test_a_run_saved_before_the_image_keys_resumes(cli, tmp_path):
    from ganforge.checkpoint import list_checkpoints, load_checkpoint, write_checkpoint

    run = tmp_path / "old"
    assert cli(*digits_args(run, 5)).code == 0
    path = run / "config.json"
    saved = json.loads(path.read_text())
    for key in ADDED_KEYS:
        del saved[key]
    path.write_text(json.dumps(saved))
    for checkpoint in list_checkpoints(run):  # the config each checkpoint holds, as an older run's has it
        state = load_checkpoint(checkpoint)
        state["config"] = {k: v for k, v in state["config"].items() if k not in ADDED_KEYS}
        write_checkpoint(checkpoint, {k: v for k, v in state.items() if k != "format_version"})
    result = cli(*digits_args(run, 10))
    assert result.code == 0 and "from step 5" in result.err


def test_a_relativistic_resnet_run_trains_end_to_end(cli, tmp_path):
    run = tmp_path / "r3"
    extra = ["--arch", "resnet", "--loss", "relativistic", "--r1_gamma", "0.1", "--r2_gamma", "0.1", "--r1_every", "2",
             "--ema_kimg", "1", "--beta1", "0", "--groups", "2", "--g_depth", "1", "--d_depth", "1"]
    assert cli(*digits_args(run, 6, *extra)).code == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["arch"], config["loss"], config["groups"]) == ("resnet", "relativistic", 2)
    assert json.loads((run / "generator.json").read_text())["class"] == "ResNetGenerator"


def test_the_image_quality_benchmark_reads_each_mark_from_the_last_evaluation_before_it(monkeypatch):
    from helpers import load_benchmark

    bench = load_benchmark("image_quality", monkeypatch)
    name, overrides = bench.parse_setting("dcgan")
    assert name == "dcgan" and "loss=nonsaturating" in overrides and "ema_kimg=0" in overrides
    assert bench.parse_setting("mine:arch=resnet,groups=2") == ("mine", ["arch=resnet", "groups=2"])
    assert bench.parse_setting("default") == ("default", [])
    records = [{"step": s, "seconds": t, "eval": {"fd": fd}} for s, t, fd in ((100, 250.0, 9.0), (200, 590.0, 5.0), (300, 900.0, 3.0))]
    marks = bench.at_marks(records, [5, 10, 20])
    assert marks == {5: {"step": 100, "seconds": 250.0, "fd": 9.0}, 10: {"step": 200, "seconds": 590.0, "fd": 5.0},
                     20: {"step": 300, "seconds": 900.0, "fd": 3.0}}
    assert bench.at_marks(records, [1]) == {}
    assert bench.at_marks(records, [150, 300], by_step=True) == {150: {"step": 100, "seconds": 250.0, "fd": 9.0},
                                                                  300: {"step": 300, "seconds": 900.0, "fd": 3.0}}


def test_the_image_quality_benchmark_resumes_its_runs_instead_of_starting_anew(monkeypatch, tmp_path):
    import argparse
    import subprocess

    from helpers import load_benchmark

    bench = load_benchmark("image_quality", monkeypatch)
    started = []

    class Finished:
        returncode = 0

        def __init__(self, command):
            started.append(command)

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Finished)  # the script starts its runs through benchmarks/_common.py
    args = argparse.Namespace(workdir=str(tmp_path), data="digits", at_steps=None, minutes=[30], eval_every=10, eval_n=100,
                              device="cpu", threads=None, resume=True)
    with pytest.raises(SystemExit, match="holds no checkpoints"):
        bench.train_for(args, "default", [], 0)
    assert started == []
    (tmp_path / "default-0" / "checkpoints").mkdir(parents=True)
    bench.train_for(args, "default", [], 0)
    args.resume = False
    bench.train_for(args, "default", [], 0)
    assert "--new" not in started[0] and "--new" in started[1]


def test_a_run_keeps_its_settings_when_a_later_preset_changes(cli, tmp_path, monkeypatch):
    """A run resumes with the values it started with, not refused because a preset moved on; --new takes the new ones."""
    from ganforge import presets

    run = tmp_path / "run"
    assert cli(*digits_args(run, 5)).code == 0
    started = json.loads((run / "config.json").read_text())
    monkeypatch.setitem(presets.PRESETS, "digits", {**presets.PRESETS["digits"], "lr_g": 0.0123, "augment": "translation"})
    resumed = cli(*digits_args(run, 10))
    assert resumed.code == 0 and "from step 5" in resumed.err
    config = json.loads((run / "config.json").read_text())
    assert (config["lr_g"], config["augment"]) == (started["lr_g"], started["augment"]) != (0.0123, "translation")
    assert cli(*digits_args(run, 10), "--lr_g", "0.5").code == 2  # a key given differently is still a different run
    assert cli(*digits_args(run, 3), "--new").code == 0
    assert json.loads((run / "config.json").read_text())["lr_g"] == 0.0123
