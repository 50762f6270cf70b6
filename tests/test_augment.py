"""DiffAugment for the discriminator: the operations, their gradients, the policy key, the adaptive probability (ADA),
and training with them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ganforge.augment import ADA_INTERVAL, ADA_KIMG, AdaptiveProbability, AugmentedDiscriminator, augment, color, cutout, parse_policy, translation
from ganforge.checkpoint import list_checkpoints, load_checkpoint
from ganforge.config import make_config
from ganforge.errors import GanforgeError
from ganforge.losses import LOSSES
from ganforge.nets import ConvDiscriminator, ConvGenerator
from ganforge.noise import NoiseSampler
from ganforge.report import write_report
from ganforge.steps import generator_step
from helpers import TINY_CONV, digits_args


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_policy_is_a_comma_list_of_known_names_or_none():
    assert parse_policy("translation,cutout,color") == ("translation", "cutout", "color")
    assert parse_policy(" Color , translation ") == ("color", "translation")
    assert parse_policy("none") == ()
    with pytest.raises(GanforgeError, match="augment='flip' is invalid: expected none or a comma list of translation, cutout, color"):
        parse_policy("flip")


def test_the_augment_key_keeps_none_as_a_value_and_normalises_lists():
    assert make_config({"augment": "none"}).augment == "none"  # not auto
    assert make_config({"augment": "Cutout, color"}).augment == "cutout,color"
    assert make_config({"augment": "auto"}).augment is None
    with pytest.raises(GanforgeError, match="augment='rotate'"):
        make_config({"augment": "rotate"})


def test_translation_shifts_each_sample_by_whole_pixels_with_zeros_coming_in():
    x = torch.arange(1, 4 * 2 * 16 * 16 + 1, dtype=torch.float64).view(4, 2, 16, 16)
    out = translation(x, rng(3))
    replay = rng(3)  # the same draws, in the same order
    dy = torch.randint(-2, 3, (4, 1, 1), generator=replay).flatten().tolist()
    dx = torch.randint(-2, 3, (4, 1, 1), generator=replay).flatten().tolist()
    assert any(dy) or any(dx)
    for b in range(4):
        expected = torch.zeros(2, 16, 16, dtype=torch.float64)
        for i in range(16):
            for j in range(16):
                if 0 <= i + dy[b] < 16 and 0 <= j + dx[b] < 16:
                    expected[:, i, j] = x[b, :, i + dy[b], j + dx[b]]
        assert torch.equal(out[b], expected)


def test_cutout_zeroes_one_square_of_half_the_side_at_most():
    out = cutout(torch.ones(64, 1, 8, 8), rng(1))
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, clipped at the edges to 2x2 at least
    assert ((out == 0) | (out == 1)).all()


def test_color_changes_brightness_saturation_and_contrast_per_sample():
    x = torch.rand(8, 3, 4, 4) * 2 - 1
    out = color(x, rng(2))
    assert out.shape == x.shape and not torch.allclose(out, x)
    assert len({round(v, 5) for v in (out - x).mean(dim=(1, 2, 3)).tolist()}) == 8  # a different draw per sample


@pytest.mark.parametrize("name", ["translation", "cutout", "color"])
def test_every_operation_is_differentiable_in_the_image(name):
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    state = rng(4).get_state()

    def fixed(inp: torch.Tensor) -> torch.Tensor:  # the same random parameters on every call
        return augment(inp, (name,), torch.Generator().set_state(state))

    assert torch.autograd.gradcheck(fixed, (x,))


def test_real_and_generated_batches_go_through_the_same_random_process():
    """The parameters a row gets depend on the RNG state, not on the image: from the same state, a real and
    a generated batch are moved and cut out alike, row by row; the next call draws fresh parameters."""
    policy = ("translation", "cutout")
    real, fake = torch.rand(6, 1, 8, 8) + 1, torch.rand(6, 1, 8, 8) + 1  # no zero pixels of their own
    state = rng(5).get_state()
    a = augment(real, policy, torch.Generator().set_state(state))
    b = augment(fake, policy, torch.Generator().set_state(state))
    assert (a == 0).any() and torch.equal(a == 0, b == 0)
    shared = rng(5)
    first, second = augment(real, policy, shared), augment(real, policy, shared)
    assert not torch.equal(first == 0, second == 0)


def test_the_generator_learns_through_an_augmented_discriminator():
    torch.manual_seed(0)
    g, d = ConvGenerator(4, 1, 8, width=4), ConvDiscriminator(1, 8, width=4)
    augmented = AugmentedDiscriminator(d, ("translation", "cutout", "color"), rng(6))
    assert list(augmented.parameters()) == list(d.parameters())
    before = {k: v.clone() for k, v in d.state_dict().items()}
    optimizer = torch.optim.SGD(g.parameters(), lr=0.1)
    generator_step(g, augmented, optimizer, LOSSES["nonsaturating"], NoiseSampler(4, seed=1), 8)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters() if p.dim() > 1)
    assert all(torch.equal(before[k], v) for k, v in d.state_dict().items())


@pytest.mark.parametrize("target", ["0", "0.05"])
def test_an_augmented_run_resumes_bit_identically(cli, tmp_path, target):
    extra = ["--augment", "translation,cutout,color", "--ada_target", target, "--lr_decay", "0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(*digits_args(straight, 10, *extra)).code == 0
    assert cli(*digits_args(split, 5, *extra)).code == 0
    assert cli(*digits_args(split, 10, *extra)).code == 0
    assert (straight / "generator.safetensors").read_bytes() == (split / "generator.safetensors").read_bytes()


# --- the adaptive probability (ADA) ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["translation", "cutout", "color"])
def test_with_probability_one_an_operation_is_the_plain_one_and_with_zero_none(name):
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    state = rng(7).get_state()
    always = augment(x, (name,), torch.Generator().set_state(state))
    assert torch.equal(augment(x, (name,), torch.Generator().set_state(state), torch.tensor(1.0)), always)
    assert torch.equal(augment(x, (name,), torch.Generator().set_state(state), torch.tensor(0.0)), x)


def test_with_a_probability_each_operation_reaches_that_share_of_the_images_differentiably():
    x = (torch.rand(4000, 1, 8, 8) + 1).requires_grad_(True)  # no zero pixels of its own
    out = augment(x, ("cutout",), rng(8), torch.tensor(0.3))
    cut = (out == 0).flatten(1).any(1)
    assert 0.27 < cut.float().mean() < 0.33
    assert torch.equal(out[~cut], x[~cut])
    out.sum().backward()
    assert torch.equal(x.grad[~cut], torch.ones_like(x[~cut]))  # untouched images pass their gradient straight
    assert (x.grad[cut] == 0).any()  # and a cut-out pixel passes none


def test_the_adaptive_probability_follows_the_signal_every_few_steps_within_zero_and_one():
    ada = AdaptiveProbability(0.6, batch_size=5000, paired=False, device=torch.device("cpu"))
    step = 5000 * ADA_INTERVAL / (ADA_KIMG * 1000)
    ones = torch.ones(5), torch.zeros(5)  # every real scored real: signal 1
    for _ in range(ADA_INTERVAL - 1):
        ada.observe(*ones)
    assert float(ada.p) == 0.0  # no adjustment before the interval is complete
    ada.observe(*ones)
    assert float(ada.p) == pytest.approx(step)
    for _ in range(ADA_INTERVAL * 30):
        ada.observe(*ones)
    assert float(ada.p) == 1.0  # at most 1
    mixed = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0]), torch.zeros(5)  # signal 0.2, below the target
    for _ in range(ADA_INTERVAL):
        ada.observe(*mixed)
    assert float(ada.p) == pytest.approx(1.0 - step)
    for _ in range(ADA_INTERVAL * 40):
        ada.observe(*mixed)
    assert float(ada.p) == 0.0  # at least 0


def test_a_relative_loss_reads_the_signal_from_pairs_not_from_the_sign_of_a_logit():
    """A relativistic D scoring every real 1 below zero but above its generated pair separates them completely."""
    real, fake = torch.full((8,), -1.0), torch.full((8,), -3.0)
    for paired, moves in ((True, 1), (False, -1)):
        ada = AdaptiveProbability(0.6, batch_size=8, paired=paired, device=torch.device("cpu"))
        ada.p.fill_(0.5)
        for _ in range(ADA_INTERVAL):
            ada.observe(real, fake)
        assert float(ada.p) == pytest.approx(0.5 + moves * ada.speed)
    assert LOSSES["relativistic"].relative and LOSSES["wasserstein"].relative and not LOSSES["nonsaturating"].relative


def test_the_adaptive_state_round_trips_mid_interval():
    ada = AdaptiveProbability(0.2, batch_size=64, paired=True, device=torch.device("cpu"))
    for _ in range(ADA_INTERVAL + 2):
        ada.observe(torch.ones(64), torch.zeros(64))
    copy = AdaptiveProbability(0.2, batch_size=64, paired=True, device=torch.device("cpu"))
    copy.load_state_dict(ada.state_dict())
    for a in (ada, copy):
        for _ in range(2):
            a.observe(torch.ones(64), -torch.ones(64))
    assert float(ada.p) == float(copy.p) == pytest.approx(2 * ada.speed)


def test_an_adaptive_run_logs_its_probability_and_keeps_it_in_checkpoints(cli, tmp_path):
    run = tmp_path / "ada"
    assert cli(*digits_args(run, 10, "--augment", "translation", "--ada_target", "0.01", "--lr_decay", "0")).code == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [line["augment_p"] for line in lines if "d_loss" in line]
    assert len(logged) == 2 and all(0 <= p <= 1 for p in logged)
    state = load_checkpoint(list_checkpoints(run)[-1])
    assert state["augment_p"]["observed"] == 10 and float(state["augment_p"]["p"]) == logged[-1]
    assert 'data-metric="augment_p"' in write_report([run]).read_text(encoding="utf-8")
    plain = tmp_path / "plain"
    assert cli(*digits_args(plain, 5, "--augment", "translation")).code == 0  # digits: ada_target 0, always augment
    assert all("augment_p" not in json.loads(line) for line in (plain / "metrics.jsonl").read_text().splitlines())
    assert 'data-metric="augment_p"' not in write_report([plain]).read_text(encoding="utf-8")


def test_ada_target_is_a_number_from_zero_to_below_one():
    assert make_config({"ada_target": "0.6"}).ada_target == 0.6
    for bad, shown in (("1", "1.0"), ("-0.1", "-0.1"), ("nan", "'nan'")):
        with pytest.raises(GanforgeError, match=f"ada_target={shown} is invalid"):
            make_config({"ada_target": bad})


def test_a_small_image_set_trains_with_adaptive_augmentation_by_default(cli, tmp_path):
    images = tmp_path / "small.npy"
    np.save(images, np.random.default_rng(0).integers(0, 256, (200, 1, 8, 8), dtype=np.uint8))
    run = tmp_path / "run"
    args = ["train", "--data", str(images), "--steps", "4", "--out", str(run), "--log_every", "2", *TINY_CONV]
    assert cli(*args).code == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["augment"], config["ada_target"]) == ("translation,cutout,color", 0.6)
    assert ["augment_p" in json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] == [True, True]
