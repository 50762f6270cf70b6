"""The training loop: builds the players from a Config, alternates the two steps, logs and saves.

The loop only schedules `discriminator_step` and `generator_step` (ganforge.steps); every
scalar it logs stays on the device until a log interval, so the hot path never waits for
the device.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ganforge import distributed, rundir
from ganforge.checkpoint import latest_checkpoint, save_checkpoint
from ganforge.config import Config, resolve
from ganforge.data import BatchSampler, Dataset, load_dataset
from ganforge.data.dataset import to_data_space
from ganforge.ema import EMA, recalibrate_batchnorm
from ganforge.errors import DistributedFailure, GanforgeError, TrainingDiverged
from ganforge.export import export_generator
from ganforge.losses import get_loss
from ganforge.nets import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator, build_network, init_weights
from ganforge.noise import NoiseSampler
from ganforge.plots import save_samples
from ganforge.steps import discriminator_step, generator_step

SAMPLE_SEED_OFFSET = 7919  # fixed noise for sample images, apart from the training noise
MAX_ROLLBACKS = 3


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
        self.step, self.seconds = 0, 0.0

    def local_noise(self, n: int) -> Tensor:
        """This process's n noise vectors: its shard of the global draw of n * world_size."""
        return distributed.shard(self.noise(n * distributed.world_size()))

    def state_dict(self) -> dict:
        """The whole training state: a resumed run continues exactly as if it had never stopped."""
        return {
            "step": self.step,
            "seconds": self.seconds,
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
        self.step, self.seconds = state["step"], state["seconds"]
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
        for _ in range(config.d_steps_per_g_step):
            real = data.to_model_space(data.samples[distributed.shard(self.sampler.next())])
            d_out = discriminator_step(
                self.generator, self.d_train, self.d_optimizer, self.loss, self.local_noise, real,
                config.gp_weight, config.r1_gamma, skip_nonfinite,
            )
        g_out = generator_step(
            self.g_train, self.discriminator, self.g_optimizer, self.loss, self.local_noise, self.local_batch, skip_nonfinite
        )
        if self.ema is not None and g_out.stepped:
            self.ema.update()
        self.step += 1
        score = torch.sigmoid if self.loss.probabilistic else (lambda t: t)
        scalars = torch.stack([d_out.loss, g_out.loss, score(d_out.real_logits).mean(), score(g_out.fake_logits).mean()])
        return scalars, d_out.stepped and g_out.stepped


def train(config: Config, new: bool = False, progress: bool = True, say=print) -> Path:
    """Trains a GAN as `config` says, in its run folder; resumes that folder's last checkpoint.

    Returns the run folder. Raises GanforgeError for bad input before anything is written,
    TrainingDiverged when the divergence guard gives up, KeyboardInterrupt after saving a
    checkpoint on SIGINT/SIGTERM. Under torchrun, every process calls it; only the main
    process prints and writes.
    """
    if not distributed.launched():
        return _train(config, new, progress, say, None)
    device = distributed.init(config.device)
    if not distributed.is_main():
        progress, say = False, (lambda message: None)
    try:
        return _train(config, new, progress, say, device)
    except RuntimeError as err:
        if not isinstance(err, dist.DistError) and not any(w in str(err) for w in ("Connection closed", "Gloo", "NCCL", "peer")):
            raise
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise DistributedFailure(
            f"lost contact with another training process ({first}); run the same command again to resume from the last checkpoint"
        ) from None
    finally:
        distributed.close()


def _prepare_everywhere(run_dir: Path, config: Config, new: bool, say, extra: dict) -> dict | None:
    """The main process prepares the run folder; the others learn the outcome and load the same checkpoint."""
    state, error = None, None
    if distributed.is_main():
        try:
            state = rundir.prepare(run_dir, config, new, say, extra)
        except GanforgeError as err:
            error = err
    message, resume_step = distributed.broadcast_object((str(error) if error else None, state["step"] if state else None))
    if error is not None:
        raise error
    if message is not None:
        raise GanforgeError(message)
    if state is None and resume_step is not None:
        state, _ = latest_checkpoint(run_dir)
        if state is None or state["step"] != resume_step:
            raise GanforgeError(f"{run_dir}: this process cannot read the checkpoint of step {resume_step}: expected a run folder all processes share")
    return state


def _train(config: Config, new: bool, progress: bool, say, device: torch.device | None) -> Path:
    dataset = load_dataset(config.data, config.image_size, config.channels, config.on_bad_image)
    skipped_files = dataset.info.get("skipped_files", [])
    if skipped_files:
        say(f"warning: skipped {len(skipped_files)} unreadable image file(s) (on_bad_image=skip), e.g. {skipped_files[0]}")
    config = resolve(config, dataset.kind, dataset.sample_shape, run_name(config.data))
    device = device or pick_device(config.device)
    # Everything that can still refuse the config is built before the run folder is touched.
    trainer = Trainer(config, dataset, device)
    run_dir = Path(config.out)
    extra = {"world_size": distributed.world_size(), "batch_per_process": trainer.local_batch}
    state = _prepare_everywhere(run_dir, config, new, say, extra)
    dataset.to(device)
    if state is not None:
        trainer.load_state_dict(state, say)
    if trainer.step >= config.steps:
        say(f"{run_dir} is already trained to step {trainer.step} (steps={config.steps}); use --steps to train longer or --new to start over")
        return run_dir
    if trainer.step:
        say(f"resuming {run_dir} from step {trainer.step}")

    guard = config.max_nonfinite_steps > 0
    sums, count = torch.zeros(4, device=device), 0  # d_loss, g_loss, D(x), D(G(z)) since the last log line
    bad_in_a_row, skipped, rollbacks = 0, 0, 0
    bar = _progress(config.steps, trainer.step, progress)
    started = time.perf_counter() - trainer.seconds
    interval_start, interval_step = time.perf_counter(), trainer.step
    main = distributed.is_main()
    metrics_file = open(run_dir / rundir.METRICS, "a", encoding="utf-8") if main else None
    trainer.generator.train()
    trainer.discriminator.train()
    interrupted = False
    try:
        with _StopRequest() as stop:
            while trainer.step < config.steps:
                scalars, applied = trainer.iteration(skip_nonfinite=guard)
                step = trainer.step
                if guard and not applied:
                    bad_in_a_row, skipped = bad_in_a_row + 1, skipped + 1
                    if bad_in_a_row >= config.max_nonfinite_steps:
                        cause = f"{bad_in_a_row} steps in a row had NaN/Inf losses or gradients (skipped) by step {step}"
                        if config.on_divergence == "rollback" and rollbacks < MAX_ROLLBACKS:
                            rollbacks += 1
                            trainer.load_state_dict(_last_good(run_dir, cause), say)
                            trainer.reseed(rollbacks)
                            say(f"warning: {cause}; rolled back to step {trainer.step} with fresh noise and batches ({rollbacks}/{MAX_ROLLBACKS})")
                            rundir.keep_metrics_until(run_dir / rundir.METRICS, trainer.step)
                            bad_in_a_row, sums, count = 0, sums.zero_(), 0
                            bar.update(trainer.step - bar.n)
                            continue
                        raise TrainingDiverged(
                            f"training diverged: {cause}; the last good checkpoint in {run_dir / 'checkpoints'} is kept "
                            "(try lower learning rates, a gradient penalty, or on_divergence=rollback)"
                        )
                    continue
                bad_in_a_row = 0
                sums += scalars
                count += 1
                if step % config.log_every == 0 or step == config.steps:
                    d_loss, g_loss, d_real, d_fake = distributed.all_reduce_mean(sums / max(count, 1)).tolist()
                    now = time.perf_counter()
                    record = {
                        "step": step, "d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake,
                        "seconds": round(now - started, 3), "steps_per_s": round((step - interval_step) / (now - interval_start), 2),
                        "skipped_steps": skipped,
                    }
                    if metrics_file is not None:
                        metrics_file.write(json.dumps(record) + "\n")
                        metrics_file.flush()
                    bar.update(step - bar.n)
                    bar.set_postfix_str(f"d_loss {d_loss:.3f} g_loss {g_loss:.3f} D(x) {d_real:.3f} D(G(z)) {d_fake:.3f}")
                    sums.zero_()
                    count, interval_start, interval_step = 0, now, step
                if step % config.sample_every == 0 and main:
                    trainer.save_picture(trainer.sampling_generator(), run_dir / "samples" / f"step_{step:08d}.png")
                # Every process stops at the same step, when any of them was asked to.
                interrupted = distributed.any_rank(stop.requested, device) and step < config.steps
                if interrupted or (step % config.checkpoint_every == 0 and step != config.steps):
                    trainer.seconds = time.perf_counter() - started
                    trainer.save(run_dir)
                if interrupted:
                    break
            if not interrupted:
                trainer.seconds = time.perf_counter() - started
                final = trainer.save(run_dir)
    finally:
        if metrics_file is not None:
            metrics_file.close()
        bar.close()
    if interrupted:
        say(f"stopped at step {trainer.step}; checkpoint saved in {run_dir / 'checkpoints'}; run the same command again to resume")
        raise KeyboardInterrupt
    if final is not None:
        trainer.save_picture(final, run_dir / "samples" / "final.png")
    skipped_note = f" ({skipped} steps skipped for NaN/Inf)" if skipped else ""
    say(
        f"done: {trainer.step} steps in {trainer.seconds:.0f} s{skipped_note}. "
        f"Final samples: {run_dir / 'samples' / 'final.png'}; generator: {run_dir / 'generator.safetensors'}"
    )
    return run_dir


def _last_good(run_dir: Path, cause: str) -> dict:
    state, _ = latest_checkpoint(run_dir)
    if state is None:
        raise TrainingDiverged(f"training diverged: {cause}, and there is no checkpoint to roll back to (lower learning rates?)")
    return state


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, smoothing=0.1)
