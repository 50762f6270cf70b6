"""DiffAugment for the discriminator: the operations, their gradients, the policy key, and training with it."""

from __future__ import annotations

import pytest
import torch

from ganforge.augment import AugmentedDiscriminator, augment, color, cutout, parse_policy, translation
from ganforge.config import make_config
from ganforge.errors import GanforgeError
from ganforge.losses import LOSSES
from ganforge.nets import ConvDiscriminator, ConvGenerator
from ganforge.noise import NoiseSampler
from ganforge.steps import generator_step
from helpers import digits_args


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


def test_an_augmented_run_resumes_bit_identically(cli, tmp_path):
    extra = ["--augment", "translation,cutout,color", "--lr_decay", "0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(*digits_args(straight, 10, *extra)).code == 0
    assert cli(*digits_args(split, 5, *extra)).code == 0
    assert cli(*digits_args(split, 10, *extra)).code == 0
    assert (straight / "generator.safetensors").read_bytes() == (split / "generator.safetensors").read_bytes()
