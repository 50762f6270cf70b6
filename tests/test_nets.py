"""Generator and discriminator networks: output shapes, PacGAN packing, rebuilding from .config, validation."""

from __future__ import annotations

import json

import pytest
import torch

from ganforge.errors import GanforgeError
from ganforge.nets import (
    ConvDiscriminator,
    ConvGenerator,
    LatentProjection,
    MinibatchStd,
    MLPDiscriminator,
    MLPGenerator,
    build_network,
    conv_layout,
    count_parameters,
    init_weights,
)


@pytest.mark.parametrize(
    ("resolution", "layout"), [(8, (2, 2)), (16, (4, 2)), (28, (7, 2)), (32, (4, 3)), (64, (4, 4))]
)
def test_conv_layout_documented_examples(resolution, layout):
    assert conv_layout(resolution) == layout


@pytest.mark.parametrize("resolution", [4, 6, 8, 10, 12, 14, 16, 24, 28, 32, 48, 64, 128])
def test_conv_layout_factorises_the_resolution(resolution):
    base, upsamplings = conv_layout(resolution)
    assert base * 2**upsamplings == resolution
    assert 2 <= base <= 8


@pytest.mark.parametrize("resolution", [9, 11, 3, 0, 8.0, "8"])
def test_conv_layout_rejects_unsupported_sizes(resolution):
    with pytest.raises(GanforgeError, match="image_size="):
        conv_layout(resolution)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [8, 16, 28, 32, 64])
def test_conv_pair_shapes(resolution, channels):
    torch.manual_seed(0)
    g = ConvGenerator(5, channels, resolution, width=4)
    d = ConvDiscriminator(channels, resolution, width=4)
    images = g(torch.randn(3, 5))
    assert images.shape == (3, channels, resolution, resolution)
    assert images.abs().max() <= 1, "tanh output"
    assert d(images).shape == (3,)


@pytest.mark.parametrize("extra_layers", [1, 2])
def test_conv_pair_shapes_with_extra_layers(extra_layers):
    g = ConvGenerator(5, 3, 16, width=4, extra_layers=extra_layers, norm="none")
    d = ConvDiscriminator(3, 16, width=4, extra_layers=extra_layers, norm="none")
    images = g(torch.randn(2, 5))
    assert images.shape == (2, 3, 16, 16)
    assert d(images).shape == (2,)


@pytest.mark.parametrize("resolution", [5, 7, 9, 18, 36])
def test_conv_layout_refuses_sizes_without_a_small_base(resolution):
    """Odd sizes (no stride-2 layer possible) and bases above 8 are refused with the size in the message."""
    with pytest.raises(GanforgeError, match=f"image_size={resolution} "):
        conv_layout(resolution)


def test_dcgan_generator_at_64_has_the_dcgan_layout():
    """Resolution 64, width 64: 100 -> 512x4x4 -> 256x8x8 -> 128x16x16 -> 64x32x32 -> 3x64x64."""
    g = ConvGenerator(100, 3, 64, width=64)
    convs = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(100, 512), (512, 256), (256, 128), (128, 64), (64, 3)]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("bias", [False, True])
def test_latent_projection_is_the_transposed_convolution(layout, bias):
    """The first layer's matrix product gives the transposed convolution's output and gradients, in fp32
    and under bf16 autocast, and keeps the weight's memory format."""
    torch.manual_seed(0)
    layer = LatentProjection(10, 6, 7, bias=bias).to(memory_format=layout)
    if bias:
        torch.nn.init.normal_(layer.bias)
    z = torch.randn(5, 10, 1, 1)

    def both(z):
        zs = [z.clone().requires_grad_(True) for _ in range(2)]
        outs = [layer(zs[0]), torch.nn.functional.conv_transpose2d(zs[1], layer.weight, layer.bias)]
        grads = [torch.autograd.grad((o.float() ** 2).sum(), (x, layer.weight)) for o, x in zip(outs, zs)]
        return outs, grads

    (ours, reference), (our_grads, reference_grads) = both(z)
    torch.testing.assert_close(ours, reference)
    assert ours.is_contiguous(memory_format=layout)
    for a, b in zip(our_grads, reference_grads):
        torch.testing.assert_close(a, b)
    with torch.autocast("cpu", torch.bfloat16):
        (ours, reference), _ = both(z)
    assert ours.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), reference.float(), rtol=2e-2, atol=2e-2)
    larger = torch.randn(2, 10, 3, 3)  # not a latent vector: the convolution itself
    torch.testing.assert_close(layer(larger), torch.nn.functional.conv_transpose2d(larger, layer.weight, layer.bias))


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_mlp_pair_shapes(norm):
    g = MLPGenerator(3, [5], width=8, depth=2, norm=norm)
    d = MLPDiscriminator([5], width=8, depth=2, norm=norm)
    x = g(torch.randn(6, 3))
    assert x.shape == (6, 5)
    assert d(x).shape == (6,)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in g.modules()) == (2 if norm == "batch" else 0)


