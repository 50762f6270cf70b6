"""The same invariants on a CUDA device (skipped by default; run with `pytest -m gpu`)."""

from __future__ import annotations

import copy

import pytest
import torch

from ganforge import NoiseSampler, discriminator_step, generator_step, get_loss, load_generator
from ganforge.cli import main
from ganforge.nets import ConvDiscriminator, ConvGenerator, init_weights

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _players():
    torch.manual_seed(0)
    generator, discriminator = ConvGenerator(16, 3, 32, width=16), ConvDiscriminator(3, 32, width=16)
    init_weights(generator)
    init_weights(discriminator)
    return generator.cuda(), discriminator.cuda()


def test_generator_step_on_cuda_freezes_discriminator_and_matches_autograd():
    generator, discriminator = _players()
    reference_g, reference_d = copy.deepcopy(generator), copy.deepcopy(discriminator)
    d_before = {k: v.clone() for k, v in discriminator.state_dict().items()}
    g_opt = torch.optim.SGD(generator.parameters(), lr=0.1)
    loss = get_loss("nonsaturating")
    noise = NoiseSampler(16, device="cuda", seed=3)
    z = NoiseSampler(16, device="cuda", seed=3).sample(32)

    generator_step(generator, discriminator, g_opt, loss, noise, 32)

    for key, value in discriminator.state_dict().items():
        assert torch.equal(value, d_before[key]), key
    assert all(p.grad is None for p in discriminator.parameters())
    params = list(reference_g.parameters())
    grads = torch.autograd.grad(loss.generator(reference_d(reference_g(z))), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= 0.1 * g
    # On a GPU, TF32 convolutions (10-bit mantissa) and cuDNN's choice of algorithm differ between the
    # step and the reference by a few 1e-6 here (seen: 2.3e-6); a wrong update differs by lr * grad.
    for p, q in zip(generator.parameters(), params):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=2e-5)


def test_discriminator_step_on_cuda_leaves_generator_unchanged():
    generator, discriminator = _players()
    g_before = {k: v.clone() for k, v in generator.state_dict().items()}
    d_opt = torch.optim.Adam(discriminator.parameters(), 2e-4)
    real = torch.rand(32, 3, 32, 32, device="cuda") * 2 - 1
    discriminator_step(generator, discriminator, d_opt, get_loss("hinge"), NoiseSampler(16, device="cuda"), real, r1_gamma=1.0)
    for key, value in generator.state_dict().items():
        assert torch.equal(value, g_before[key]), key
    assert all(p.grad is None for p in generator.parameters())


def test_train_on_cuda_then_resume_and_sample_on_cpu(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", "digits", "--out", str(out), "--quiet", "--batch_size", "32", "--g_width", "8", "--d_width", "8"]
    assert main([*args, "--steps", "20", "--device", "cuda", "--checkpoint_every", "10"]) == 0
    assert main([*args, "--steps", "30", "--device", "cpu"]) == 0
    samples = load_generator(out).sample(5)
    assert samples.shape == (5, 1, 8, 8)
    assert 0.0 <= samples.min() and samples.max() <= 1.0
