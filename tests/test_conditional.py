"""Class-conditional training and sampling: the class embedding and projection head, the conditional key,
sampling a class from a run, and how often the classifier reads the requested class."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import ganforge
from ganforge.config import make_config, resolve
from ganforge.data import load_dataset
from ganforge.errors import GanforgeError
from ganforge.evaluate import evaluate
from ganforge.losses import LOSSES
from ganforge.nets import Conditioned, ConvDiscriminator, ConvGenerator, ResNetDiscriminator, ResNetGenerator
from ganforge.noise import NoiseSampler
from ganforge.steps import discriminator_step, generator_step
from helpers import LabelSpy, digits_args


@pytest.mark.parametrize("make", [lambda: ConvGenerator(4, 1, 8, width=4, classes=3), lambda: ResNetGenerator(4, 1, 8, width=4, classes=3)],
                         ids=["conv", "resnet"])
def test_a_conditional_generator_draws_the_class_it_is_given(make):
    torch.manual_seed(0)
    g = make().eval()
    z = torch.randn(6, 4)
    by_class = [g(z, torch.full((6,), c)) for c in range(3)]
    assert not torch.allclose(by_class[0], by_class[1]) and not torch.allclose(by_class[1], by_class[2])
    # Without labels the classes come in turn: 0, 1, 2, 0, 1, 2.
    assert torch.equal(g(z), g(z, torch.arange(6) % 3))


@pytest.mark.parametrize("make", [lambda: ConvDiscriminator(1, 8, width=4, classes=3), lambda: ResNetDiscriminator(1, 8, width=4, classes=3)],
                         ids=["conv", "resnet"])
def test_the_projection_head_starts_at_zero_and_then_scores_by_class(make):
    torch.manual_seed(0)
    d = make().eval()
    x = torch.randn(5, 1, 8, 8)
    plain = d.net(x).flatten()
    assert torch.allclose(d(x, torch.zeros(5, dtype=torch.long)), plain)  # a new head adds nothing
    nn.init.normal_(d.projection.embed.weight)
    assert not torch.allclose(d(x, torch.zeros(5, dtype=torch.long)), d(x, torch.ones(5, dtype=torch.long)))
    with pytest.raises(GanforgeError, match="needs the class labels"):
        d(x)


def test_the_steps_train_conditional_players_bound_to_the_batch_labels():
    torch.manual_seed(0)
    g, d = ConvGenerator(4, 1, 8, width=4, classes=3), ConvDiscriminator(1, 8, width=4, classes=3)
    labels, real = torch.tensor([0, 1, 2, 0, 1, 2]), torch.rand(6, 1, 8, 8) * 2 - 1
    noise = NoiseSampler(4, seed=1)
    d_before = {k: v.clone() for k, v in d.state_dict().items()}
    generator_step(Conditioned(g, labels), Conditioned(d, labels), torch.optim.SGD(g.parameters(), lr=0.1), LOSSES["nonsaturating"], noise, 6)
    assert all(torch.equal(d_before[k], v) for k, v in d.state_dict().items())
    assert g.condition.embed.weight.grad.abs().sum() > 0  # the class embedding learns
    discriminator_step(Conditioned(g, labels), Conditioned(d, labels), torch.optim.SGD(d.parameters(), lr=0.1), LOSSES["nonsaturating"], noise, real)
    assert not torch.equal(d_before["projection.embed.weight"], d.state_dict()["projection.embed.weight"])


def test_conditional_true_needs_labels_conv_networks_and_no_packing():
    def resolved(data: str, classes: int, **keys):
        return resolve(make_config({"data": data, "conditional": True, **keys}), "images", (1, 8, 8), "x", classes)

    with pytest.raises(GanforgeError, match="conditional=true needs class labels, but data='flat' has none: use class sub-folders"):
        resolved("flat", 0)
    with pytest.raises(GanforgeError, match="conditional=true needs arch=conv or resnet, not arch=mlp"):
        resolved("digits", 10, arch="mlp")
    with pytest.raises(GanforgeError, match="conditional=true needs pack=1"):
        resolved("digits", 10, pack=2)
    assert resolved("digits", 10).conditional is True
    assert resolve(make_config({"data": "digits"}), "images", (1, 8, 8), "x", 0).conditional is False


def test_conditional_training_on_data_without_labels_is_a_one_line_error(cli, tmp_path):
    np.save(tmp_path / "unlabelled.npy", np.zeros((16, 8, 8), dtype=np.uint8))
    result = cli("train", "--data", str(tmp_path / "unlabelled.npy"), "--conditional", "true", "--out", str(tmp_path / "run"))
    assert result.code == 2 and "conditional=true needs class labels" in result.err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    from ganforge.cli import main

    out = tmp_path_factory.mktemp("conditional") / "digits"
    assert main(digits_args(out, 4, "--conditional", "true")) == 0
    return out


def test_a_conditional_run_samples_the_requested_class(conditional_run, cli, tmp_path):
    spec = json.loads((conditional_run / "generator.json").read_text())
    assert spec["classes"] == [str(i) for i in range(10)] and spec["config"]["classes"] == 10
    generator = ganforge.load_generator(conditional_run)
    spy = LabelSpy(generator.network)
    generator.network = spy
    samples = generator.sample(70, labels=torch.tensor(7), batch_size=32)
    assert samples.shape == (70, 1, 8, 8)
    assert torch.equal(torch.cat(spy.seen), torch.full((70,), 7))
    mixed = torch.arange(70) % 10
    spy.seen.clear()
    generator.sample(70, labels=mixed)
    assert torch.equal(torch.cat(spy.seen), mixed)
    # The command line draws a class by name or number; one it does not have is a one-line error.
    out = tmp_path / "sevens.npy"
    assert cli("sample", str(conditional_run), "--n", "5", "--class", "7", "--out", str(out)).code == 0
    expected = ganforge.load_generator(conditional_run).sample(5, labels=torch.tensor(7)).numpy()
    assert np.allclose(np.load(out), expected)
    bad = cli("sample", str(conditional_run), "--n", "5", "--class", "eleven", "--out", str(tmp_path / "x.npy"))
    assert bad.code == 2 and "class 'eleven' is not one of this generator's classes: 0, 1" in bad.err


def test_an_unconditional_run_refuses_a_class(digits_run, cli, tmp_path):
    result = cli("sample", str(digits_run), "--n", "5", "--class", "3", "--out", str(tmp_path / "x.npy"))
    assert result.code == 2 and "this generator is not class-conditional" in result.err


class _DigitsByClass:
    """A stand-in conditional generator: for each requested class, a real digit of that class (or, when
    `ignore` is set, of a random class)."""

    def __init__(self, ignore: bool) -> None:
        data = load_dataset("digits")
        self.images, self.labels, self.ignore = data.samples.float() / 255, data.labels, ignore
        self.classes = [str(i) for i in range(10)]

    def sample(self, n: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        wanted = rng.integers(0, 10, n) if self.ignore else labels.numpy()
        return torch.stack([self.images[rng.choice(np.flatnonzero(self.labels.numpy() == c))] for c in wanted])


def test_eval_reports_how_often_the_classifier_reads_the_requested_class():
    digits = load_dataset("digits")
    faithful = evaluate(_DigitsByClass(ignore=False), digits, n=500, metrics=("fd",), features="digits8")
    careless = evaluate(_DigitsByClass(ignore=True), digits, n=500, metrics=("fd",), features="digits8")
    assert faithful["metrics"]["class_accuracy"] > 0.95
    assert careless["metrics"]["class_accuracy"] < 0.25
