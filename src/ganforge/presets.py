"""Default settings by kind of data; `config.resolve` fills every auto (None) key from one of these.

Each preset sets the keys of both network families (depth for mlp, extra layers for conv),
so a run that switches `arch` still gets a complete config.
"""

# The 2D Gaussian mixtures (ring8, grid25): a 1-D latent, so the generator traces one curve
# through every mode and must jump between modes in as little latent mass as it can. What makes
# it cover every mode with sharp jumps (measured by benchmarks/toy_modes.py): 4-layer MLPs, the
# R1 penalty (keeps D smooth around the modes, so G is led from one mode to the next; applied
# lazily, every 8th D step at 8 times the weight, as in StyleGAN2: a third less time per run),
# Adam without momentum, and learning rates that fall to 0 over the end of the run (the last 40 %; the
# jumps sharpen as the steps shrink). A batch of 512 sharpens them further (less gradient noise),
# paid for by a discriminator half as wide (64): on the grid, 95.4 % high-quality samples against
# 92.0 % with batch 256 and a 128-wide D, for the same time per step on 2 CPU cores (a D of 48 lost
# a seed at 79.8 %; a G and D of 96 reached 93.6 %).
_MIXTURE = dict(
    arch="mlp", latent_dim=1, g_width=128, d_width=64, g_depth=4, d_depth=4, g_extra_layers=0, d_extra_layers=0,
    g_norm="none", d_norm="none", d_mbstd=0, pack=1, batch_size=512, lr_g=1e-3, lr_d=1e-3, lr_decay=0.4, r1_every=8, beta1=0.0, beta2=0.9,
    ema_decay=0.999, log_every=200, sample_every=2_000, best_metric="reverse_kl",
)

PRESETS: dict[str, dict] = {
    # ring8's modes (std 0.01) are tight: a light R1 penalty keeps them sharpest, and a longer decay
    # (the last 70 % of the steps) sharpens them further. 7,000 steps: 98.2 % high-quality samples
    # in about 50 s on 2 CPU cores (8,000: 98.45 %, but close to a minute).
    "ring8": dict(_MIXTURE, r1_gamma=0.1, lr_decay=0.7, steps=7_000, checkpoint_every=3_500),
    "grid25": dict(_MIXTURE, r1_gamma=1.0, steps=16_000, checkpoint_every=4_000),
    "vectors": dict(
        arch="mlp", g_width=256, d_width=256, g_depth=3, d_depth=3, g_extra_layers=0, d_extra_layers=0,
        g_norm="none", d_norm="none", d_mbstd=0, pack=1, r1_gamma=0.0, r1_every=1,
        steps=10_000, batch_size=128, lr_g=2e-4, lr_d=2e-4, lr_decay=0.0, beta1=0.5, beta2=0.999, ema_decay=0.999,
        log_every=200, sample_every=2_000, checkpoint_every=5_000, best_metric="fd",
    ),
    "images": dict(
        arch="conv", g_width=64, d_width=64, g_extra_layers=0, d_extra_layers=0, g_depth=3, d_depth=3,
        g_norm="batch", d_norm="batch", d_mbstd=0, pack=1, r1_gamma=0.0, r1_every=1,
        steps=10_000, batch_size=64, lr_g=2e-4, lr_d=2e-4, lr_decay=0.0, beta1=0.5, beta2=0.999, ema_decay=0.999,
        log_every=100, sample_every=1_000, checkpoint_every=2_000, best_metric="fd",
    ),
    # scikit-learn's 8x8 digits, the default job: a slim DCGAN pair (2x2 -> 4x4 -> 8x8); 10,000 steps take
    # about 2 minutes on 2 CPU cores (5,000 gave visibly rougher digits: FD 2.0 vs 1.3 at 12,000, digits8 features).
    "digits": dict(
        arch="conv", latent_dim=32, g_width=32, d_width=32, g_extra_layers=0, d_extra_layers=0, g_depth=3, d_depth=3,
        g_norm="batch", d_norm="batch", d_mbstd=0, pack=1, r1_gamma=0.0, r1_every=1, steps=10_000, batch_size=64, lr_g=2e-4, lr_d=2e-4,
        lr_decay=0.0, beta1=0.5, beta2=0.999, ema_decay=0.999, log_every=100, sample_every=1_000, checkpoint_every=1_000,
        best_metric="fd",
    ),
}
# Stacked MNIST (`stackedmnist:PATH`), measured by benchmarks/stacked_mnist.py (README): the images
# preset with a discriminator learning twice as fast as the generator, an R1 penalty (gamma 1, lazily
# every 16th D step), batches of 128 and 15,000 steps, the last 30 % decaying, and no packing. Seeds 0-2:
# KL 0.046, 0.048, 0.051 (mean 0.048), 27 minutes of training alone on 2 CPU cores (seed 0); 18,000 steps
# gave 0.042-0.048 (mean 0.045) but took 33 minutes alone, past the 30-minute budget. PacGAN packing of 2
# with R1 every 4th step and 20,000 steps (an earlier preset; packing pairs halves D's batch) gave 0.052;
# the images preset scored 0.198 (one seed, 10,000 steps, pack 2).
PRESETS["stackedmnist"] = dict(
    PRESETS["images"], pack=1, batch_size=128, steps=15_000, lr_d=4e-4, lr_decay=0.3, r1_gamma=1.0, r1_every=16, best_metric="kl"
)