def test_mlp_pair_on_image_shaped_data():
    """arch=mlp on images: samples come out as (batch, c, h, w), bounded by tanh; D flattens them."""
    g = MLPGenerator(4, [3, 8, 8], width=8, depth=1, output="tanh")
    d = MLPDiscriminator([3, 8, 8], width=8, depth=1, pack=2)
    images = g(torch.randn(6, 4) * 100)
    assert images.shape == (6, 3, 8, 8)
    assert images.abs().max() <= 1 and images.abs().max() > 0.9
    assert d(images).shape == (3,)
    linear = MLPGenerator(4, [2], width=8, depth=1)
    assert linear(torch.randn(50, 4) * 100).abs().max() > 1, "vector output is not squashed"


def test_mlp_pack_judges_consecutive_samples_jointly():
    """pack=2: logit i sees exactly samples 2i and 2i+1, concatenated."""
    torch.manual_seed(0)
    d = MLPDiscriminator([3], width=8, depth=2, pack=2).eval()
    x = torch.randn(6, 3)
    logits = d(x)
    assert logits.shape == (3,)
    assert torch.allclose(logits, d.net(x.reshape(3, 6)).squeeze(1))
    changed = x.clone()
    changed[3] += 1.0  # second sample of pair 1
    delta = (d(changed) - logits).abs()
    assert delta[1] > 0 and delta[0] == 0 and delta[2] == 0


def test_conv_pack_concatenates_samples_along_channels():
    torch.manual_seed(0)
    d = ConvDiscriminator(3, 8, width=4, pack=2, norm="none").eval()
    first = d.net[0]
    assert first.in_channels == 6
    x = torch.randn(4, 3, 8, 8)
    logits = d(x)
    assert logits.shape == (2,)
    assert torch.allclose(logits, d.net(torch.cat([x[0::2], x[1::2]], dim=1)).flatten())
    changed = x.clone()
    changed[0] += 1.0
    delta = (d(changed) - logits).abs()
    assert delta[0] > 0 and delta[1] == 0


def test_minibatch_std_appends_each_groups_mean_standard_deviation():
    """Groups of 2 out of 4 rows: rows 0 and 2, rows 1 and 3; per feature the population std, then its mean."""
    x = torch.tensor([[0.0, 1.0], [5.0, 5.0], [2.0, 5.0], [5.0, 5.0]])
    out = MinibatchStd(2)(x)
    assert out.shape == (4, 3) and torch.equal(out[:, :2], x)
    # rows 0 and 2: stds 1 and 2 -> 1.5; rows 1 and 3 are equal: sqrt(1e-8)
    assert torch.allclose(out[:, 2], torch.tensor([1.5, 1e-4, 1.5, 1e-4]))
    images = torch.randn(6, 2, 3, 3)
    out = MinibatchStd(3)(images)
    assert out.shape == (6, 3, 3, 3)
    expected = images.reshape(3, 2, 2, 3, 3).std(dim=0, unbiased=False).flatten(1).mean(1)
    assert torch.allclose(out[:, 2], expected.repeat(3).view(6, 1, 1).expand(6, 3, 3), atol=1e-6)
    assert torch.allclose(MinibatchStd(8)(images)[:, 2], out.new_full((6, 3, 3), images.std(0, unbiased=False).mean()))


def test_minibatch_std_keeps_the_input_dtype():
    x = torch.randn(4, 3, 2, 2, dtype=torch.bfloat16)
    assert MinibatchStd(2)(x).dtype == torch.bfloat16


@pytest.mark.parametrize("make", [
    lambda: ConvDiscriminator(1, 8, width=4, norm="none", mbstd=2).eval(),
    lambda: MLPDiscriminator([3], width=8, depth=2, mbstd=2).eval(),
])
def test_minibatch_std_discriminator_sees_its_group_and_only_its_group(make):
    """With groups of 2 among 4 rows, changing row 0 moves the logits of rows 0 and 2 (its group) only."""
    torch.manual_seed(0)
    d = make()
    x = torch.randn(4, 1, 8, 8) if isinstance(d, ConvDiscriminator) else torch.randn(4, 3)
    logits = d(x)
    changed = x.clone()
    changed[0] *= 3.0
    delta = (d(changed) - logits).abs()
    assert delta[0] > 0 and delta[2] > 0 and delta[1] == 0 and delta[3] == 0


def test_minibatch_std_needs_a_group_size_that_divides_the_batch():
    d = ConvDiscriminator(1, 8, width=4, mbstd=4)
    with pytest.raises(GanforgeError, match="d_mbstd=4 is invalid for a discriminator batch of 6 rows"):
        d(torch.randn(6, 1, 8, 8))
    assert d(torch.randn(3, 1, 8, 8)).shape == (3,)  # a batch below the group size is one group


