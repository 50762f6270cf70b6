"""The state of one training run: the players, their optimizers and random streams.

`Trainer` builds them from a resolved Config, runs one training iteration (the two GAN
steps), and saves or restores the whole state, so resume and rollback share one path. It
also resolves, once, how the iteration runs fastest on its device (`Speed`): precision,
torch.compile, memory layout, the Adam implementation and TF32; the steps and the loop
never branch on these.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ganforge import distributed
from ganforge.augment import AdaptiveProbability, AugmentedDiscriminator, parse_policy
from ganforge.checkpoint import save_checkpoint, write_checkpoint
from ganforge.config import Config
from ganforge.data import Dataset
from ganforge.data.clusters import cluster_labels
from ganforge.data.dataset import to_data_space
from ganforge.ema import EMA, recalibrate_batchnorm
from ganforge.errors import GanforgeError, TrainingDiverged, first_line
from ganforge.evaluate import TrainingEvaluation, is_better
from ganforge.export import SampleableGenerator, export_generator
from ganforge.losses import get_loss
from ganforge.nets import (
    Conditioned,
    ConvDiscriminator,
    ConvGenerator,
    MLPDiscriminator,
    MLPGenerator,
    ResNetDiscriminator,
    ResNetGenerator,
    build_network,
    init_weights,
    mbstd_group,
)
from ganforge.noise import NoiseSampler
from ganforge.plots import save_samples
from ganforge.steps import FP32, discriminator_step, frozen, generator_step
from ganforge.tabular import build_table_networks

BEST = "best"  # RUN/best holds the best generator's export, checkpoints/best.pt its full state
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


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Speed:
    """How the networks run on a device, resolved once from the config.

    `precision` is the config's with fast resolved for the device; `autocast` wraps every
    forward pass (`nullcontext()` for fp32); `g_scaler`/`d_scaler` are GradScalers for fp16
    (else None); `fused_adam` picks Adam's fused kernel (which also skips a non-finite update
    on the device, without a host wait) over its foreach kernel (other devices).
    """

    precision: str  # fp32, bf16 or fp16
    autocast: AbstractContextManager
    g_scaler: torch.amp.GradScaler | None
    d_scaler: torch.amp.GradScaler | None
    fused_adam: bool
    channels_last: bool
    compile: str | None  # a torch.compile mode, or None for eager
    # Called as each iteration begins: CUDA graphs may then reuse the previous iteration's output
    # memory. A no-op without them (torch.compiler's version imports the compiler: 4 s, 100 MiB).
    iteration_begins: Callable[[], None]


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: a CUDA GPU of compute capability 8.0 or later, or a CPU with
    AVX512-BF16 or AMX (elsewhere bf16 is emulated, slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return False


def resolve_precision(config: Config, device: torch.device) -> str:
    """`precision` as it runs on `device`: fast is bf16 where the device computes it natively, else fp32."""
    if config.precision == "fast":
        return "bf16" if native_bf16(device) else "fp32"
    return config.precision or "fp32"


def resolve_speed(config: Config, device: torch.device) -> Speed:
    """The fastest way to run `config` on `device` that computes the same thing; refuses what cannot run."""
    precision = resolve_precision(config, device)
    dtype = PRECISIONS[precision]
    if device.type == "cuda":
        # TF32 matrix units for fp32 matmuls and convolutions: fp32 range, 10-bit mantissa.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # shapes are static: pick the fastest convolution once
        if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise GanforgeError(f"precision=bf16 is not supported by {torch.cuda.get_device_name(device)}: use precision=fp16 or fp32")
    elif dtype is not torch.float32 and device.type not in ("cpu", "mps"):
        raise GanforgeError(f"precision={precision} is not available on device {device}: use precision=fp32")
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not torch.float32 else FP32
    scalers = [torch.amp.GradScaler(device.type) if dtype is torch.float16 else None for _ in range(2)]
    return Speed(
        precision=precision,
        autocast=autocast,
        g_scaler=scalers[0],
        d_scaler=scalers[1],
        # One fused kernel per optimizer step; on 2 CPU cores 3.5-4.6x faster than the foreach kernel.
        fused_adam=device.type in ("cuda", "cpu"),
        channels_last=bool(config.channels_last) and config.arch == "conv",
        # reduce-overhead: compiled networks replayed as CUDA graphs (shapes are static); on a CPU it is plain compile.
        compile={"off": None, "on": "default", "graphs": "reduce-overhead"}[config.compile],
        iteration_begins=torch.compiler.cudagraph_mark_step_begin if config.compile == "graphs" else _nothing,
    )


@dataclass
class Players:
    """The networks one iteration's steps call: each player trained and frozen (D also as the penalties' network)."""

    g_run: nn.Module
    g_frozen: nn.Module
    d_run: nn.Module
    d_frozen: nn.Module
    d_train: nn.Module


def _nothing() -> None:
    pass


def cpu_threads(config: Config, device: torch.device) -> int | None:
    """torch's intra-op CPU threads for this run: `threads` on a CPU, or None to leave torch's
    choice (one per core, or OMP_NUM_THREADS, which torchrun sets for several processes per machine)."""
    return config.threads if device.type == "cpu" else None


@contextmanager
def torch_threads(count: int | None):
    """Runs the block with `count` intra-op CPU threads, then restores them; None leaves them alone."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def compiled(module: nn.Module, mode: str, trial: Callable[[nn.Module], None], say=print) -> nn.Module:
    """`torch.compile(module, mode=mode)`, or `module` itself (with a one-line warning) when compiling fails.

    torch.compile works lazily, so `trial(compiled_module)` runs it once the ways training
    will (forward and backward); any failure there keeps the eager module, which computes
    the same thing.
    """
    candidate = torch.compile(module, mode=mode)
    try:
        trial(candidate)
    except Exception as err:  # a compiler failure can surface as any exception type
        first = first_line(err, 160)
        say(f"warning: torch.compile failed for the {type(_plain(module)).__name__} ({type(err).__name__}: {first}); it runs eagerly")
        return module
    return candidate


