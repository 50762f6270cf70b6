"""Default settings by kind of data; `config.resolve` fills every auto (None) key from one of these.

Each preset sets the keys of both network families (depth for mlp, extra layers for conv),
so a run that switches `arch` still gets a complete config.
"""

# The 2D Gaussian mixtures (ring8, grid25): a 1-D latent, so the generator traces one curve
# through every mode and must jump between modes in as little latent mass as it can. Deep MLPs;
# a lazy R1 penalty (keeps D smooth around the modes, so G is led from one mode to the next;
# applied on every r1_every-th D step at r1_every times the weight, as in StyleGAN2, to save
# time); Adam without momentum; learning rates that fall to 0 over the end of the run (the jumps
# sharpen as the steps shrink); a large batch for less gradient noise, paid for by a
# discriminator narrower than the generator. Why each value: docs/studies/2026-11-28-mixture-presets.md.
_MIXTURE = dict(
    arch="mlp", latent_dim=1, g_width=128, d_width=64, g_depth=4, d_depth=4, g_extra_layers=0, d_extra_layers=0,
    g_norm="none", d_norm="none", d_mbstd=0, augment="none", groups=1, pack=1, loss="nonsaturating", gp_weight=0.0, r2_gamma=0.0, batch_size=512,
    ada_target=0.0, precision="fp32", lr_g=1e-3, lr_d=1e-3, lr_decay=0.4, r1_every=8, beta1=0.0, beta2=0.9, ema_decay=0.999, ema_kimg=0.0, conditional=False,
    ema_rampup=0.05, clusters=0, diversity=0.0, diversity_kimg=0.0, d_steps_per_g_step=1, log_every=200, sample_every=2_000, best_metric="reverse_kl",
)

# The DCGAN settings (Radford et al. 2016): BatchNorm in both networks and the paper's optimiser
# settings; the base of the image presets.
_DCGAN_IMAGES = dict(
    arch="conv", g_width=64, d_width=64, g_extra_layers=0, d_extra_layers=0, g_depth=3, d_depth=3,
    g_norm="batch", d_norm="batch", d_mbstd=0, augment="none", groups=1, pack=1, loss="nonsaturating", gp_weight=0.0, r1_gamma=0.0, r2_gamma=0.0,
    ada_target=0.0, precision="fp32", r1_every=1, ema_kimg=0.0, conditional=False, clusters=0, steps=10_000, batch_size=64, lr_g=2e-4, lr_d=2e-4,
    ema_rampup=0.05, lr_decay=0.0, beta1=0.5, beta2=0.999, ema_decay=0.999, log_every=100, sample_every=1_000, checkpoint_every=2_000, best_metric="fd",
    d_steps_per_g_step=1, diversity=0.0, diversity_kimg=0.0,
)

# The modern recipe for images (after R3GAN): the relativistic pairing loss with R1 on real and R2 on
# generated images (lazily, every 8th D step), Adam without momentum at five times DCGAN's learning
# rate, and an EMA whose half-life is counted in images and ramps up over the start, on the DCGAN
# networks; the residual pair (arch=resnet) is a choice, slower per step on a CPU. Why these values:
# docs/studies/2026-12-04-image-recipe.md and docs/studies/2026-12-04-image-learning-rate.md.
_IMAGE_RECIPE = dict(
    loss="relativistic", r1_gamma=0.1, r2_gamma=0.1, r1_every=8, lr_g=1e-3, lr_d=1e-3, beta1=0.0, beta2=0.99, ema_kimg=10.0,
    precision="fast",
)

