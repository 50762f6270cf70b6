"""The table generator and sampling rows from it, unconditionally or under `--where` conditions.

`TableGenerator` maps z (batch, latent_dim) to [row, condition] (batch, row_dim + conditions):
z's first coordinate picks the condition (a discrete column's category) by inverse transform
sampling of the training-by-sampling distribution, the other coordinates are the noise; the
network sees [noise, one-hot condition]. The row's column of that condition is set to the
condition, so the discriminator, which also sees the condition, judges the rest of the row as
a draw from the real rows holding it. Outputs are `tanh` for a number's offset; for modes and
categories, a softmax at temperature 0.2 in training and a one-hot pick in evaluation mode, of
the scores themselves (`draw="argmax"`: every pick is a function of z, so the columns of a row
can only disagree where the network makes them) or of the scores plus Gumbel noise drawn for each
column (`draw="gumbel"`, CTGAN's Gumbel-softmax, and what generators saved without `draw` do).
Everything runs through ganforge's unchanged generator and discriminator steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.data.table import Table, parse_where
from ganforge.data.table_transform import decode
from ganforge.errors import GanforgeError
from ganforge.nets import NETWORKS, MLPDiscriminator, _check, _norm1d
from ganforge.noise import NoiseSampler

TEMPERATURE = 0.2  # of the softmax in training, with either draw
DRAWS = ("argmax", "gumbel")
MIN_ACCEPTANCE = 1e-3  # rejection sampling gives up below this share of matching rows


class TableGenerator(nn.Module):
    """z (batch, latent_dim) -> [row (batch, row_dim), one-hot condition (batch, conditions)].

    Hidden layers are residual by concatenation (each adds `width` features to its input);
    `spans` is the transform's list of [activation, width]; `conditions` its condition tables.
    """

    def __init__(self, latent_dim: int, spans: list, conditions: dict, width: int = 256, depth: int = 2, norm: str = "batch",
                 noise: str = "normal", draw: str = "gumbel"):
        super().__init__()
        _check("latent_dim", latent_dim, latent_dim >= 2, "an integer >= 2 for tables (one coordinate picks the condition)")
        _check("g_depth", depth, depth >= 1, "an integer >= 1")
        _check("category_draw", draw, draw in DRAWS, f"one of {', '.join(DRAWS)}")
        self.config = dict(latent_dim=latent_dim, spans=spans, conditions=conditions, width=width, depth=depth, norm=norm, noise=noise,
                           draw=draw)
        self.spans, self.noise, self.draw = [(kind, int(w)) for kind, w in spans], noise, draw
        self.row_dim, self.condition_dim = sum(w for _, w in self.spans), int(conditions["dim"])
        self.register_buffer("cumulative", torch.tensor(conditions["training"], dtype=torch.float64).cumsum(0).float(), persistent=False)
        self.register_buffer("overwrite", _overwrite_maps(self.spans, conditions), persistent=False)
        self.padded_width = max((w for kind, w in self.spans if kind == "softmax"), default=0)
        gather, scatter, is_tanh = _span_maps(self.spans, self.padded_width)
        self.register_buffer("gather", gather, persistent=False)
        self.register_buffer("scatter", scatter, persistent=False)
        self.register_buffer("is_tanh", is_tanh, persistent=False)
        layers, features = [], latent_dim - 1 + self.condition_dim
        for _ in range(depth):
            layers.append(_Residual(features, width, norm))
            features += width
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(features, self.row_dim)

    def forward(self, z: Tensor) -> Tensor:
        """Training and BatchNorm calibration: the condition comes from z[:, 0]."""
        u = 0.5 * (1 + torch.erf(z[:, 0] / math.sqrt(2))) if self.noise == "normal" else (z[:, 0] + 1) / 2
        condition = torch.searchsorted(self.cumulative, u.float().contiguous().clamp(0, 1 - 1e-7), right=True)
        return self.generate(z[:, 1:], condition.clamp(max=max(self.condition_dim - 1, 0)))

    def generate(self, noise: Tensor, condition: Tensor) -> Tensor:
        """noise (batch, latent_dim - 1), condition indices (batch,) -> [row, one-hot condition]."""
        if not self.condition_dim:
            return self._activate(self.out(self.hidden(noise)))
        onehot = F.one_hot(condition, self.condition_dim).to(noise.dtype)
        row = self._activate(self.out(self.hidden(torch.cat([noise, onehot], dim=1))))
        span, value = (onehot @ self.overwrite).chunk(2, dim=1)  # the condition's column, and its category's unit
        return torch.cat([row * (1 - span) + value, onehot], dim=1)

    def _activate(self, logits: Tensor) -> Tensor:
        """tanh for the offsets; per softmax span, a softmax of the scores (training) or a one-hot of their
        argmax (evaluation), the scores first perturbed by Gumbel noise when `draw` is "gumbel".

        All softmax spans are handled at once: their units are gathered into (batch, spans, widest span),
        padded with -inf, and scattered back into row order.
        """
        if not self.padded_width:
            return torch.tanh(logits)
        batch = logits.shape[0]
        x = logits.float()
        if self.draw == "gumbel":
            uniform = torch.rand(logits.shape, device=logits.device).clamp_(min=1e-10)
            x = x - uniform.log_().neg_().log_()  # + Gumbel(0, 1) noise: -log(-log(U))
        x = torch.cat([x, x.new_full((batch, 1), -math.inf)], dim=1)[:, self.gather].view(batch, -1, self.padded_width)
        if self.training:
            x = (x / TEMPERATURE).softmax(dim=-1)
        else:
            x = F.one_hot(x.argmax(dim=-1), self.padded_width).float()
        return torch.where(self.is_tanh, torch.tanh(logits), x.flatten(1)[:, self.scatter].to(logits.dtype))


def _span_maps(spans: list, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Index maps between a row's units and its softmax spans padded to `width` (see `TableGenerator._activate`).

    gather: (softmax spans * width,) the unit of each padded slot (row_dim, the -inf column, for padding);
    scatter: (row_dim,) the padded slot of each unit (0 for a tanh unit); is_tanh: (row_dim,) which units are tanh.
    """
    row_dim = sum(w for _, w in spans)
    gather, scatter, is_tanh, at = [], [0] * row_dim, [False] * row_dim, 0
    for kind, span in spans:
        if kind == "tanh":
            is_tanh[at : at + span] = [True] * span
        else:
            for i in range(span):
                scatter[at + i] = len(gather) + i
            gather += list(range(at, at + span)) + [row_dim] * (width - span)
        at += span
    return torch.tensor(gather, dtype=torch.long), torch.tensor(scatter, dtype=torch.long), torch.tensor(is_tanh)


