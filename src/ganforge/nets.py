"""Generator and discriminator networks.

Three pairs ship with ganforge: an MLP pair for vector data, a DCGAN-style convolutional
pair for images and a residual pair without normalisation for images (after R3GAN). Each network's constructor arguments are its whole configuration: they
are saved beside its weights (`net.config`), so `build_network(name, config)` rebuilds it
without any training code. Any `torch.nn.Module` can stand in for either player.

Discriminators return raw logits of shape (batch // pack,): PacGAN packing concatenates
`pack` samples into one discriminator input, so the discriminator judges them jointly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ganforge.errors import GanforgeError

ARCHITECTURES = ("mlp", "conv", "resnet")  # network families: MLP*, Conv* (DCGAN) and ResNet* (residual, no normalisation)
NORMS = ("batch", "none")  # the generator's
D_NORMS = ("batch", "none", "spectral")  # the discriminator's: spectral normalisation of every layer (SNGAN)


class LatentProjection(nn.ConvTranspose2d):
    """The generator's first layer: a k x k transposed convolution (stride 1, no padding) of z as a 1x1 map.

    On a 1x1 input that convolution is one matrix product, z (batch, latent) times the weight
    read as (latent, k * k * out), and it is computed as one: the same parameters, state-dict
    keys and result (up to float rounding), several times faster than the convolution kernels
    on CPU, and nothing for torch.compile to trip over. The output comes in the weight's memory
    format, so a channels_last network stays channels_last from its first layer.
    """

    def __init__(self, latent_dim: int, out_channels: int, kernel_size: int, bias: bool) -> None:
        super().__init__(latent_dim, out_channels, kernel_size, 1, 0, bias=bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-2:] != (1, 1):
            return super().forward(z)
        batch, (_, out, k, _) = z.shape[0], self.weight.shape
        w = self.weight
        if w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
            y = (z.flatten(1) @ w.permute(0, 2, 3, 1).flatten(1)).view(batch, k, k, out).permute(0, 3, 1, 2)
        else:
            y = (z.flatten(1) @ w.flatten(1)).view(batch, out, k, k)
        return y if self.bias is None else y + self.bias.view(1, out, 1, 1).to(y.dtype)


def _norm1d(kind: str, features: int) -> nn.Module:
    return nn.BatchNorm1d(features) if kind == "batch" else nn.Identity()


def _norm2d(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


def _spectral(layer: nn.Module, norm: str) -> nn.Module:
    """`layer` with its weight divided by its largest singular value (one power iteration per
    training-mode forward, Miyato et al. 2018) when `norm` is "spectral"."""
    return nn.utils.parametrizations.spectral_norm(layer) if norm == "spectral" else layer


def _check(name: str, value: object, ok: bool, expected: str) -> None:
    if not ok:
        raise GanforgeError(f"{name}={value!r} is invalid: expected {expected}")


def mbstd_group(group: int, rows: int) -> int | None:
    """The group size `MinibatchStd(group)` uses on a batch of `rows` (all of them when fewer), or None if it does not divide them."""
    size = min(group, rows)
    return size if rows % size == 0 else None


class MinibatchStd(nn.Module):
    """Appends one feature: how much the samples of a group differ (ProGAN's minibatch standard deviation).

    The batch is split into groups of `group` rows (row i joins rows i + b/group, i + 2b/group, ...);
    within each, every feature's standard deviation across the group is taken, and their mean is
    appended to each row of the group: as one more channel (constant over the map) for
    (batch, channels, h, w) input, one more feature for (batch, features). A discriminator that sees
    it can tell a batch with too little variety from a real one. Computed in fp32 at any precision.
    """

    def __init__(self, group: int) -> None:
        super().__init__()
        _check("d_mbstd", group, group >= 2, "a group size >= 2 (0 turns it off)")
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        group = mbstd_group(self.group, batch)
        if group is None:
            raise GanforgeError(
                f"d_mbstd={self.group} is invalid for a discriminator batch of {batch} rows: "
                "expected a group size that divides it"
            )
        y = x.float().reshape(group, batch // group, *x.shape[1:])
        # The variance written out: torch's var over the leading dimension is ten times slower on a CPU.
        std = ((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt()  # (batch // group, *features)
        spread = std.flatten(1).mean(1).repeat(group)  # one value per row: row i's group is i % (batch // group)
        extra = spread.view(batch, 1, *([1] * (x.dim() - 2))).expand(batch, 1, *x.shape[2:])
        return torch.cat([x, extra.to(x.dtype)], dim=1)


class ClassEmbedding(nn.Module):
    """A conditional generator's input: z (batch, latent_dim) beside its class's learned vector -> (batch, 2 * latent_dim).

    Without labels the classes are taken in turn (0, 1, ..., 0, 1, ...), so a plain `generator(z)`
    still works (BatchNorm recalibration, previews) and draws every class alike.
    """

    def __init__(self, classes: int, latent_dim: int) -> None:
        super().__init__()
        _check("classes", classes, classes >= 2, "2 or more classes")
        self.classes = classes
        self.embed = nn.Embedding(classes, latent_dim)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            labels = torch.arange(z.shape[0], device=z.device) % self.classes
        return torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)


class ProjectionHead(nn.Module):
    """The class term of a projection discriminator (Miyato & Koyama 2018): <embed(y), h>, over all of h's positions.

    Added to the unconditional logit, it lets D judge whether an image fits its class. The
    class vectors start at zero, so a new conditional D scores as its unconditional part.
    """

    def __init__(self, classes: int, features: int) -> None:
        super().__init__()
        _check("classes", classes, classes >= 2, "2 or more classes")
        self.embed = nn.Embedding(classes, features)
        nn.init.zeros_(self.embed.weight)

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise GanforgeError("a conditional discriminator needs the class labels of its batch")
        e = self.embed(labels).to(h.dtype).view(h.shape[0], h.shape[1], *([1] * (h.dim() - 2)))  # (batch, features, 1, 1)
        return (h * e).flatten(1).sum(1)


class Conditioned(nn.Module):
    """`module` with its class labels bound: `Conditioned(d, labels)(x)` is `d(x, labels)`.

    The training steps call players with one argument; a conditional run hands them its
    networks bound to the batch's labels. It has no parameters of its own.
    """

    def __init__(self, module: nn.Module, labels: torch.Tensor) -> None:
        super().__init__()
        self.module, self.labels = module, labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x, self.labels)


class MLPGenerator(nn.Module):
    """Maps z (batch, latent_dim) to samples (batch, *data_shape) through `depth` hidden layers.

    `output="tanh"` bounds samples to [-1, 1] (images); `"linear"` leaves them free (vectors).
    """

    def __init__(
        self,
        latent_dim: int,
        data_shape: list[int],
        width: int = 128,
        depth: int = 3,
        norm: str = "none",
        output: str = "linear",
    ):
        super().__init__()
        _check("latent_dim", latent_dim, latent_dim >= 1, "an integer >= 1")
        _check("g_width", width, width >= 1, "an integer >= 1")
        _check("g_depth", depth, depth >= 1, "an integer >= 1")
        _check("g_norm", norm, norm in NORMS, f"one of {', '.join(NORMS)}")
        _check("output", output, output in ("linear", "tanh"), "linear or tanh")
        data_shape = [int(d) for d in data_shape]
        self.config = dict(latent_dim=latent_dim, data_shape=data_shape, width=width, depth=depth, norm=norm, output=output)
        self.data_shape = tuple(data_shape)
        layers: list[nn.Module] = []
        features = latent_dim
        for _ in range(depth):
            layers += [nn.Linear(features, width), _norm1d(norm, width), nn.ReLU()]
            features = width
        layers.append(nn.Linear(features, math.prod(data_shape)))
        if output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # (batch, prod(data_shape)) -> (batch, *data_shape)
        return self.net(z).reshape(z.shape[0], *self.data_shape)


class MLPDiscriminator(nn.Module):
    """Maps samples (batch, *data_shape) to logits (batch // pack,)."""

    def __init__(
        self, data_shape: list[int], width: int = 128, depth: int = 3, norm: str = "none", pack: int = 1, mbstd: int = 0
    ):
        super().__init__()
        _check("d_width", width, width >= 1, "an integer >= 1")
        _check("d_depth", depth, depth >= 1, "an integer >= 1")
        _check("d_norm", norm, norm in D_NORMS, f"one of {', '.join(D_NORMS)}")
        _check("pack", pack, pack >= 1, "an integer >= 1")
        data_shape = [int(d) for d in data_shape]
        self.config = dict(data_shape=data_shape, width=width, depth=depth, norm=norm, pack=pack, mbstd=mbstd)
        self.pack = pack
        layers: list[nn.Module] = []
        features = math.prod(data_shape) * pack
        for _ in range(depth):
            layers += [_spectral(nn.Linear(features, width), norm), _norm1d(norm, width), nn.LeakyReLU(0.2)]
            features = width
        if mbstd:
            layers.append(MinibatchStd(mbstd))
            features += 1
        layers.append(_spectral(nn.Linear(features, 1), norm))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, *data_shape) -> (batch // pack, pack * prod(data_shape)): pack samples side by side.
        return self.net(x.reshape(x.shape[0] // self.pack, -1)).squeeze(1)


def conv_layout(resolution: int) -> tuple[int, int]:
    """Returns (base, upsamplings) with resolution == base * 2**upsamplings.

    The base is the smallest size >= 4 (DCGAN's 4x4 start), except that small images get
    at least two stride-2 layers by starting lower, so both networks have some depth:
    8 -> (2, 2), 16 -> (4, 2), 28 -> (7, 2), 32 -> (4, 3), 64 -> (4, 4).
    """
    if not isinstance(resolution, int) or resolution < 4:
        raise GanforgeError(f"image_size={resolution!r} is invalid: expected an integer >= 4")
    upsamplings = 0
    base = resolution
    while base % 2 == 0 and (base // 2 >= 4 or (upsamplings < 2 and base // 2 >= 2)):
        base //= 2
        upsamplings += 1
    if base > 8 or upsamplings == 0:
        raise GanforgeError(
            f"image_size={resolution} is not supported by the conv networks: "
            "expected 2..8 times a power of two, at least 4 and even (e.g. 8, 16, 28, 32, 64)"
        )
    return base, upsamplings


class ConvGenerator(nn.Module):
    """DCGAN generator: z (batch, latent_dim) -> images (batch, channels, resolution, resolution) in [-1, 1].

    A transposed convolution lifts z to a base x base map with width * 2**(upsamplings-1)
    channels; each stride-2 transposed convolution doubles the size and halves the
    channels; `extra_layers` 3x3 convolutions refine at full resolution. At resolution 64,
    width 64 this is exactly the DCGAN generator.
    """

    def __init__(
        self,
        latent_dim: int,
        channels: int,
        resolution: int,
        width: int = 64,
        extra_layers: int = 0,
        norm: str = "batch",
        classes: int = 0,
    ):
        super().__init__()
        _check("latent_dim", latent_dim, latent_dim >= 1, "an integer >= 1")
        _check("g_width", width, width >= 1, "an integer >= 1")
        _check("g_norm", norm, norm in NORMS, f"one of {', '.join(NORMS)}")
        self.config = dict(
            latent_dim=latent_dim, channels=channels, resolution=resolution,
            width=width, extra_layers=extra_layers, norm=norm,
        )
        if classes:
            self.config["classes"] = classes
        self.condition = ClassEmbedding(classes, latent_dim) if classes else None
        base, upsamplings = conv_layout(resolution)
        hidden = width * 2 ** max(upsamplings - 1, 0)
        layers: list[nn.Module] = [
            LatentProjection(latent_dim * (2 if classes else 1), hidden, base, bias=norm == "none"),
            _norm2d(norm, hidden),
            nn.ReLU(True),
        ]
        for i in range(upsamplings):
            last = i == upsamplings - 1 and extra_layers == 0
            out = channels if last else max(hidden // 2, width)
            layers.append(nn.ConvTranspose2d(hidden, out, 4, 2, 1, bias=last or norm == "none"))
            if not last:
                layers += [_norm2d(norm, out), nn.ReLU(True)]
            hidden = out
        for i in range(extra_layers):
            last = i == extra_layers - 1
            out = channels if last else hidden
            layers.append(nn.Conv2d(hidden, out, 3, 1, 1, bias=last or norm == "none"))
            if not last:
                layers += [_norm2d(norm, out), nn.ReLU(True)]
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.condition is not None:
            z = self.condition(z.flatten(1), labels)  # (batch, 2 * latent_dim): z and its class
        # (batch, latent) -> (batch, latent, 1, 1): z as a 1x1 feature map.
        return self.net(z.reshape(z.shape[0], -1, 1, 1))


class ConvDiscriminator(nn.Module):
    """DCGAN discriminator: images (batch, channels, r, r) -> logits (batch // pack,).

    Stride-2 convolutions halve the size down to base x base (no normalisation on the
    first, as in DCGAN), then a base x base convolution gives one logit.
    """

    def __init__(
        self,
        channels: int,
        resolution: int,
        width: int = 64,
        extra_layers: int = 0,
        norm: str = "batch",
        pack: int = 1,
        mbstd: int = 0,
        classes: int = 0,
    ):
        super().__init__()
        _check("d_width", width, width >= 1, "an integer >= 1")
        _check("d_norm", norm, norm in D_NORMS, f"one of {', '.join(D_NORMS)}")
        _check("pack", pack, pack >= 1 and (pack == 1 or not classes), "1 for a conditional discriminator" if classes else "an integer >= 1")
        self.config = dict(
            channels=channels, resolution=resolution, width=width,
            extra_layers=extra_layers, norm=norm, pack=pack, mbstd=mbstd,
        )
        if classes:
            self.config["classes"] = classes
        self.pack = pack
        base, upsamplings = conv_layout(resolution)
        hidden = channels * pack
        layers: list[nn.Module] = []
        for i in range(extra_layers):
            layers += [_spectral(nn.Conv2d(hidden, width, 3, 1, 1, bias=i == 0 or norm != "batch"), norm)]
            layers += [nn.Identity() if i == 0 else _norm2d(norm, width), nn.LeakyReLU(0.2, True)]
            hidden = width
        for i in range(upsamplings):
            out = width * 2**i
            first = i == 0 and extra_layers == 0
            layers.append(_spectral(nn.Conv2d(hidden, out, 4, 2, 1, bias=first or norm != "batch"), norm))
            layers += [nn.Identity() if first else _norm2d(norm, out), nn.LeakyReLU(0.2, True)]
            hidden = out
        if mbstd:
            layers.append(MinibatchStd(mbstd))
            hidden += 1
        layers.append(_spectral(nn.Conv2d(hidden, 1, base, 1, 0), norm))
        self.net = nn.Sequential(*layers)
        self.projection = ProjectionHead(classes, hidden) if classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # (batch, c, h, w) -> (batch // pack, pack * c, h, w): pack samples along channels.
        b, c, h, w = x.shape
        return _logits(self.net, self.projection, x.reshape(b // self.pack, self.pack * c, h, w), labels)


def _logits(net: nn.Sequential, projection: ProjectionHead | None, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """`net(x)` as (batch,) logits, plus the projection head's class term on the features before its last layer."""
    if projection is None:
        return net(x).flatten()
    features = net[:-1](x)
    return net[-1](features).flatten() + projection(features, labels)


class ResidualBlock(nn.Module):
    """x + branch(x), with no normalisation: 1x1 conv -> 3x3 conv (in `groups` groups) -> 1x1 conv.

    The branch widens to 2 * channels inside (R3GAN's inverted bottleneck) and its last layer
    starts at zero, so a new block is the identity and a deep network starts as its skip path;
    training grows each branch from there, which lets it train without normalisation.
    """

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__()
        inner = 2 * channels
        _check("groups", groups, groups >= 1 and inner % groups == 0, f"a divisor of the blocks' inner width {inner}")
        self.branch = nn.Sequential(
            nn.Conv2d(channels, inner, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(inner, inner, 3, 1, 1, groups=groups), nn.LeakyReLU(0.2),
            nn.Conv2d(inner, channels, 1),
        )
        for layer in self.branch[:-1]:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.branch[-1].weight)
        nn.init.zeros_(self.branch[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def _stage(channels: int, blocks: int, groups: int) -> list[nn.Module]:
    return [ResidualBlock(channels, groups) for _ in range(blocks)]


class ResNetGenerator(nn.Module):
    """Residual generator (after R3GAN): z (batch, latent_dim) -> images (batch, channels, r, r) in [-1, 1].

    A linear layer lifts z to a base x base map; at each resolution `blocks` residual blocks
    refine it, and between resolutions a nearest-neighbour upsampling and a 1x1 convolution
    double the size and halve the channels (width * 2**upsamplings at the base, width at full
    size). A 1x1 convolution and tanh give the image. No normalisation anywhere.
    """

    def __init__(
        self, latent_dim: int, channels: int, resolution: int, width: int = 32, blocks: int = 1, groups: int = 1, classes: int = 0
    ):
        super().__init__()
        _check("latent_dim", latent_dim, latent_dim >= 1, "an integer >= 1")
        _check("g_width", width, width >= 1, "an integer >= 1")
        _check("g_depth", blocks, blocks >= 0, "an integer >= 0")
        self.config = dict(latent_dim=latent_dim, channels=channels, resolution=resolution, width=width, blocks=blocks, groups=groups)
        if classes:
            self.config["classes"] = classes
        self.condition = ClassEmbedding(classes, latent_dim) if classes else None
        base, upsamplings = conv_layout(resolution)
        hidden = width * 2**upsamplings
        self.base, self.hidden = base, hidden
        self.project = nn.Linear(latent_dim * (2 if classes else 1), hidden * base * base)
        layers: list[nn.Module] = [nn.LeakyReLU(0.2), *_stage(hidden, blocks, groups)]
        for _ in range(upsamplings):
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(hidden, hidden // 2, 1)]
            hidden //= 2
            layers += _stage(hidden, blocks, groups)
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(hidden, channels, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = z.flatten(1) if self.condition is None else self.condition(z.flatten(1), labels)
        # (batch, latent) -> (batch, hidden, base, base)
        x = self.project(z).view(z.shape[0], self.hidden, self.base, self.base)
        return self.net(x)


class ResNetDiscriminator(nn.Module):
    """Residual discriminator (after R3GAN): images (batch, channels, r, r) -> logits (batch // pack,).

    The mirror of `ResNetGenerator`: a 1x1 convolution reads the image at `width` channels;
    at each resolution `blocks` residual blocks, then a 2x2 average pooling and a 1x1
    convolution that doubles the channels; at the base size a linear layer gives the logit.
    No normalisation (R1 and R2 keep it smooth instead).
    """

    def __init__(
        self, channels: int, resolution: int, width: int = 32, blocks: int = 1, groups: int = 1, pack: int = 1, mbstd: int = 0,
        classes: int = 0,
    ):
        super().__init__()
        _check("d_width", width, width >= 1, "an integer >= 1")
        _check("d_depth", blocks, blocks >= 0, "an integer >= 0")
        _check("pack", pack, pack >= 1 and (pack == 1 or not classes), "1 for a conditional discriminator" if classes else "an integer >= 1")
        self.config = dict(channels=channels, resolution=resolution, width=width, blocks=blocks, groups=groups, pack=pack, mbstd=mbstd)
        if classes:
            self.config["classes"] = classes
        self.pack = pack
        base, downsamplings = conv_layout(resolution)
        hidden = width
        layers: list[nn.Module] = [nn.Conv2d(channels * pack, hidden, 1), nn.LeakyReLU(0.2)]
        for _ in range(downsamplings):
            layers += [*_stage(hidden, blocks, groups), nn.AvgPool2d(2), nn.Conv2d(hidden, 2 * hidden, 1)]
            hidden *= 2
        layers += _stage(hidden, blocks, groups)
        layers.append(nn.LeakyReLU(0.2))
        if mbstd:
            layers.append(MinibatchStd(mbstd))
            hidden += 1
        layers += [nn.Flatten(), nn.Linear(hidden * base * base, 1)]
        self.net = nn.Sequential(*layers)
        self.projection = ProjectionHead(classes, hidden * base * base) if classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # (batch, c, h, w) -> (batch // pack, pack * c, h, w): pack samples along channels.
        b, c, h, w = x.shape
        return _logits(self.net, self.projection, x.reshape(b // self.pack, self.pack * c, h, w), labels)


NETWORKS = {
    cls.__name__: cls
    for cls in (MLPGenerator, MLPDiscriminator, ConvGenerator, ConvDiscriminator, ResNetGenerator, ResNetDiscriminator)
}


def build_network(name: str, config: dict) -> nn.Module:
    """Rebuilds a shipped network from its class name and saved constructor config."""
    if name not in NETWORKS:
        raise GanforgeError(f"network {name!r} is unknown: expected one of {', '.join(NETWORKS)}")
    return NETWORKS[name](**config)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation for conv nets: N(0, 0.02) weights, BatchNorm N(1, 0.02) scale.

    A spectrally normalised layer gets it on its unnormalised weight.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            parametrized = nn.utils.parametrize.is_parametrized(m, "weight")
            nn.init.normal_(m.parametrizations.weight.original if parametrized else m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