def _plain(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


def build_networks(config: Config, dataset: Dataset) -> tuple[nn.Module, nn.Module]:
    """The generator/discriminator pair a resolved config describes."""
    if dataset.kind == "table":
        return build_table_networks(config, dataset)
    classes = len(dataset.class_names) if config.conditional else config.clusters
    if config.arch == "resnet":
        channels, size = dataset.sample_shape[0], dataset.sample_shape[-1]
        generator = ResNetGenerator(config.latent_dim, channels, size, config.g_width, config.g_depth, config.groups, classes)
        discriminator = ResNetDiscriminator(
            channels, size, config.d_width, config.d_depth, config.groups, config.pack, config.d_mbstd, classes
        )
    elif config.arch == "conv":
        channels, size = dataset.sample_shape[0], dataset.sample_shape[-1]
        generator = ConvGenerator(config.latent_dim, channels, size, config.g_width, config.g_extra_layers, config.g_norm, classes)
        discriminator = ConvDiscriminator(
            channels, size, config.d_width, config.d_extra_layers, config.d_norm, config.pack, config.d_mbstd, classes
        )
        init_weights(generator)
        init_weights(discriminator)
    else:
        shape = list(dataset.sample_shape)
        output = "tanh" if dataset.kind == "images" else "linear"
        generator = MLPGenerator(config.latent_dim, shape, config.g_width, config.g_depth, config.g_norm, output)
        discriminator = MLPDiscriminator(shape, config.d_width, config.d_depth, config.d_norm, config.pack, config.d_mbstd)
    return generator, discriminator


class Trainer:
    """The players, optimizers and random streams of one run, and everything that saves or restores them.

    Under torchrun every process holds the same players and random streams: each draws the
    whole global batch of indices and noise and keeps its own shard (`distributed.shard`),
    so the state is the same at any world size and a checkpoint resumes at any other.
    """

    def __init__(self, config: Config, dataset: Dataset, device: torch.device, say=print) -> None:
        self.config, self.dataset, self.device = config, dataset, device
        world = distributed.world_size()
        if config.batch_size % world or (config.batch_size // world) % config.pack:
            raise GanforgeError(
                f"batch_size={config.batch_size} does not split over {world} processes in groups of pack={config.pack}: "
                f"expected a multiple of {world * config.pack}"
            )
        self.local_batch = config.batch_size // world
        rows = self.local_batch // config.pack  # the discriminator's batch in each process
        if config.d_mbstd and mbstd_group(config.d_mbstd, rows) is None:
            raise GanforgeError(
                f"d_mbstd={config.d_mbstd} does not divide the discriminator's batch of {rows} rows per process "
                f"(batch_size={config.batch_size}, {world} processes, pack={config.pack}): expected a divisor of {rows}"
            )
        self.speed = speed = resolve_speed(config, device)
        self.labels = self._labels(config, dataset, say)
        torch.manual_seed(config.seed)
        generator, discriminator = build_networks(config, dataset)
        self.sampler = dataset.batch_sampler(config.batch_size, config.seed, device)
        layout = torch.channels_last if speed.channels_last else torch.contiguous_format
        self.generator = generator.to(device, memory_format=layout)
        self.discriminator = discriminator.to(device, memory_format=layout)
        betas = (config.beta1, config.beta2)
        kernel = {"fused": True} if speed.fused_adam else {"foreach": True}
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=betas, **kernel)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d, betas=betas, **kernel)
        self.loss = get_loss(config.loss)
        self.noise = NoiseSampler(config.latent_dim, config.noise, device, seed=config.seed + 1)
        self.ema = EMA(self.generator, config.ema_decay) if config.ema_decay or config.ema_kimg else None
        if config.sync_batchnorm and world > 1 and device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(self.generator)
            nn.SyncBatchNorm.convert_sync_batchnorm(self.discriminator)
        # The player being trained runs through its DDP wrapper (gradients all-reduced); the
        # frozen one runs as the plain module, so it takes no part in any reduction.
        self.g_train = distributed.wrap(self.generator, device)
        self.d_train = distributed.wrap(self.discriminator, device)
        # What the steps call: the same networks, compiled when asked. Penalties differentiate the
        # discriminator twice, which a compiled network cannot, so they use the eager one.
        self.g_run, self.g_frozen, self.d_run, self.d_frozen = self.g_train, self.generator, self.d_train, self.discriminator
        if speed.compile:
            mode = speed.compile
            self.g_run = compiled(self.g_train, mode, self._generator_trial, say)
            self.g_frozen = self.g_run if self.g_train is self.generator else compiled(self.generator, mode, self._generator_trial, say)
            self.d_run = compiled(self.d_train, mode, self._discriminator_trial, say)
            self.d_frozen = self.d_run if self.d_train is self.discriminator else compiled(self.discriminator, mode, self._discriminator_trial, say)
        self._augment_discriminator(config, device)
        self.step, self.seconds = 0, 0.0
        self.best: dict | None = None  # the best evaluation so far: {"metric", "value", "step"}
        self.skipped = torch.zeros((), dtype=torch.long, device=device)  # steps skipped for NaN/Inf, on the device

    def _augment_discriminator(self, config: Config, device: torch.device) -> None:
        """With `augment`, D sees every batch (real and generated, in both steps, penalties included) augmented:
        with probability `adaptive.p` per operation and image when `ada_target` is set, else always."""
        policy = parse_policy(config.augment)
        self.augment_rng = torch.Generator(device=device)
        self.augment_rng.manual_seed(config.seed + 2)
        self.adaptive = None
        if not policy:
            return
        if config.ada_target:
            self.adaptive = AdaptiveProbability(config.ada_target, config.batch_size, self.loss.relative, device, distributed.all_reduce_mean)
        self.d_run, self.d_frozen, self.d_train = (
            AugmentedDiscriminator(d, policy, self.augment_rng, self.adaptive) for d in (self.d_run, self.d_frozen, self.d_train)
        )

    def _labels(self, config: Config, dataset: Dataset, say) -> Tensor | None:
        """What the players are conditioned on: the data's class labels (conditional=true), k-means clusters
        of its images (clusters=K; found by the main process, the same on every one), or nothing."""
        if config.conditional:
            return dataset.labels
        if not config.clusters:
            return None
        start = time.perf_counter()
        labels = cluster_labels(dataset.samples, config.clusters, config.seed) if distributed.is_main() else None
        labels = distributed.broadcast_object(labels)
        say(f"clusters: {config.clusters} k-means clusters of the training images in {time.perf_counter() - start:.1f} s")
        return labels.to(self.device)

    def _players(self, labels: Tensor | None) -> Players:
        """The networks the steps call; in a conditional run, bound to the batch's class labels (generated
        samples take the classes of the real batch beside them)."""
        players = (self.g_run, self.g_frozen, self.d_run, self.d_frozen, self.d_train)
        return Players(*(players if labels is None else (Conditioned(player, labels) for player in players)))

    @property
    def skipped_steps(self) -> int:
        return int(self.skipped)

    def _generator_trial(self, generator: nn.Module) -> None:
        """Runs `generator` as training will (with and without a graph), leaving every state as it was."""
        z = torch.zeros(self.local_batch, self.config.latent_dim, device=self.device)
        with _kept(self.generator), self.speed.autocast:
            generator(z).float().sum().backward()
            with torch.no_grad():
                generator(z)

    def _discriminator_trial(self, discriminator: nn.Module) -> None:
        """Runs `discriminator` as training will (trainable and frozen), leaving every state as it was."""
        x = torch.zeros(self.local_batch, *self.dataset.sample_shape, device=self.device, requires_grad=True)
        labels = [torch.zeros(self.local_batch, dtype=torch.long, device=self.device)] if self.labels is not None else []
        with _kept(self.discriminator), self.speed.autocast:
            discriminator(x, *labels).float().sum().backward()
            with frozen(self.discriminator):
                discriminator(x, *labels).float().sum().backward()

    def local_noise(self, n: int) -> Tensor:
        """This process's n noise vectors: its shard of the global draw of n * world_size."""
        return distributed.shard(self.noise(n * distributed.world_size()))

    def state_dict(self) -> dict:
        """The whole training state: a resumed run continues exactly as if it had never stopped."""
        return {
            "step": self.step,
            "seconds": self.seconds,
            "skipped_steps": self.skipped_steps,
            "best": self.best,
            "config": dataclasses.asdict(self.config),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "ema": self.ema.average.state_dict() if self.ema is not None else None,
            "noise": self.noise.state_dict(),
            "augment_rng": self.augment_rng.get_state(),
            "augment_p": self.adaptive.state_dict() if self.adaptive is not None else None,
            "clusters": self.labels.to(torch.int32).cpu() if self.config.clusters else None,
            "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "transform": self.dataset.transform if self.dataset.kind == "table" else None,
        }

    def load_state_dict(self, state: dict, say=print) -> None:
        self.step, self.seconds = state["step"], state["seconds"]
        self.skipped.fill_(state["skipped_steps"])
        best = state.get("best")  # a best by another metric (best_metric changed) does not count
        self.best = best if best and best["metric"] == self.config.best_metric else None
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        if self.ema is not None:
            self.ema.average.load_state_dict(state["ema"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        try:  # absent in checkpoints from before augmentation, whose runs drew none
            self.augment_rng.set_state(state.get("augment_rng", self.augment_rng.get_state()))
        except RuntimeError:  # RNG states differ between device types (e.g. cuda -> cpu)
            self.augment_rng.manual_seed(self.config.seed + 2 + self.step)
        if self.adaptive is not None:
            self.adaptive.load_state_dict(state["augment_p"])
        if self.config.clusters:  # the run's own clusters, whatever k-means finds on this machine
            self.labels = state["clusters"].to(self.device, torch.long)
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
        # Building the network (its initial weights) and a generator that draws its own randomness (a
        # table's Gumbel noise) take torch's global RNG: a fork of it here, so when and how often a run
        # exports does not change the training that follows.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(config.seed + SAMPLE_SEED_OFFSET + 2)
            # A fresh plain network (no SyncBatchNorm, no wrapper) with the source's weights.
            net = build_network(type(source).__name__, source.config).to(self.device)
            net.load_state_dict(source.state_dict())
            calibration = NoiseSampler(config.latent_dim, config.noise, self.device, seed=config.seed + SAMPLE_SEED_OFFSET + 1)
            recalibrate_batchnorm(net, calibration, batch_size=max(config.batch_size, 64), labels=self._label_draw())
        return net

    def _label_draw(self) -> Callable[[int], Tensor] | None:
        """n class (or cluster) labels drawn as training draws them, from the training images' own labels; None
        for an unconditional run."""
        if self.labels is None:
            return None
        labels, stream = self.labels, torch.Generator().manual_seed(self.config.seed + SAMPLE_SEED_OFFSET + 3)
        return lambda n: labels[torch.randint(len(labels), (n,), generator=stream).to(labels.device)]

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
        export_generator(run_dir, net, self.generator_spec(net))
        save_checkpoint(run_dir, self.state_dict(), keep=self.config.keep_checkpoints)
        return net

    def generator_spec(self, net: nn.Module) -> dict:
        """What rebuilds `net` as a sampler without the training code (see `export.load_generator`)."""
        return {
            "class": type(net).__name__,
            "config": getattr(net, "config", {}),
            "noise": {"latent_dim": self.config.latent_dim, "distribution": self.config.noise},
            "transform": self.dataset.transform,
            "sample_shape": list(self.dataset.sample_shape),
            "classes": self.dataset.class_names if self.config.conditional else [],
            "clusters": torch.bincount(self.labels, minlength=self.config.clusters).tolist() if self.config.clusters else [],
            "step": self.step,
        }

    def evaluate(self, evaluation: TrainingEvaluation, run_dir: Path) -> dict:
        """Scores the sampling generator; a new best by `best_metric` is exported to RUN/best and saved as checkpoints/best.pt.

        Main process only. Returns the metrics.
        """
        net = self.sampling_generator()
        spec = self.generator_spec(net)
        metrics = evaluation(SampleableGenerator(net, spec))
        value = float(metrics[evaluation.metric])
        if is_better(evaluation.metric, value, self.best["value"] if self.best else None):
            self.best = {"metric": evaluation.metric, "value": value, "step": self.step}
            export_generator(run_dir / BEST, net, spec)
            write_checkpoint(run_dir / "checkpoints" / f"{BEST}.pt", self.state_dict())
        return metrics

    def save_picture(self, net: nn.Module, path: Path) -> None:
        """Sample grid (images) or scatter plot (2D data) from fixed noise, so pictures compare across steps."""
        shape = self.dataset.sample_shape
        if self.dataset.kind == "table" or (self.dataset.kind == "vectors" and shape != (2,)):
            return  # no picture for tables or vectors that are not 2D
        count = 2500 if shape == (2,) else 64
        z = NoiseSampler(self.config.latent_dim, self.config.noise, self.device, seed=self.config.seed + SAMPLE_SEED_OFFSET)
        with torch.no_grad():
            samples = to_data_space(net(z.sample(count)), self.dataset.transform)
        reference = self.dataset.samples[:2000].cpu() if self.dataset.kind == "vectors" else None
        save_samples(path, samples, reference)

    def iteration(self, skip_nonfinite: bool) -> tuple[Tensor, Tensor | None]:
        """One training iteration: d_steps_per_g_step discriminator steps, then one generator step.

        Returns (d_loss, g_loss, D(x), D(G(z))) as one device tensor, and whether every update
        was applied as a boolean device tensor (None when unchecked); nothing waits for the device.
        """
        config, data, speed = self.config, self.dataset, self.speed
        speed.iteration_begins()
        factor = lr_factor(self.step, config.steps, config.lr_decay)
        for optimizer, lr in ((self.g_optimizer, config.lr_g), (self.d_optimizer, config.lr_d)):
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
        applied, real, players, classes = None, None, None, None
        for d_step in range(self.step * config.d_steps_per_g_step, (self.step + 1) * config.d_steps_per_g_step):
            # Lazy R1 and R2: every r1_every-th discriminator step, r1_every times as strong.
            lazy = config.r1_every if d_step % config.r1_every == 0 else 0.0
            index = distributed.shard(self.sampler.next())
            real = data.real_batch(index)
            classes = None if self.labels is None else self.labels[index]
            players = self._players(classes)
            d_out = discriminator_step(
                players.g_frozen, players.d_run, self.d_optimizer, self.loss, self.local_noise, real,
                config.gp_weight, config.r1_gamma * lazy, skip_nonfinite, speed.autocast, speed.d_scaler, players.d_train,
                r2_gamma=config.r2_gamma * lazy,
            )
            applied = _both(applied, d_out.applied)
            if self.adaptive is not None:
                self.adaptive.observe(d_out.real_logits, d_out.fake_logits)
        g_out = generator_step(  # with the last D step's reals (and their classes), for a loss that compares
            players.g_run, players.d_frozen, self.g_optimizer, self.loss, self.local_noise, self.local_batch, skip_nonfinite,
            speed.autocast, speed.g_scaler, real=real, diversity=diversity_weight(config, self.step), classes=classes,
        )
        if self.ema is not None:
            self.ema.decay = ema_decay(config, self.step)
            _update_ema(self.ema, self.generator, g_out.applied)
        applied = _both(applied, g_out.applied)
        self.step += 1
        if applied is not None:
            self.skipped += ~applied
        score = torch.sigmoid if self.loss.probabilistic else (lambda t: t)
        scalars = torch.stack([d_out.loss, g_out.loss, score(d_out.real_logits).mean(), score(g_out.fake_logits).mean()])
        return scalars, applied


def lr_factor(step: int, steps: int, decay: float) -> float:
    """The learning-rate multiplier for iteration `step` (0-based) of `steps`.

    1 until the last `decay` fraction of the run, then a linear fall that would reach 0 one
    step after the last, so every step still moves the weights.
    """
    decay_steps = decay * steps
    return 1.0 if steps - step >= decay_steps else (steps - step) / decay_steps


def ema_decay(config: Config, step: int) -> float:
    """The EMA's decay per step: `ema_decay`, or with `ema_kimg` the decay whose half-life is that many
    thousand images, and at most `ema_rampup` times the images seen so far (StyleGAN2-ADA's ramp)."""
    if not config.ema_kimg:
        return config.ema_decay
    images = (step + 1) * config.batch_size
    half_life = min(config.ema_kimg * 1000, images * config.ema_rampup)
    return 0.5 ** (config.batch_size / max(half_life, 1e-8))


def diversity_weight(config: Config, step: int) -> float:
    """The mode-seeking term's weight in the generator step `step`: `diversity`, until `diversity_kimg`
    thousand images have been trained on (0: throughout)."""
    if config.diversity_kimg and step * config.batch_size >= config.diversity_kimg * 1000:
        return 0.0
    return config.diversity


def _both(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """Logical and of two optional device flags (None: applied, unchecked)."""
    return b if a is None else a if b is None else a & b


@torch.no_grad()
def _update_ema(ema: EMA, generator: nn.Module, applied: Tensor | None) -> None:
    """The EMA update, left out on the device when the generator's update was skipped."""
    if applied is None:
        ema.update()
        return
    weight = (1.0 - ema.decay) * applied.float()  # 0 when skipped: the average stays bit for bit
    averages = list(ema.average.parameters())
    torch._foreach_lerp_(averages, [p.detach() for p in generator.parameters()], [weight] * len(averages))
    for average, current in zip(ema.average.buffers(), generator.buffers()):
        average.copy_(torch.where(applied, current, average))


class _kept:
    """Puts back `module`'s buffers and clears its gradients on exit: a trial run leaves no trace."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self) -> None:
        self.buffers = [(b, b.clone()) for b in self.module.buffers()]

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for buffer, saved in self.buffers:
                buffer.copy_(saved)
        self.module.zero_grad(set_to_none=True)