def _overwrite_maps(spans: list, conditions: dict) -> Tensor:
    """(conditions, 2 * row_dim): for each condition, its column's units, then the unit of its category."""
    row_dim = sum(w for _, w in spans)
    maps = torch.zeros(int(conditions["dim"]), 2 * row_dim)
    for start, offset, counts in zip(conditions["starts"], conditions["offsets"], conditions["counts"]):
        for category in range(len(counts)):
            maps[offset + category, start : start + len(counts)] = 1
            maps[offset + category, row_dim + start + category] = 1
    return maps


class _Residual(nn.Module):
    """x -> [x, ReLU(norm(Linear(x)))]: the input passes on beside the new features."""

    def __init__(self, features: int, width: int, norm: str) -> None:
        super().__init__()
        self.layer = nn.Sequential(nn.Linear(features, width), _norm1d(norm, width), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.layer(x)], dim=1)


NETWORKS[TableGenerator.__name__] = TableGenerator


def build_table_networks(config, dataset) -> tuple[nn.Module, nn.Module]:
    """The table generator and an MLP discriminator over [row, condition] (packing `pack` rows per logit)."""
    transform = dataset.transform
    generator = TableGenerator(config.latent_dim, transform["spans"], transform["conditions"], config.g_width, config.g_depth,
                               config.g_norm, config.noise, config.category_draw)
    discriminator = MLPDiscriminator(list(dataset.sample_shape), config.d_width, config.d_depth, config.d_norm, config.pack, config.d_mbstd)
    return generator, discriminator


@torch.no_grad()
def sample_rows(generator, n: int, seed: int = 0, where: list[str] | None = None, batch_size: int = 4096) -> tuple[Table, float]:
    """n decoded rows from an exported table generator (a `SampleableGenerator`), and the acceptance rate.

    Without `where`, each row is generated for a condition drawn by the real frequencies (a column
    uniformly, then a category by its share), so rows follow the real table. With conditions
    ('sex=Female'), rows are generated for the rarest one and kept when they match the others
    (rejection), so every row matches; the acceptance rate is the share of generated rows kept.
    The same seed gives the same rows.
    """
    network, transform = generator.network, generator.spec["transform"]
    pairs = parse_where(where or [], transform)
    device = next(network.parameters()).device
    noise = NoiseSampler(generator.latent_dim, generator.spec["noise"]["distribution"], device, seed)
    draws = torch.Generator().manual_seed(seed + 1)
    chosen, kept, made, accepted = _condition_distribution(transform, pairs), [], 0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed + 2)  # the Gumbel-max draws of the categories (draw="gumbel")
        while accepted < n:
            if made >= max(n, batch_size) / MIN_ACCEPTANCE:
                raise GanforgeError(
                    f"--where {' '.join(where)}: only {accepted} of {made} generated rows matched (acceptance rate {accepted / made:.3%}): "
                    "expected a combination the generator makes; ask for fewer rows or fewer conditions"
                )
            condition = torch.multinomial(chosen, batch_size, replacement=True, generator=draws).to(device)
            rows = network.generate(noise(batch_size)[:, 1:], condition)[:, : network.row_dim]
            table = decode(rows.float().cpu().numpy(), transform)
            match = np.ones(batch_size, dtype=bool)
            for name, value in pairs:
                match &= table[name] == value
            kept.append({k: v[match] for k, v in table.items()})
            made, accepted = made + batch_size, accepted + int(match.sum())
    rows = {k: np.concatenate([t[k] for t in kept])[:n] for k in kept[0]}
    return rows, accepted / made


def _condition_distribution(transform: dict, pairs: list[tuple[str, str]]) -> Tensor:
    """Probabilities over conditions: the real ones without `pairs`, else all on the rarest pair."""
    conditions = transform["conditions"]
    if not conditions["dim"]:
        return torch.ones(1, dtype=torch.float64)
    if not pairs:
        return torch.tensor(conditions["real"], dtype=torch.float64)
    columns = {c["name"]: c for c in transform["columns"]}

    def index(pair: tuple[str, str]) -> int:
        j = conditions["columns"].index(pair[0])
        return conditions["offsets"][j] + columns[pair[0]]["categories"].index(pair[1])

    counts = [c for column in conditions["counts"] for c in column]
    rarest = min((index(p) for p in pairs), key=lambda c: counts[c])
    probabilities = torch.zeros(conditions["dim"], dtype=torch.float64)
    probabilities[rarest] = 1.0
    return probabilities