def all_networks():
    return [
        MLPGenerator(3, [5], width=8, depth=2, norm="batch"),
        MLPGenerator(3, [1, 4, 4], width=8, depth=1, output="tanh"),
        MLPDiscriminator([5], width=8, depth=1, norm="none", pack=2),
        MLPDiscriminator([5], width=8, depth=1, norm="batch", mbstd=2),
        ConvGenerator(6, 3, 16, width=4, extra_layers=1, norm="batch"),
        ConvDiscriminator(1, 28, width=4, extra_layers=1, norm="batch", pack=2),
        ConvDiscriminator(1, 28, width=4, norm="spectral", pack=2, mbstd=2),
    ]


@pytest.mark.parametrize("net", all_networks(), ids=lambda n: type(n).__name__)
def test_build_network_round_trip_from_config(net):
    """The config saved beside the weights (as JSON) rebuilds the same network: same weights fit, same outputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    config = json.loads(json.dumps(net.config))
    rebuilt = build_network(type(net).__name__, config)
    rebuilt.load_state_dict(net.state_dict())  # strict: same names and shapes
    net.eval(), rebuilt.eval()
    if isinstance(net, (MLPGenerator, ConvGenerator)):
        x = torch.randn(4, net.config["latent_dim"])
    elif isinstance(net, MLPDiscriminator):
        x = torch.randn(4, 5)
    else:
        x = torch.randn(4, 1, 28, 28)
    assert torch.equal(rebuilt(x), net(x))
    assert rebuilt.config == net.config


def test_build_network_unknown_name():
    with pytest.raises(GanforgeError, match="network 'ResNet' is unknown"):
        build_network("ResNet", {})


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: MLPGenerator(0, [2]), "latent_dim=0"),
        (lambda: MLPGenerator(2, [2], width=0), "g_width=0"),
        (lambda: MLPGenerator(2, [2], output="sigmoid"), "output='sigmoid'"),
        (lambda: MLPDiscriminator([2], depth=0), "d_depth=0"),
        (lambda: MLPDiscriminator([2], norm="layer"), "d_norm='layer'"),
        (lambda: ConvGenerator(4, 1, 8, norm="group"), "g_norm='group'"),
        (lambda: ConvDiscriminator(1, 8, pack=0), "pack=0"),
        (lambda: ConvDiscriminator(1, 8, mbstd=1), "d_mbstd=1"),
        (lambda: MLPDiscriminator([2], mbstd=-2), "d_mbstd=-2"),
        (lambda: ConvGenerator(4, 1, 11), "image_size=11"),
    ],
)
def test_invalid_network_arguments_raise(factory, message):
    with pytest.raises(GanforgeError, match=message.replace("(", r"\(")):
        factory()


def test_init_weights_is_dcgan_initialisation():
    torch.manual_seed(0)
    g = ConvGenerator(100, 3, 32, width=32)
    init_weights(g)
    convs = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.mean().abs() < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.05)
    norms = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    scales = torch.cat([m.weight for m in norms])
    assert scales.mean().item() == pytest.approx(1.0, abs=0.01) and 0.01 < scales.std().item() < 0.03
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in norms)
    assert all(m.bias is None or not m.bias.any() for m in convs)


def test_count_parameters():
    # Linear(2, 4): 12, Linear(4, 3): 15
    assert count_parameters(MLPGenerator(2, [3], width=4, depth=1)) == 27


@pytest.mark.parametrize(
    "make",
    [lambda: ConvDiscriminator(3, 28, width=8, extra_layers=1, norm="spectral", pack=2), lambda: MLPDiscriminator([2], width=16, depth=3, norm="spectral")],
    ids=["conv", "mlp"],
)
def test_spectral_norm_discriminator_has_every_layer_at_unit_spectral_norm(make):
    """d_norm=spectral: every weighted layer, the first and the last included, is divided by its
    largest singular value (estimated by power iteration as the network runs); no BatchNorm, all biases."""
    torch.manual_seed(0)
    d = make()
    init_weights(d)
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules())
    assert all(torch.nn.utils.parametrize.is_parametrized(m, "weight") and m.bias is not None for m in layers)
    x = torch.randn(8, *([3, 28, 28] if isinstance(d, ConvDiscriminator) else [2]))
    for _ in range(30):
        d(x)  # training mode: one power iteration per forward
    d.eval()
    for m in layers:
        assert torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() == pytest.approx(1.0, abs=1e-3)
    unnormalised = [m.parametrizations.weight.original for m in layers if isinstance(m, torch.nn.Conv2d)]
    if unnormalised:  # DCGAN initialisation reaches the raw weight under the parametrization
        assert torch.cat([w.flatten() for w in unnormalised]).std().item() == pytest.approx(0.02, rel=0.1)
