"""The mode-seeking term (`diversity=`): its value on hand-picked samples, its pairs within a class,
the generator step that adds it with the discriminator still frozen, and `diversity_kimg`, which stops it."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from ganforge import LOSSES, NoiseSampler, generator_step
from ganforge.cli import main
from ganforge.config import make_config, resolve
from ganforge.data import load_dataset
from ganforge.losses import mode_seeking
from ganforge.training.state import Trainer, diversity_weight
from helpers import digits_args
from test_steps import BATCH, assert_bit_identical, count_grad_hooks, make_pair, state_copy

Z = torch.tensor([[0.0, 0.0], [1.0, 3.0], [2.0, -2.0]], dtype=torch.float64)
FAKE = torch.tensor([[0.5, 0.5, 0.0], [0.5, -0.5, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)


def by_hand(pairs: list[tuple[int, int]]) -> float:
    """The mean over ordered pairs of 1 / (mean |G(z1) - G(z2)| / mean |z1 - z2|), written out."""
    terms = []
    for i, j in pairs:
        apart = sum(abs(a - b) for a, b in zip(FAKE[i].tolist(), FAKE[j].tolist())) / 3
        noise_apart = sum(abs(a - b) for a, b in zip(Z[i].tolist(), Z[j].tolist())) / 2
        terms.append(1 / (apart / noise_apart + 1e-5))
    return sum(terms) / len(terms)


def test_mode_seeking_is_the_mean_inverse_ratio_over_every_pair():
    every = [(i, j) for i in range(3) for j in range(3) if i != j]
    assert mode_seeking(Z, FAKE).item() == pytest.approx(by_hand(every), rel=1e-9)


def test_mode_seeking_counts_only_pairs_of_one_class():
    classes = torch.tensor([4, 4, 7])
    assert mode_seeking(Z, FAKE, classes).item() == pytest.approx(by_hand([(0, 1), (1, 0)]), rel=1e-9)
    moved = FAKE.clone()
    moved[2] = 0.9  # the lone sample of class 7 is in no pair
    assert mode_seeking(Z, moved, classes).item() == mode_seeking(Z, FAKE, classes).item()
    assert mode_seeking(Z, FAKE, torch.tensor([0, 1, 2])).item() == 0.0


def test_mode_seeking_gradient_pushes_alike_samples_apart():
    fake = FAKE.clone().requires_grad_(True)
    mode_seeking(Z, fake).backward()
    step = -fake.grad  # the direction gradient descent moves the samples
    # Samples 0 and 2, the closest pair for their noise (1/3 apart for noise 2 apart), move apart.
    assert ((FAKE[0] + 0.01 * step[0]) - (FAKE[2] + 0.01 * step[2])).abs().sum() > (FAKE[0] - FAKE[2]).abs().sum()


@pytest.mark.parametrize("kind", ["conv_batchnorm", "mlp_batchnorm", "plain"])
def test_generator_step_adds_the_term_and_keeps_the_discriminator_frozen(kind):
    g, d, latent_dim, _ = make_pair(kind)
    loss = LOSSES["nonsaturating"]
    classes = torch.arange(BATCH) % 2
    plain_g = copy.deepcopy(g)
    plain = generator_step(plain_g, copy.deepcopy(d), torch.optim.SGD(plain_g.parameters(), lr=0.1), loss, NoiseSampler(latent_dim, seed=3), BATCH)

    d_before, fired_handles = state_copy(d), count_grad_hooks(d)
    with torch.no_grad():
        z = NoiseSampler(latent_dim, seed=3)(BATCH)
        term = mode_seeking(z, copy.deepcopy(g)(z).float(), classes)
    result = generator_step(g, d, torch.optim.SGD(g.parameters(), lr=0.1), loss, NoiseSampler(latent_dim, seed=3), BATCH, diversity=0.5, classes=classes)

    fired, handles = fired_handles
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(result.loss, plain.loss + 0.5 * term.float(), rtol=1e-5, atol=1e-6)
    assert_bit_identical(d, d_before)
    assert fired == [] and all(p.grad is None for p in d.parameters())
    moved = [name for (name, p), q in zip(g.named_parameters(), plain_g.parameters()) if not torch.equal(p, q)]
    assert moved, "the term changed no generator weight"


def test_a_conditional_run_trains_with_diversity_and_a_negative_weight_is_refused(tmp_path, capsys):
    assert main(digits_args(tmp_path / "run", 10, "conditional=true", "diversity=0.5", "diversity_kimg=0.32")) == 0
    assert main(digits_args(tmp_path / "bad", 10, "diversity=-1")) == 2
    err = capsys.readouterr().err
    assert "diversity=-1" in err and "a number from 0 to" in err
    assert main(digits_args(tmp_path / "bad_kimg", 10, "diversity=0.5", "diversity_kimg=-2")) == 2
    err = capsys.readouterr().err
    assert "diversity_kimg=-2" in err and "a number from 0 to" in err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad_kimg").exists()


def test_diversity_kimg_stops_the_term_at_that_many_images():
    # 1.024 thousand images in batches of 64: steps 0-15 train with the term, step 16 on without it.
    config = make_config({"diversity": 0.03, "diversity_kimg": 1.024, "batch_size": 64})
    assert [diversity_weight(config, step) for step in range(20)] == [0.03] * 16 + [0.0] * 4
    assert diversity_weight(dataclasses.replace(config, diversity_kimg=0.0), 10**6) == 0.03  # 0: never stops


def test_a_run_whose_term_stops_trains_as_one_switched_off_by_hand(tmp_path):
    """diversity_kimg stops the term and nothing else: the run matches one whose weight is set to 0 at
    that step, and differs from one that keeps the term."""
    torch.set_num_threads(1)
    dataset = load_dataset("ring8")

    def trainer(**keys):
        values = {"data": "ring8", "out": str(tmp_path), "steps": 6, "batch_size": 8, "g_width": 4, "d_width": 4, "diversity": 0.5, **keys}
        return Trainer(resolve(make_config(values), dataset.kind, dataset.sample_shape, "ring8"), dataset, torch.device("cpu"), say=lambda *_: None)

    stopping, by_hand, kept = trainer(diversity_kimg=0.024), trainer(), trainer()  # 24 images: 3 steps of 8
    for step in range(6):
        if step == 3:
            by_hand.config = dataclasses.replace(by_hand.config, diversity=0.0)
        for run in (stopping, by_hand, kept):
            run.iteration(skip_nonfinite=False)
        if step == 2:
            assert_bit_identical(stopping.generator, state_copy(kept.generator))
    assert_bit_identical(stopping.generator, state_copy(by_hand.generator))
    assert_bit_identical(stopping.discriminator, state_copy(by_hand.discriminator))
    assert any(not torch.equal(p, q) for p, q in zip(stopping.generator.parameters(), kept.generator.parameters()))
