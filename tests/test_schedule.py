"""Schedules inside a run: the learning rates (constant, then a linear fall over the final
`lr_decay` fraction) and lazy R1 (the penalty every `r1_every` discriminator steps)."""

from __future__ import annotations

import pytest
import torch

from ganforge.config import make_config, resolve
from ganforge.data import load_dataset
from ganforge.training.state import Trainer, lr_factor


def test_lr_factor_is_one_then_falls_linearly_to_one_step_short_of_zero():
    steps, decay = 100, 0.4
    factors = [lr_factor(step, steps, decay) for step in range(steps)]
    assert factors[:60] == [1.0] * 60
    assert factors[60:] == pytest.approx([(steps - s) / 40 for s in range(60, steps)])
    assert factors[-1] == pytest.approx(1 / 40) and factors[-1] > 0
    assert all(a > b for a, b in zip(factors[60:], factors[61:]))


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_lr_factor_edges(decay):
    factors = [lr_factor(step, 10, decay) for step in range(10)]
    assert factors == ([1.0] * 10 if decay == 0 else pytest.approx([(10 - s) / 10 for s in range(10)]))


def test_trainer_sets_both_learning_rates_from_the_schedule(tmp_path):
    torch.set_num_threads(1)
    dataset = load_dataset("ring8")
    config = resolve(
        make_config({"data": "ring8", "out": str(tmp_path), "steps": 10, "lr_decay": 0.5, "lr_g": 0.01, "lr_d": 0.02, "batch_size": 8,
                     "g_width": 4, "d_width": 4}),
        dataset.kind, dataset.sample_shape, "ring8",
    )
    trainer = Trainer(config, dataset, torch.device("cpu"), say=lambda *_: None)
    seen = []
    for _ in range(10):
        trainer.iteration(skip_nonfinite=False)
        seen.append((trainer.g_optimizer.param_groups[0]["lr"], trainer.d_optimizer.param_groups[0]["lr"]))
    expected = [lr_factor(step, 10, 0.5) for step in range(10)]
    assert [g for g, _ in seen] == pytest.approx([0.01 * f for f in expected])
    assert [d for _, d in seen] == pytest.approx([0.02 * f for f in expected])
    assert seen[5] == pytest.approx((0.01, 0.02)) and seen[6][0] < 0.01


def test_lr_decay_outside_zero_one_is_a_clear_error():
    from ganforge.errors import GanforgeError

    with pytest.raises(GanforgeError, match=r"lr_decay=1.5 is invalid: expected a fraction in \[0, 1\]"):
        make_config({"lr_decay": 1.5})


def test_a_decaying_run_restored_mid_decay_continues_exactly(tmp_path):
    """The schedule follows the restored step: 6 + 6 iterations with a restore between equal 12 straight."""
    torch.set_num_threads(1)
    dataset = load_dataset("ring8")
    config = resolve(
        make_config({"data": "ring8", "out": str(tmp_path), "steps": 12, "lr_decay": 0.75, "batch_size": 8, "g_width": 4, "d_width": 4}),
        dataset.kind, dataset.sample_shape, "ring8",
    )
    straight = Trainer(config, dataset, torch.device("cpu"), say=lambda *_: None)
    for _ in range(12):
        straight.iteration(skip_nonfinite=False)
    first = Trainer(config, dataset, torch.device("cpu"), say=lambda *_: None)
    for _ in range(6):
        first.iteration(skip_nonfinite=False)
    second = Trainer(config, dataset, torch.device("cpu"), say=lambda *_: None)
    second.load_state_dict(first.state_dict(), say=lambda *_: None)
    for _ in range(6):
        second.iteration(skip_nonfinite=False)
    assert second.g_optimizer.param_groups[0]["lr"] == straight.g_optimizer.param_groups[0]["lr"] < config.lr_g / 4
    for a, b in zip(straight.generator.state_dict().values(), second.generator.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("r1_every", "d_steps"), [(1, 1), (3, 1), (4, 2)])
def test_lazy_r1_applies_the_penalty_every_nth_discriminator_step_n_times_as_strong(tmp_path, monkeypatch, r1_every, d_steps):
    import ganforge.training.state as trainer_module

    torch.set_num_threads(1)
    dataset = load_dataset("ring8")
    config = resolve(
        make_config({"data": "ring8", "out": str(tmp_path), "steps": 12, "r1_gamma": 0.5, "r1_every": r1_every,
                     "d_steps_per_g_step": d_steps, "batch_size": 8, "g_width": 4, "d_width": 4}),
        dataset.kind, dataset.sample_shape, "ring8",
    )
    trainer = Trainer(config, dataset, torch.device("cpu"), say=lambda *_: None)
    weights = []
    real_step = trainer_module.discriminator_step

    def spy(*args, **kwargs):
        weights.append(args[7])  # r1_gamma, after gp_weight
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "discriminator_step", spy)
    for _ in range(6):
        trainer.iteration(skip_nonfinite=False)
    assert weights == [0.5 * r1_every if i % r1_every == 0 else 0.0 for i in range(6 * d_steps)]
