"""The two GAN steps (ganforge.steps).

Invariants:
- generator_step: the discriminator is bit-identical afterwards (parameters AND buffers such
  as BatchNorm running statistics), no gradient is computed or stored for it, its
  requires_grad flags are restored, and the generator's update is exactly what plain
  autograd + the same optimizer computes;
- discriminator_step: the same for the generator, and D's update (with gradient penalty and
  R1 penalty when asked) matches a manual computation.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ganforge import LOSSES, NoiseSampler, discriminator_step, frozen, generator_step
from ganforge.nets import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator

BATCH = 8


class PlainGenerator(nn.Module):
    """A user-defined generator: two linear layers, no ganforge code."""

    def __init__(self, latent_dim: int = 3, dim: int = 2) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(latent_dim, 6), nn.Linear(6, dim)

    def forward(self, z):
        return self.fc2(torch.tanh(self.fc1(z)))


class PlainDiscriminator(nn.Module):
    """A user-defined discriminator whose forward pass mutates its own buffers.

    `calls` counts forward passes and `seen` keeps a running mean of its inputs, like
    BatchNorm does; `temperature` is a parameter the user froze (requires_grad=False).
    """

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 6), nn.Linear(6, 1)
        self.temperature = nn.Parameter(torch.tensor(1.5), requires_grad=False)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("seen", torch.zeros(dim))

    def forward(self, x):
        with torch.no_grad():
            self.calls += 1
            self.seen.mul_(0.9).add_(0.1 * x.mean(0))
        return self.fc2(torch.relu(self.fc1(x))).squeeze(1) / self.temperature


def make_pair(kind: str):
    """(generator, discriminator, latent_dim, real batch) for one kind of network pair."""
    torch.manual_seed(0)
    if kind == "conv_batchnorm":
        g, d = ConvGenerator(4, 1, 8, width=4, norm="batch"), ConvDiscriminator(1, 8, width=4, norm="batch")
        return g, d, 4, torch.rand(BATCH, 1, 8, 8) * 2 - 1
    if kind == "conv_batchnorm_pack2_extra":
        g = ConvGenerator(4, 3, 8, width=4, extra_layers=1, norm="batch")
        d = ConvDiscriminator(3, 8, width=4, extra_layers=2, norm="batch", pack=2)
        return g, d, 4, torch.rand(BATCH, 3, 8, 8) * 2 - 1
    if kind == "mlp_batchnorm":
        g, d = MLPGenerator(3, [2], width=8, depth=2, norm="batch"), MLPDiscriminator([2], width=8, depth=2, norm="batch")
        return g, d, 3, torch.randn(BATCH, 2)
    if kind == "conv_spectral_pack2":  # power-iteration vectors: buffers updated on every training forward
        g, d = ConvGenerator(4, 1, 8, width=4, norm="batch"), ConvDiscriminator(1, 8, width=4, norm="spectral", pack=2)
        return g, d, 4, torch.rand(BATCH, 1, 8, 8) * 2 - 1
    if kind == "mlp_spectral":
        g, d = MLPGenerator(3, [2], width=8, depth=2), MLPDiscriminator([2], width=8, depth=2, norm="spectral")
        return g, d, 3, torch.randn(BATCH, 2)
    if kind == "conv_batchnorm_pack2_mbstd":  # D's output for a row depends on the other rows of its group
        g = ConvGenerator(4, 1, 8, width=4, norm="batch")
        d = ConvDiscriminator(1, 8, width=4, norm="batch", pack=2, mbstd=2)
        return g, d, 4, torch.rand(BATCH, 1, 8, 8) * 2 - 1
    if kind == "mlp_mbstd":
        g, d = MLPGenerator(3, [2], width=8, depth=2), MLPDiscriminator([2], width=8, depth=2, mbstd=4)
        return g, d, 3, torch.randn(BATCH, 2)
    if kind == "plain":
        return PlainGenerator(), PlainDiscriminator(), 3, torch.randn(BATCH, 2)
    raise ValueError(kind)


PAIRS = [
    "conv_batchnorm", "conv_batchnorm_pack2_extra", "mlp_batchnorm", "conv_spectral_pack2", "mlp_spectral",
    "conv_batchnorm_pack2_mbstd", "mlp_mbstd", "plain",
]
OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1),
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01, betas=(0.5, 0.999)),
}


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, cloned."""
    return {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()}