PRESETS: dict[str, dict] = {
    # ring8's modes are tight: a light R1 penalty keeps them sharpest, and a longer decay sharpens
    # them further; the steps are what keeps a run near a minute on 2 CPU cores.
    "ring8": dict(_MIXTURE, r1_gamma=0.1, lr_decay=0.7, steps=7_000, checkpoint_every=3_500),
    "grid25": dict(_MIXTURE, r1_gamma=1.0, steps=16_000, checkpoint_every=4_000),
    # Vectors (.npy/.csv): plain MLPs with the DCGAN paper's optimiser settings.
    "vectors": dict(
        arch="mlp", g_width=256, d_width=256, g_depth=3, d_depth=3, g_extra_layers=0, d_extra_layers=0,
        g_norm="none", d_norm="none", d_mbstd=0, augment="none", groups=1, pack=1, loss="nonsaturating", gp_weight=0.0, r1_gamma=0.0, r2_gamma=0.0,
        ada_target=0.0, r1_every=1, ema_kimg=0.0, conditional=False, clusters=0, steps=10_000, batch_size=128, lr_g=2e-4, lr_d=2e-4, lr_decay=0.0, beta1=0.5,
        ema_rampup=0.05, precision="fp32", d_steps_per_g_step=1, diversity=0.0, diversity_kimg=0.0,
        beta2=0.999, ema_decay=0.999, log_every=200, sample_every=2_000, checkpoint_every=5_000, best_metric="fd",
    ),
    # Other images and MNIST: the DCGAN networks trained with the modern recipe above, self-conditioned
    # on 400 k-means clusters of the training images, with MSGAN's mode-seeking term within each cluster
    # (docs/studies/2026-12-05-self-conditioning.md, docs/studies/2026-12-06-mnist-term-weight-timed.md),
    # and an EMA half-life of 40,000 images, at most a tenth of those seen
    # (docs/studies/2026-12-07-mnist-ema-half-life.md).
    "images": dict(_DCGAN_IMAGES, **dict(_IMAGE_RECIPE, ema_kimg=40.0, ema_rampup=0.1), clusters=400, diversity=0.06),
    # The same for image sets of fewer than SMALL_IMAGE_SET images, where a discriminator can come to
    # memorise its training images: DiffAugment's three operations, each reaching an image with ADA's
    # adaptive probability, which stays near 0 until D separates real from generated images too surely.
    "small_images": dict(_DCGAN_IMAGES, **_IMAGE_RECIPE, augment="translation,cutout,color", ada_target=0.6),
    # scikit-learn's 8x8 digits, the default job: a slim DCGAN pair (2x2 -> 4x4 -> 8x8), trained long
    # enough for readable digits in a couple of minutes on 2 CPU cores (docs/BENCHMARKS.md#the-default-job).
    "digits": dict(
        arch="conv", latent_dim=32, g_width=32, d_width=32, g_extra_layers=0, d_extra_layers=0, g_depth=3, d_depth=3,
        g_norm="batch", d_norm="batch", d_mbstd=0, augment="none", groups=1, pack=1, loss="nonsaturating", gp_weight=0.0, r1_gamma=0.0, r2_gamma=0.0,
        ada_target=0.0, r1_every=1, ema_kimg=0.0, conditional=False, clusters=0, steps=10_000, batch_size=64, lr_g=2e-4, lr_d=2e-4, lr_decay=0.0, beta1=0.5,
        ema_rampup=0.05, precision="fp32", d_steps_per_g_step=1, diversity=0.0, diversity_kimg=0.0,
        beta2=0.999, ema_decay=0.999, log_every=100, sample_every=1_000, checkpoint_every=1_000, best_metric="fd",
    ),
}
# Stacked MNIST (`stackedmnist:PATH`): the image recipe on the DCGAN networks, with one more 3x3 layer
# at full resolution in the generator, ten times the recipe's R1 and R2 weights, batches of 128, no
# packing, and the last part of the run decaying; 15,000 steps, the former DCGAN-based preset's.
# Why each value: docs/studies/2026-12-06-stacked-mnist-recipe.md and
# docs/studies/2026-12-08-stacked-mnist-full-resolution-layer.md (and, for the batch, the decay and
# no packing, docs/studies/2026-11-28-stacked-mnist-preset.md and
# docs/studies/2026-11-29-stacked-mnist-no-packing.md); the benchmark: benchmarks/stacked_mnist.py.
PRESETS["stackedmnist"] = dict(
    _DCGAN_IMAGES, **dict(_IMAGE_RECIPE, r1_gamma=1.0, r2_gamma=1.0), g_extra_layers=1, pack=1, batch_size=128, steps=15_000, lr_decay=0.3,
    best_metric="kl",
)

# Tables of mixed columns (docs/TABLES.md): a residual MLP generator with BatchNorm and an MLP
# discriminator over [row, condition] trained as a WGAN-GP critic, Adam at betas (0.5, 0.9) and
# batches of 500 rows, as CTGAN's, but with two critic steps per generator step, without packing
# (a packed discriminator did not learn that a category fixes a number) and with each category and
# number mode picked as the argmax of the generator's scores instead of with CTGAN's Gumbel noise
# (so a row's columns hold together); an EMA with a horizon fit for short runs, and the steps that
# keep a fit of UCI Adult within 5 CPU minutes. The measurements: docs/BENCHMARKS-tabular.md.
PRESETS["table"] = dict(
    arch="mlp", latent_dim=128, g_width=256, d_width=256, g_depth=2, d_depth=2, g_extra_layers=0, d_extra_layers=0,
    g_norm="batch", d_norm="none", d_mbstd=0, augment="none", ada_target=0.0, groups=1, pack=1, loss="wasserstein", gp_weight=10.0, r1_gamma=0.0,
    precision="fp32", category_draw="argmax", diversity=0.0, diversity_kimg=0.0,
    r2_gamma=0.0, r1_every=1, ema_kimg=0.0, conditional=False, clusters=0, steps=3_600, batch_size=500, d_steps_per_g_step=2, lr_g=2e-4, lr_d=2e-4,
    ema_rampup=0.05, lr_decay=0.0, beta1=0.5, beta2=0.9, ema_decay=0.995, log_every=100, sample_every=1_000, checkpoint_every=1_200, best_metric="quality",
)

# Class-conditional runs of the images preset: the classes take the clusters' place, and MSGAN's term
# works among each class's samples for the first 384,000 images (6,000 steps of 64), then stops
# (docs/studies/2026-12-07-conditional-mode-seeking.md). Other presets' conditional runs go without it.
CONDITIONAL = {"images": dict(diversity=0.2, diversity_kimg=384.0)}

# Image sets smaller than this get the small_images preset (augmentation with an adaptive probability).
SMALL_IMAGE_SET = 30_000

# How the flag help names each preset: the data that picks it (config.preset_name).
_PRESET_LABELS = {
    "images": "other images", "small_images": "image sets under 30,000", "vectors": "other vectors", "stackedmnist": "Stacked MNIST",
    "table": "tables",
}


def shown_value(value) -> str:
    """A preset or default value as the flag help shows it (true/false, 0.001, 10,000)."""
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
        by_value.setdefault(shown_value(preset[key]), []).append(_PRESET_LABELS.get(name, name))
    common = max(by_value, key=lambda value: len(by_value[value]))  # the first of equals, in PRESETS order
    rest = [f"{value} for {' and '.join(names) if len(names) < 3 else ', '.join(names[:-1]) + ' and ' + names[-1]}"
            for value, names in by_value.items() if value != common]
    return "auto: " + ", ".join([*rest, f"else {common}"] if rest else [common])
