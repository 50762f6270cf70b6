"""The training loop: builds the players from a Config, alternates the two steps, logs and saves.

The loop only schedules `discriminator_step` and `generator_step` (ganforge.steps); every
scalar it logs stays on the device until a log interval, so the hot path never waits for
the device.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import signal
import time
from pathlib import Path

import torch
from torch import nn

from ganforge import rundir
from ganforge.checkpoint import save_checkpoint
from ganforge.config import Config, resolve
from ganforge.data import BatchSampler, Dataset, load_dataset
from ganforge.data.dataset import to_data_space
from ganforge.ema import EMA, recalibrate_batchnorm
from ganforge.errors import GanforgeError
from ganforge.export import export_generator
from ganforge.losses import get_loss
from ganforge.nets import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator, init_weights
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


def run_name(spec: str) -> str:
    if spec.startswith("mnist:"):
        return "mnist"
    return Path(spec).stem if ("/" in spec or "." in spec) else spec


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between iterations (a second SIGINT aborts)."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> _StopRequest:
        self._saved = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)


def train(config: Config, new: bool = False, progress: bool = True, say=print) -> Path:
    """Trains a GAN as `config` says, in its run folder; resumes that folder's last checkpoint.

    Returns the run folder. Raises GanforgeError for bad input, before anything is written.
    """
    dataset = load_dataset(config.data, config.image_size, config.channels, config.on_bad_image)
    config = resolve(config, dataset.kind, dataset.sample_shape, run_name(config.data))
    device = pick_device(config.device)
    # Build everything that can still refuse the config before the run folder is touched.
    torch.manual_seed(config.seed)
    generator, discriminator = build_networks(config, dataset)
    sampler = BatchSampler(len(dataset), config.batch_size, seed=config.seed, device=device)
    run_dir = Path(config.out)
    state = rundir.prepare(run_dir, config, new, say)

    generator, discriminator = generator.to(device), discriminator.to(device)
    betas = (config.beta1, config.beta2)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=betas)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=betas)
    loss = get_loss(config.loss)
    noise = NoiseSampler(config.latent_dim, config.noise, device, seed=config.seed + 1)
    ema = EMA(generator, config.ema_decay) if config.ema_decay else None
    data = dataset.to(device)

    step, elapsed = 0, 0.0
    if state is not None:
        step, elapsed = state["step"], state["seconds"]
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        g_optimizer.load_state_dict(state["g_optimizer"])
        d_optimizer.load_state_dict(state["d_optimizer"])
        if ema is not None:
            ema.average.load_state_dict(state["ema"])
        try:
            noise.load_state_dict(state["noise"])
        except RuntimeError:  # RNG states differ between device types (e.g. cuda -> cpu)
            noise.rng.manual_seed(config.seed + 1 + step)
            say(f"warning: the run moved to {device.type}; its noise stream restarts from a new seed at step {step}")
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])

    def snapshot() -> nn.Module:
        """The generator to sample and export: the EMA (or live) weights with recalibrated BatchNorm."""
        net = copy.deepcopy(ema.average if ema is not None else generator)
        calibration = NoiseSampler(config.latent_dim, config.noise, device, seed=config.seed + SAMPLE_SEED_OFFSET + 1)
        recalibrate_batchnorm(net, calibration, batch_size=max(config.batch_size, 64))
        return net

    sample_count = 2500 if dataset.sample_shape == (2,) else 64
    reference = dataset.samples[:2000].cpu() if dataset.kind == "vectors" else None

    def save_picture(net: nn.Module, name: str) -> None:
        with torch.no_grad():
            z = NoiseSampler(config.latent_dim, config.noise, device, seed=config.seed + SAMPLE_SEED_OFFSET).sample(sample_count)
            samples = to_data_space(net(z), dataset.transform)
        if dataset.kind == "vectors" and dataset.sample_shape != (2,):
            return  # no picture for vectors that are not 2D
        save_samples(run_dir / "samples" / name, samples, reference)

    def save_all(at_step: int, seconds: float) -> nn.Module:
        """Exports the sampling generator and writes a full-state checkpoint; returns that generator."""
        net = snapshot()
        spec = {
            "class": type(net).__name__,
            "config": getattr(net, "config", {}),
            "noise": {"latent_dim": config.latent_dim, "distribution": config.noise},
            "transform": dataset.transform,
            "sample_shape": list(dataset.sample_shape),
            "step": at_step,
        }
        export_generator(run_dir, net, spec)
        save_checkpoint(
            run_dir,
            {
                "step": at_step,
                "seconds": seconds,
                "config": dataclasses.asdict(config),
                "generator": generator.state_dict(),
                "discriminator": discriminator.state_dict(),
                "g_optimizer": g_optimizer.state_dict(),
                "d_optimizer": d_optimizer.state_dict(),
                "ema": ema.average.state_dict() if ema is not None else None,
                "noise": noise.state_dict(),
                "sampler": sampler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            keep=config.keep_checkpoints,
        )
        return net

    if step >= config.steps:
        say(f"{run_dir} is already trained to step {step} (steps={config.steps}); use --steps to train longer or --new to start over")
        return run_dir
    if step:
        say(f"resuming {run_dir} from step {step}")

    sums = torch.zeros(4, device=device)  # d_loss, g_loss, D(x), D(G(z)) summed since the last log line
    count = 0
    to_score = torch.sigmoid if loss.probabilistic else (lambda t: t)
    bar = _progress(config.steps, step, progress)
    started, interval_start, interval_step = time.perf_counter() - elapsed, time.perf_counter(), step
    metrics_file = open(run_dir / rundir.METRICS, "a", encoding="utf-8")
    generator.train()
    discriminator.train()
    interrupted = False
    try:
        with _StopRequest() as stop:
            while step < config.steps:
                for _ in range(config.d_steps_per_g_step):
                    real = data.to_model_space(data.samples[sampler.next()])
                    d_out = discriminator_step(generator, discriminator, d_optimizer, loss, noise, real, config.gp_weight, config.r1_gamma)
                g_out = generator_step(generator, discriminator, g_optimizer, loss, noise, config.batch_size)
                if ema is not None:
                    ema.update()
                step += 1
                sums += torch.stack([d_out.loss, g_out.loss, to_score(d_out.real_logits).mean(), to_score(g_out.fake_logits).mean()])
                count += 1
                if step % config.log_every == 0 or step == config.steps:
                    d_loss, g_loss, d_real, d_fake = (sums / count).tolist()
                    now = time.perf_counter()
                    record = {
                        "step": step, "d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake,
                        "seconds": round(now - started, 3), "steps_per_s": round((step - interval_step) / (now - interval_start), 2),
                    }
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    bar.update(step - bar.n)
                    bar.set_postfix_str(f"d_loss {d_loss:.3f} g_loss {g_loss:.3f} D(x) {d_real:.3f} D(G(z)) {d_fake:.3f}")
                    sums.zero_()
                    count, interval_start, interval_step = 0, now, step
                if step % config.sample_every == 0:
                    save_picture(snapshot(), f"step_{step:08d}.png")
                if step % config.checkpoint_every == 0 and step != config.steps:
                    save_all(step, time.perf_counter() - started)
                if stop.requested:
                    interrupted = True
                    break
            final = save_all(step, time.perf_counter() - started)
    finally:
        metrics_file.close()
        bar.close()
    if interrupted:
        say(f"stopped at step {step}; checkpoint saved in {run_dir / 'checkpoints'}; run the same command again to resume")
        raise KeyboardInterrupt
    save_picture(final, "final.png")
    say(
        f"done: {step} steps in {time.perf_counter() - started:.0f} s. "
        f"Final samples: {run_dir / 'samples' / 'final.png'}; generator: {run_dir / 'generator.safetensors'}"
    )
    return run_dir


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, smoothing=0.1)
