"""Default settings by kind of data; `config.resolve` fills every auto (None) key from one of these.

Each preset sets the keys of both network families (depth for mlp, extra layers for conv),
so a run that switches `arch` still gets a complete config.
"""

# Defaults by kind of data. Mixtures: a small MLP GAN; images: DCGAN.
PRESETS: dict[str, dict] = {
    # 2D mixtures (ring8, grid25), 1-D latent: the generator traces one curve through every mode, and
    # 4 hidden layers make its jumps between modes sharp (few samples in between) far sooner than 3.
    # 6,000 steps: about 40 s on 2 CPU cores. benchmarks/toy_modes.py measures these defaults.
    "mixture": dict(
        arch="mlp", latent_dim=1, g_width=128, d_width=128, g_depth=4, d_depth=4, g_extra_layers=0, d_extra_layers=0,
        g_norm="none", d_norm="none",
        steps=6_000, batch_size=256, lr_g=1e-3, lr_d=1e-3, beta1=0.5, beta2=0.999, ema_decay=0.998,
        log_every=200, sample_every=2_000, checkpoint_every=2_000,
    ),
    "vectors": dict(
        arch="mlp", g_width=256, d_width=256, g_depth=3, d_depth=3, g_extra_layers=0, d_extra_layers=0,
        g_norm="none", d_norm="none",
        steps=10_000, batch_size=128, lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, ema_decay=0.999,
        log_every=200, sample_every=2_000, checkpoint_every=5_000,
    ),
    "images": dict(
        arch="conv", g_width=64, d_width=64, g_extra_layers=0, d_extra_layers=0, g_depth=3, d_depth=3,
        g_norm="batch", d_norm="batch",
        steps=10_000, batch_size=64, lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, ema_decay=0.999,
        log_every=100, sample_every=1_000, checkpoint_every=2_000,
    ),
    # scikit-learn's 8x8 digits: a slim DCGAN pair (2x2 -> 4x4 -> 8x8), a few minutes of CPU at most.
    "digits": dict(
        arch="conv", latent_dim=32, g_width=32, d_width=32, g_extra_layers=0, d_extra_layers=0, g_depth=3, d_depth=3,
        g_norm="batch", d_norm="batch", steps=5_000, batch_size=64, lr_g=2e-4, lr_d=2e-4,
        beta1=0.5, beta2=0.999, ema_decay=0.999, log_every=100, sample_every=1_000, checkpoint_every=1_000,
    ),
}
