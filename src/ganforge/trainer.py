"""The state of one training run: the players, their optimizers and random streams.

`Trainer` builds them from a resolved Config, runs one training iteration (the two GAN
steps), and saves or restores the whole state, so resume and rollback share one path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor, nn

from ganforge import distributed
from ganforge.checkpoint import save_checkpoint
from ganforge.config import Config
from ganforge.data import BatchSampler, Dataset
from ganforge.data.dataset import to_data_space
from ganforge.ema import EMA, recalibrate_batchnorm
from ganforge.errors import GanforgeError, TrainingDiverged
from ganforge.export import export_generator
from ganforge.losses import get_loss
from ganforge.nets import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator, build_network, init_weights
from ganforge.noise import NoiseSampler
from ganforge.plots import save_samples
from ganforge.steps import discriminator_step, generator_step

SAMPLE_SEED_OFFSET = 7919  # fixed noise for sample images, apart from the training noise


def pick_device(name: str) -> torch.device:
    """auto | cpu | cuda | cuda:N | mps -> an available torch.device, or a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise GanforgeError("device='mps' is not available on this machine: use --device cpu")
        return torch.device("mps")
    index = name[len("cuda:") :] if name.startswith("cuda:") else "0" if name == "cuda" else None
    if index is None or not index.isdigit():
        raise GanforgeError(f"device={name!r} is not a device: expected auto, cpu, cuda, cuda:N or mps")
    if not torch.cuda.is_available():
        raise GanforgeError(f"device='{name}' is not available: no CUDA device found; use --device cpu")
    if int(index) >= torch.cuda.device_count():
        raise GanforgeError(f"device='{name}' is not available: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def build_networks(config: Config, dataset: Dataset) -> tuple[nn.Module, nn.Module]:
    """The generator/discriminator pair a resolved config describes."""
    if config.arch == "conv":
        channels, size = dataset.sample_shape[0], dataset.sample_shape[-1]
        generator = ConvGenerator(config.latent_dim, channels, size, config.g_width, config.g_extra_layers, config.g_norm)
        discriminator = ConvDiscriminator(channels, size, config.d_width, config.d_extra_layers, config.d_norm, config.pack)
        init_weights(generator)
        init_weights(discriminator)
    else:
        shape = list(dataset.sample_shape)
        output = "tanh" if dataset.kind == "images" else "linear"
        generator = MLPGenerator(config.latent_dim, shape, config.g_width, config.g_depth, config.g_norm, output)
        discriminator = MLPDiscriminator(shape, config.d_width, config.d_depth, config.d_norm, config.pack)
    return generator, discriminator


class Trainer:
    """The players, optimizers and random streams of one run, and everything that saves or restores them.

    Under torchrun every process holds the same players and random streams: each draws the
    whole global batch of indices and noise and keeps its own shard (`distributed.shard`),
    so the state is the same at any world size and a checkpoint resumes at any other.
    """

    def __init__(self, config: Config, dataset: Dataset, device: torch.device) -> None:
        self.config, self.dataset, self.device = config, dataset, device
        world = distributed.world_size()
        if config.batch_size % world or (config.batch_size // world) % config.pack:
            raise GanforgeError(
                f"batch_size={config.batch_size} does not split over {world} processes in groups of pack={config.pack}: "
                f"expected a multiple of {world * config.pack}"
            )
        self.local_batch = config.batch_size // world
        torch.manual_seed(config.seed)
        generator, discriminator = build_networks(config, dataset)
        self.sampler = BatchSampler(len(dataset), config.batch_size, seed=config.seed, device=device)
        self.generator, self.discriminator = generator.to(device), discriminator.to(device)
        betas = (config.beta1, config.beta2)
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=betas)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d, betas=betas)
        self.loss = get_loss(config.loss)
        self.noise = NoiseSampler(config.latent_dim, config.noise, device, seed=config.seed + 1)
        self.ema = EMA(self.generator, config.ema_decay) if config.ema_decay else None
        if config.sync_batchnorm and world > 1 and device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(self.generator)
            nn.SyncBatchNorm.convert_sync_batchnorm(self.discriminator)
        # The player being trained runs through its DDP wrapper (gradients all-reduced); the
        # frozen one runs as the plain module, so it takes no part in any reduction.
        self.g_train = distributed.wrap(self.generator, device)
        self.d_train = distributed.wrap(self.discriminator, device)
        self.step, self.seconds, self.skipped_steps = 0, 0.0, 0

    def local_noise(self, n: int) -> Tensor:
        """This process's n noise vectors: its shard of the global draw of n * world_size."""
        return distributed.shard(self.noise(n * distributed.world_size()))

    def state_dict(self) -> dict:
        """The whole training state: a resumed run continues exactly as if it had never stopped."""
        return {
            "step": self.step,
            "seconds": self.seconds,
            "skipped_steps": self.skipped_steps,
            "config": dataclasses.asdict(self.config),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "ema": self.ema.average.state_dict() if self.ema is not None else None,
            "noise": self.noise.state_dict(),
            "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict, say=print) -> None:
        self.step, self.seconds, self.skipped_steps = state["step"], state["seconds"], state["skipped_steps"]
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        if self.ema is not None:
            self.ema.average.load_state_dict(state["ema"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        try:
            self.noise.load_state_dict(state["noise"])
        except RuntimeError:  # RNG states differ between device types (e.g. cuda -> cpu)
            self.noise.rng.manual_seed(self.config.seed + 1 + self.step)
            say(f"warning: the run moved to {self.device.type}; its noise stream restarts from a new seed at step {self.step}")

    def reseed(self, salt: int) -> None:
        """New noise and batch streams (after a rollback, so the same divergence is not replayed)."""
        self.noise.rng.manual_seed(self.config.seed + 1 + 1_000_003 * salt)
        self.sampler.seed = self.config.seed + 7_919 * salt

    def weights_finite(self) -> bool:
        tensors = [*self.generator.state_dict().values(), *self.discriminator.state_dict().values()]
        return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())

    def sampling_generator(self) -> nn.Module:
        """The generator to sample and export: the EMA (or live) weights with recalibrated BatchNorm."""
        config = self.config
        source = self.ema.average if self.ema is not None else self.generator
        # A fresh plain network (no SyncBatchNorm, no wrapper) with the source's weights.
        net = build_network(type(source).__name__, source.config).to(self.device)
        net.load_state_dict(source.state_dict())
        calibration = NoiseSampler(config.latent_dim, config.noise, self.device, seed=config.seed + SAMPLE_SEED_OFFSET + 1)
        recalibrate_batchnorm(net, calibration, batch_size=max(config.batch_size, 64))
        return net

    def save(self, run_dir: Path) -> nn.Module | None:
        """Exports the sampling generator and writes a full-state checkpoint; returns that generator.

        Every process calls it (BatchNorm statistics are averaged across processes first);
        only the main process writes, and returns the generator. Non-finite weights are never
        saved: the last good checkpoint stays the newest.
        """
        distributed.average_buffers(self.generator)
        distributed.average_buffers(self.discriminator)
        if not self.weights_finite():
            raise TrainingDiverged(
                f"training diverged by step {self.step}: the weights hold NaN/Inf, so nothing was saved; "
                f"the last good checkpoint in {run_dir / 'checkpoints'} is kept (try lower learning rates)"
            )
        if not distributed.is_main():
            return None
        net = self.sampling_generator()
        spec = {
            "class": type(net).__name__,
            "config": getattr(net, "config", {}),
            "noise": {"latent_dim": self.config.latent_dim, "distribution": self.config.noise},
            "transform": self.dataset.transform,
            "sample_shape": list(self.dataset.sample_shape),
            "step": self.step,
        }
        export_generator(run_dir, net, spec)
        save_checkpoint(run_dir, self.state_dict(), keep=self.config.keep_checkpoints)
        return net

    def save_picture(self, net: nn.Module, path: Path) -> None:
        """Sample grid (images) or scatter plot (2D data) from fixed noise, so pictures compare across steps."""
        shape = self.dataset.sample_shape
        if self.dataset.kind == "vectors" and shape != (2,):
            return  # no picture for vectors that are not 2D
        count = 2500 if shape == (2,) else 64
        z = NoiseSampler(self.config.latent_dim, self.config.noise, self.device, seed=self.config.seed + SAMPLE_SEED_OFFSET)
        with torch.no_grad():
            samples = to_data_space(net(z.sample(count)), self.dataset.transform)
        reference = self.dataset.samples[:2000].cpu() if self.dataset.kind == "vectors" else None
        save_samples(path, samples, reference)

    def iteration(self, skip_nonfinite: bool) -> tuple[Tensor, bool]:
        """One training iteration: d_steps_per_g_step discriminator steps, then one generator step.

        Returns (d_loss, g_loss, D(x), D(G(z))) as one device tensor, and whether every update was applied.
        """
        config, data = self.config, self.dataset
        applied = True
        for _ in range(config.d_steps_per_g_step):
            real = data.to_model_space(data.samples[distributed.shard(self.sampler.next())])
            d_out = discriminator_step(
                self.generator, self.d_train, self.d_optimizer, self.loss, self.local_noise, real,
                config.gp_weight, config.r1_gamma, skip_nonfinite,
            )
            applied = applied and d_out.stepped
        g_out = generator_step(
            self.g_train, self.discriminator, self.g_optimizer, self.loss, self.local_noise, self.local_batch, skip_nonfinite
        )
        if self.ema is not None and g_out.stepped:
            self.ema.update()
        self.step += 1
        self.skipped_steps += not (applied and g_out.stepped)
        score = torch.sigmoid if self.loss.probabilistic else (lambda t: t)
        scalars = torch.stack([d_out.loss, g_out.loss, score(d_out.real_logits).mean(), score(g_out.fake_logits).mean()])
        return scalars, applied and g_out.stepped