# Tables of mixed columns (docs/TABLES.md): a residual MLP generator with BatchNorm and an MLP
# discriminator over [row, condition], Adam at betas (0.5, 0.9), batches of 500 rows, as CTGAN's, but
# without packing: a discriminator judging packs of 10 rows did not learn, in a few hundred steps, that
# a category fixes a number (docs/BENCHMARKS-tabular.md), which a single-row one did. An EMA of 0.99
# (a horizon of about 100 steps) suits runs of a few thousand steps; 0.999 left a third of the initial
# weights in the average after 1,000. 1,200 steps: a whole fit on UCI Adult takes 68 CPU seconds, one
# thread (docs/BENCHMARKS-tabular.md has the figures of benchmarks/tabular.py).
PRESETS["table"] = dict(
    arch="mlp", latent_dim=128, g_width=256, d_width=256, g_depth=2, d_depth=2, g_extra_layers=0, d_extra_layers=0,
    g_norm="batch", d_norm="none", d_mbstd=0, pack=1, r1_gamma=0.0, r1_every=1, steps=1_200, batch_size=500, lr_g=2e-4, lr_d=2e-4,
    lr_decay=0.0, beta1=0.5, beta2=0.9, ema_decay=0.99, log_every=100, sample_every=1_000, checkpoint_every=1_000, best_metric="quality",
)

# How the flag help names each preset: the data that picks it (config.preset_name).
_PRESET_LABELS = {"images": "other images", "vectors": "other vectors", "stackedmnist": "Stacked MNIST", "table": "tables"}


def _shown(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def auto_values(key: str) -> str:
    """The values the presets give `key`, for the flag help: 'auto: 0.1 for ring8, 1 for grid25 and Stacked MNIST, else 0'.

    The value most presets share is the 'else'; a key every preset sets alike reads 'auto: VALUE'.
    """
    by_value: dict[str, list[str]] = {}
    for name, preset in PRESETS.items():
        by_value.setdefault(_shown(preset[key]), []).append(_PRESET_LABELS.get(name, name))
    common = max(by_value, key=lambda value: len(by_value[value]))  # the first of equals, in PRESETS order
    rest = [f"{value} for {' and '.join(names) if len(names) < 3 else ', '.join(names[:-1]) + ' and ' + names[-1]}"
            for value, names in by_value.items() if value != common]
    return "auto: " + ", ".join([*rest, f"else {common}"] if rest else [common])