def assert_bit_identical(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict(keep_vars=True)
    assert after.keys() == before.keys()
    for name, value in after.items():
        assert torch.equal(value.detach(), before[name]), f"{name} changed"


def count_grad_hooks(module: nn.Module) -> tuple[list[str], list]:
    """Registers a hook on every trainable parameter that records when a gradient is computed for it."""
    fired: list[str] = []
    handles = [
        p.register_hook(lambda grad, name=name: fired.append(name))
        for name, p in module.named_parameters()
        if p.requires_grad
    ]
    return fired, handles


def requires_grad_flags(module: nn.Module) -> dict[str, bool]:
    return {name: p.requires_grad for name, p in module.named_parameters()}


# --- generator step -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PAIRS)
def test_generator_step_leaves_discriminator_bit_identical_and_gradient_free(kind):
    g, d, latent_dim, _ = make_pair(kind)
    d_before, g_before, flags = state_copy(d), state_copy(g), requires_grad_flags(d)
    fired, handles = count_grad_hooks(d)
    optimizer = torch.optim.Adam(g.parameters(), lr=0.01)

    generator_step(g, d, optimizer, LOSSES["nonsaturating"], NoiseSampler(latent_dim, seed=1), BATCH)

    for h in handles:
        h.remove()
    assert_bit_identical(d, d_before)  # parameters and buffers (running stats, counters)
    assert fired == [], f"gradients were computed for discriminator parameters {fired}"
    assert all(p.grad is None for p in d.parameters())
    assert requires_grad_flags(d) == flags  # restored: trainable ones back on, user-frozen ones still off
    assert d.training, "frozen() must not switch the discriminator's mode"
    changed = [name for name, p in g.named_parameters() if not torch.equal(p.detach(), g_before[name])]
    assert len(changed) == len(list(g.parameters())), f"only {changed} of the generator's parameters moved"
    assert all(p.grad is not None for p in g.parameters())


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
@pytest.mark.parametrize("kind", PAIRS)
def test_generator_step_equals_plain_autograd_update(kind, optimizer_name):
    """Two consecutive steps equal: z from an identically seeded sampler, grad of loss(D(G(z))) w.r.t. G only, same optimizer."""
    g, d, latent_dim, _ = make_pair(kind)
    loss = LOSSES["nonsaturating"]
    g_ref, d_ref = copy.deepcopy(g), copy.deepcopy(d)
    optimizer = OPTIMIZERS[optimizer_name](g.parameters())
    ref_optimizer = OPTIMIZERS[optimizer_name](g_ref.parameters())
    noise, ref_noise = NoiseSampler(latent_dim, seed=5), NoiseSampler(latent_dim, seed=5)
    ref_params = list(g_ref.parameters())

    for _ in range(2):
        result = generator_step(g, d, optimizer, loss, noise, BATCH)

        z = ref_noise(BATCH)
        d_buffers = [(b, b.clone()) for b in d_ref.buffers()]
        fake_logits = d_ref(g_ref(z))
        ref_loss = loss.generator(fake_logits)
        grads = torch.autograd.grad(ref_loss, ref_params)
        for buffer, saved in d_buffers:  # D is frozen: its buffers (running stats, spectral-norm vectors) stay as they were
            buffer.copy_(saved)
        for p, grad in zip(ref_params, grads):
            p.grad = grad
        ref_optimizer.step()

        torch.testing.assert_close(result.loss, ref_loss.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(result.fake_logits, fake_logits.detach(), rtol=1e-6, atol=1e-7)
        assert result.real_logits is None
        assert not result.loss.requires_grad and result.loss.dim() == 0
        for (name, value), ref_value in zip(g.state_dict().items(), g_ref.state_dict().values()):
            torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-6, msg=f"generator {name} differs")
    assert all(p.grad is None for p in d_ref.parameters()), "the reference itself must not touch D"


def test_generator_step_keeps_existing_discriminator_gradients():
    """Gradients left on D by its own step are neither added to nor cleared by a generator step."""
    g, d, latent_dim, real = make_pair("mlp_batchnorm")
    noise = NoiseSampler(latent_dim, seed=2)
    discriminator_step(g, d, torch.optim.SGD(d.parameters(), lr=0.1), LOSSES["hinge"], noise, real)
    grads_before = {name: p.grad.clone() for name, p in d.named_parameters()}
    generator_step(g, d, torch.optim.SGD(g.parameters(), lr=0.1), LOSSES["hinge"], noise, BATCH)
    for name, p in d.named_parameters():
        assert torch.equal(p.grad, grads_before[name]), name


def test_generator_step_keeps_discriminator_in_eval_mode_when_it_was():
    g, d, latent_dim, _ = make_pair("conv_batchnorm")
    d.eval()
    before = state_copy(d)
    generator_step(g, d, torch.optim.SGD(g.parameters(), lr=0.1), LOSSES["minimax"], NoiseSampler(latent_dim), BATCH)
    assert not d.training
    assert_bit_identical(d, before)


def test_frozen_restores_flags_and_buffers_when_the_block_raises():
    d = PlainDiscriminator()
    before, flags = state_copy(d), requires_grad_flags(d)
    with pytest.raises(RuntimeError, match="boom"), frozen(d):
        assert not any(p.requires_grad for p in d.parameters())
        d(torch.randn(4, 2))  # mutates the buffers
        assert d.calls.item() == 1
        raise RuntimeError("boom")
    assert requires_grad_flags(d) == flags == {"fc1.weight": True, "fc1.bias": True, "fc2.weight": True,
                                               "fc2.bias": True, "temperature": False}
    assert_bit_identical(d, before)


# --- discriminator step ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", PAIRS)
def test_discriminator_step_leaves_generator_bit_identical_and_gradient_free(kind):
    g, d, latent_dim, real = make_pair(kind)
    g_before, d_before = state_copy(g), state_copy(d)
    fired, handles = count_grad_hooks(g)
    optimizer = torch.optim.Adam(d.parameters(), lr=0.01)

    result = discriminator_step(g, d, optimizer, LOSSES["nonsaturating"], NoiseSampler(latent_dim, seed=1), real)

    for h in handles:
        h.remove()
    assert_bit_identical(g, g_before)  # including G's BatchNorm running statistics
    assert fired == []
    assert all(p.grad is None for p in g.parameters())
    assert all(p.requires_grad for p in g.parameters())
    trainable = [name for name, p in d.named_parameters() if p.requires_grad]
    changed = [name for name in trainable if not torch.equal(d.state_dict()[name], d_before[name])]
    assert changed == trainable, "every trainable discriminator parameter should move"
    pack = getattr(d, "pack", 1)
    assert result.real_logits.shape == result.fake_logits.shape == (BATCH // pack,)
    assert not result.loss.requires_grad


@pytest.mark.parametrize("kind", PAIRS)
def test_discriminator_step_equals_plain_autograd_update(kind):
    g, d, latent_dim, real = make_pair(kind)
    loss = LOSSES["least_squares"]
    g_ref, d_ref = copy.deepcopy(g), copy.deepcopy(d)
    optimizer = torch.optim.SGD(d.parameters(), lr=0.1, momentum=0.5)
    ref_optimizer = torch.optim.SGD([p for p in d_ref.parameters() if p.requires_grad], lr=0.1, momentum=0.5)
    noise, ref_noise = NoiseSampler(latent_dim, seed=9), NoiseSampler(latent_dim, seed=9)

    for _ in range(2):
        result = discriminator_step(g, d, optimizer, loss, noise, real)

        with torch.no_grad():
            fake = g_ref(ref_noise(BATCH))
        real_logits, fake_logits = d_ref(real), d_ref(fake)
        ref_loss = loss.discriminator(real_logits, fake_logits)
        params = [p for p in d_ref.parameters() if p.requires_grad]
        for p, grad in zip(params, torch.autograd.grad(ref_loss, params)):
            p.grad = grad
        ref_optimizer.step()

        torch.testing.assert_close(result.loss, ref_loss.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(result.real_logits, real_logits.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(result.fake_logits, fake_logits.detach(), rtol=1e-6, atol=1e-7)
        for (name, value), ref_value in zip(d.state_dict().items(), d_ref.state_dict().values()):
            torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-6, msg=f"discriminator {name} differs")


class LinearCritic(nn.Module):
    """D(x) = w . x + b: its input gradient is w for every sample, so both penalties have closed forms."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 1)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.6, -1.7]]))
            self.fc.bias.fill_(0.3)

    def forward(self, x):
        return self.fc(x).squeeze(1)


def test_discriminator_step_penalties_match_closed_form_on_a_linear_critic():
    """With D(x) = w.x + b: GP = (|w| - 1)^2 and R1 = |w|^2; the loss and the SGD update include both."""
    gp_weight, r1_gamma, lr = 10.0, 4.0, 0.01
    loss = LOSSES["wasserstein"]
    torch.manual_seed(3)
    g, d, real = PlainGenerator(), LinearCritic(), torch.randn(BATCH, 2)
    fake = g(NoiseSampler(3, seed=4)(BATCH)).detach()
    w, b = d.fc.weight.detach().clone().requires_grad_(True), d.fc.bias.detach().clone().requires_grad_(True)

    result = discriminator_step(g, d, torch.optim.SGD(d.parameters(), lr=lr), loss, NoiseSampler(3, seed=4), real,
                                gp_weight=gp_weight, r1_gamma=r1_gamma)

    norm = w.norm()
    base = (fake @ w.T + b).mean() - (real @ w.T + b).mean()
    expected = base + gp_weight * (norm - 1) ** 2 + 0.5 * r1_gamma * norm**2
    norm_value = float(torch.tensor([0.6, -1.7]).norm())
    penalty = (expected - base).item()
    assert penalty == pytest.approx(10 * (norm_value - 1) ** 2 + 2 * norm_value**2, rel=1e-5)  # 14.13... by hand
    torch.testing.assert_close(result.loss, expected.detach())
    grad_w, grad_b = torch.autograd.grad(expected, [w, b])
    torch.testing.assert_close(d.fc.weight.detach(), w.detach() - lr * grad_w)
    torch.testing.assert_close(d.fc.bias.detach(), b.detach() - lr * grad_b)
    # Without penalties the weight update differs: the penalties really train D.
    plain_d = LinearCritic()
    discriminator_step(g, plain_d, torch.optim.SGD(plain_d.parameters(), lr=lr), loss, NoiseSampler(3, seed=4), real)
    assert not torch.allclose(plain_d.fc.weight, d.fc.weight)


@pytest.mark.parametrize("kind", ["mlp_batchnorm", "conv_batchnorm"])
def test_discriminator_step_with_penalties_matches_manual_computation(kind):
    """GP at seeded random interpolates plus R1 on real data, each differentiated with create_graph."""
    gp_weight, r1_gamma, lr = 5.0, 2.0, 0.05
    loss = LOSSES["hinge"]
    g, d, latent_dim, real = make_pair(kind)
    g_ref, d_ref = copy.deepcopy(g), copy.deepcopy(d)

    torch.manual_seed(123)  # gradient_penalty draws its interpolation weights from the global RNG
    result = discriminator_step(g, d, torch.optim.SGD(d.parameters(), lr=lr), loss, NoiseSampler(latent_dim, seed=1), real,
                                gp_weight=gp_weight, r1_gamma=r1_gamma)

    torch.manual_seed(123)
    with torch.no_grad():
        fake = g_ref(NoiseSampler(latent_dim, seed=1)(BATCH))
    base = loss.discriminator(d_ref(real), d_ref(fake))
    alpha = torch.rand((BATCH,) + (1,) * (real.dim() - 1))
    x_hat = (fake + alpha * (real - fake)).requires_grad_(True)
    (grad_hat,) = torch.autograd.grad(d_ref(x_hat).sum(), x_hat, create_graph=True)
    gp = ((grad_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    x_real = real.clone().requires_grad_(True)
    (grad_real,) = torch.autograd.grad(d_ref(x_real).sum(), x_real, create_graph=True)
    r1 = grad_real.flatten(1).pow(2).sum(1).mean()
    expected = base + gp_weight * gp + 0.5 * r1_gamma * r1
    assert gp.item() > 0.01 and r1.item() > 1e-4, "the penalties must matter for this check to mean anything"

    torch.testing.assert_close(result.loss, expected.detach(), rtol=1e-5, atol=1e-6)
    params = list(d_ref.parameters())
    for p, grad in zip(params, torch.autograd.grad(expected, params)):
        p.data.sub_(lr * grad)
    for (name, value), ref_value in zip(d.named_parameters(), d_ref.parameters()):
        torch.testing.assert_close(value.detach(), ref_value.detach(), rtol=1e-4, atol=1e-6, msg=f"discriminator {name} differs")
