"""Training throughput: ganforge's iteration against the textbook PyTorch loop, side by side.

The same networks (same constructor, init and seed), data and batch size run two ways in one
process, in alternating rounds:

- ganforge: `Trainer.iteration` (D step, then the G step against a frozen D, EMA update,
  divergence guard on, scalars read every `log_every` steps), with the speed settings given
  here (`--precision`, `--compile`, `--channels_last`) and the rest resolved by the Trainer.
- textbook: the PyTorch DCGAN example's loop: fp32, a DataLoader over a TensorDataset (on a
  GPU the batches are sliced from data already on the device instead, as the faster variant),
  BCE-with-logits loss, D step (real, then fake) then G step re-using the fake batch, the
  discriminator not frozen, `torch.optim.Adam` with its defaults, `.item()` every step.

Images/s counts real images consumed per second (one batch per iteration). Also reported:
the paired ratio (median over rounds), peak memory (on CPU the peak RSS of a fresh process
that runs only that loop; torch.cuda.max_memory_allocated on GPU), FLOPs per iteration (torch.utils.flop_counter),
achieved TFLOP/s and, on a GPU with a known peak, model-FLOPs utilisation; and the generator
step alone with the discriminator frozen (ganforge) against not frozen.

    python benchmarks/throughput.py --case digits
    python benchmarks/throughput.py --case toy --case digits --case mnist --json speed.json
    python benchmarks/throughput.py --case dcgan64 --device cuda --precision bf16 --channels_last on
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ganforge.config import make_config, resolve  # noqa: E402
from ganforge.data import load_dataset  # noqa: E402
from ganforge.data.dataset import Dataset  # noqa: E402
from ganforge.data.images import IMAGE_TRANSFORM  # noqa: E402
from ganforge.steps import generator_step  # noqa: E402
from ganforge.training.guard import Tally  # noqa: E402
from ganforge.training.state import Trainer, build_networks, pick_device  # noqa: E402

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
# Dense bf16 tensor-core peak in TFLOP/s, for model-FLOPs utilisation (MFU).
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def case_data(case: str, batch_size: int | None) -> tuple[dict, Dataset]:
    """The config overrides and dataset of a benchmark case."""
    if case == "toy":
        # Without the ring8 preset's R1 penalty, which the textbook loop does not compute.
        return {"data": "ring8", "r1_gamma": 0.0}, load_dataset("ring8")
    if case == "digits":
        return {"data": "digits"}, load_dataset("digits")
    if case == "mnist":
        if MNIST.is_dir():
            return {"data": f"mnist:{MNIST}"}, load_dataset(f"mnist:{MNIST}")
        generator = torch.Generator().manual_seed(0)
        samples = torch.randint(0, 256, (60_000, 1, 28, 28), dtype=torch.uint8, generator=generator)
        return {"data": "mnist-random"}, Dataset("mnist-random", "images", samples, IMAGE_TRANSFORM)
    if case == "dcgan64":
        # DCGAN-64: nz=100, ngf=ndf=64, BatchNorm (the "images" preset at 64x64x3 builds exactly it).
        count = max(4 * (batch_size or 128), 8_192)
        samples = torch.randint(0, 256, (count, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        return {"data": "dcgan64-random", "latent_dim": 100, "g_width": 64, "d_width": 64}, Dataset(
            "dcgan64-random", "images", samples, IMAGE_TRANSFORM
        )
    raise SystemExit(f"unknown case {case!r}: expected toy, digits, mnist or dcgan64")


class GanforgeLoop:
    """ganforge's training iteration, bookkept as the training loop does (guard on, log every log_every)."""

    def __init__(self, config, dataset: Dataset, device: torch.device) -> None:
        self.trainer = Trainer(config, dataset, device, say=lambda message: print(message, file=sys.stderr))
        dataset.to(device)
        self.tally = Tally(device, config.max_nonfinite_steps)
        self.guard, self.log_every = config.max_nonfinite_steps > 0, config.log_every

    def run(self, iterations: int) -> None:
        for _ in range(iterations):
            scalars, applied = self.trainer.iteration(self.guard)
            self.tally.add(scalars, applied, self.trainer.step)
            if self.trainer.step % self.log_every == 0:
                self.tally.diverged_at()
                count, sums = self.tally.read()
                (sums / max(count, 1)).tolist()
                self.tally.reset()
        self.tally.sums.tolist()  # wait for the device


class TextbookLoop:
    """The PyTorch DCGAN example's training loop, on ganforge's networks (which return logits)."""

    def __init__(self, config, dataset: Dataset, device: torch.device) -> None:
        torch.manual_seed(config.seed)
        generator, discriminator = build_networks(config, dataset)
        self.generator, self.discriminator = generator.to(device), discriminator.to(device)
        betas = (config.beta1, config.beta2)
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=betas)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d, betas=betas)
        self.criterion = nn.BCEWithLogitsLoss()
        self.latent_dim, self.device, self.batch_size = config.latent_dim, device, config.batch_size
        data = dataset.to_model_space(dataset.samples.cpu())
        if device.type == "cpu":
            loader = DataLoader(TensorDataset(data), batch_size=config.batch_size, shuffle=True, drop_last=True)
            self.batches = self._forever(loader)
        else:  # the data already on the device: faster than the example's DataLoader
            self.batches = self._on_device(data.to(device))
        self.log: list[float] = []

    @staticmethod
    def _forever(loader):
        while True:
            for (real,) in loader:
                yield real

    def _on_device(self, data):
        while True:
            order = torch.randperm(data.shape[0], device=self.device)
            for start in range(0, data.shape[0] - self.batch_size + 1, self.batch_size):
                yield data[order[start : start + self.batch_size]]

    def run(self, iterations: int) -> None:
        netG, netD, criterion = self.generator, self.discriminator, self.criterion
        for _ in range(iterations):
            real = next(self.batches).to(self.device)
            b = real.shape[0]
            # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
            netD.zero_grad()
            label = torch.full((b,), 1.0, device=self.device)
            output = netD(real).view(-1)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = torch.sigmoid(output).mean().item()
            noise = torch.randn(b, self.latent_dim, device=self.device)
            fake = netG(noise)
            label.fill_(0.0)
            output = netD(fake.detach()).view(-1)
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = torch.sigmoid(output).mean().item()
            errD = errD_real + errD_fake
            self.d_optimizer.step()
            # (2) Update G: maximize log(D(G(z)))
            netG.zero_grad()
            label.fill_(1.0)
            output = netD(fake).view(-1)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = torch.sigmoid(output).mean().item()
            self.g_optimizer.step()
            self.log = [errD.item(), errG.item(), D_x, D_G_z1, D_G_z2]


def generator_step_rates(loop: GanforgeLoop, seconds: float, rounds: int) -> tuple[float, float]:
    """Images/s of the generator step alone: ganforge's (D frozen) and the same six steps with D not frozen."""
    trainer = loop.trainer
    generator, discriminator = copy.deepcopy(trainer.generator), copy.deepcopy(trainer.discriminator)
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-9, **({"fused": True} if trainer.speed.fused_adam else {"foreach": True}))
    autocast, loss, noise, batch = trainer.speed.autocast, trainer.loss, trainer.local_noise, trainer.local_batch

    def frozen_step():
        generator_step(generator, discriminator, optimizer, loss, noise, batch, autocast=autocast)

    def unfrozen_step():
        z = noise(batch)
        with autocast:
            fake_logits = discriminator(generator(z)).float()
        g_loss = loss.generator(fake_logits)
        optimizer.zero_grad(set_to_none=True)
        g_loss.backward()  # weight gradients for D too, thrown away
        optimizer.step()
        discriminator.zero_grad(set_to_none=True)

    rates = {}
    ways = {"frozen": frozen_step, "unfrozen": unfrozen_step}
    iterations = calibrate(lambda n: [ways["frozen"]() for _ in range(n)], trainer.device, seconds)
    times = {name: [] for name in ways}
    for r in range(rounds):
        for name in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            times[name].append(timed(lambda n, f=ways[name]: [f() for _ in range(n)], iterations, trainer.device))
    for name in ways:
        rates[name] = batch * iterations / statistics.median(times[name])
    return rates["frozen"], rates["unfrozen"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run, iterations: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    run(iterations)
    sync(device)
    return time.perf_counter() - start


def calibrate(run, device: torch.device, seconds: float) -> int:
    """Iterations that take about `seconds` (after a few warm-up iterations)."""
    run(3)
    elapsed = timed(run, 5, device)
    return max(5, int(5 * seconds / elapsed))


def flops_per_iteration(run) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        run(1)
    return counter.get_total_flops()


def measure(case: str, batch_size: int | None, args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    overrides, dataset = case_data(case, batch_size)
    layers = {**overrides, "device": args.device, "precision": args.precision, "compile": args.compile}
    if batch_size:
        layers["batch_size"] = batch_size
    if args.channels_last != "auto":
        layers["channels_last"] = args.channels_last
    config = make_config(layers)
    config = resolve(config, dataset.kind, dataset.sample_shape, case)
    textbook = TextbookLoop(config, dataset, device)
    ganforge = GanforgeLoop(config, dataset, device)
    loops = {"ganforge": ganforge, "textbook": textbook}
    iterations = {name: calibrate(loop.run, device, args.seconds) for name, loop in loops.items()}
    # FLOPs are counted eagerly: a FLOP counter and compiled graphs do not mix.
    counted = {"ganforge": ganforge if config.compile == "off" else GanforgeLoop(dataclasses.replace(config, compile="off"), dataset, device)}
    flops = {name: flops_per_iteration(counted.get(name, loop).run) for name, loop in loops.items()}
    del counted
    times = {name: [] for name in loops}
    peak = dict.fromkeys(loops, 0)
    for r in range(args.rounds):
        for name in (list(loops) if r % 2 == 0 else list(loops)[::-1]):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[name].append(timed(loops[name].run, iterations[name], device))
            if device.type == "cuda":
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated(device))
    if device.type == "cpu":  # one process's peak RSS covers everything it ran: one fresh process per loop
        peak = {name: peak_rss(name, case, batch_size, args) for name in loops}
    rate = {name: config.batch_size * iterations[name] / statistics.median(times[name]) for name in loops}
    ratios = [
        (iterations["ganforge"] / g) / (iterations["textbook"] / t) for g, t in zip(times["ganforge"], times["textbook"])
    ]
    g_frozen, g_unfrozen = generator_step_rates(ganforge, args.seconds / 2, args.rounds)
    peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if device.type == "cuda" and k in torch.cuda.get_device_name(device)), None)
    tflops = {name: flops[name] * rate[name] / config.batch_size / 1e12 for name in loops}
    speed = ganforge.training.state.speed
    return {
        "case": case,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "batch_size": config.batch_size,
        "settings": (
            f"{config.precision}, compile {config.compile}, channels_last {'on' if speed.channels_last else 'off'}, "
            f"Adam {'fused' if speed.fused_adam else 'foreach'}"
        ),
        "ganforge_images_per_s": round(rate["ganforge"]),
        "textbook_images_per_s": round(rate["textbook"]),
        "ratio": round(statistics.median(ratios), 2),
        "ratio_min_max": [round(min(ratios), 2), round(max(ratios), 2)],
        "g_step_frozen_images_per_s": round(g_frozen),
        "g_step_unfrozen_images_per_s": round(g_unfrozen),
        "peak_memory_mib": {name: round(peak[name] / 2**20) for name in loops},
        "memory_kind": "peak RSS of a process running only that loop" if device.type == "cpu" else "cuda max_memory_allocated",
        "gflop_per_iteration": {name: round(flops[name] / 1e9, 3) for name in loops},
        "tflop_per_s": {name: round(tflops[name], 3) for name in loops},
        "mfu_vs_bf16_peak": {name: round(tflops[name] / peak_tflops, 3) for name in loops} if peak_tflops else None,
        "rounds": args.rounds,
        "torch": torch.__version__,
    }


def peak_rss(way: str, case: str, batch_size: int | None, args: argparse.Namespace) -> int:
    """Peak resident memory in bytes of a fresh process that builds and runs only `way` (CPU)."""
    command = [sys.executable, __file__, "--case", case, "--peak_rss_of", way, "--precision", args.precision,
               "--compile", args.compile, "--channels_last", args.channels_last, "--device", args.device]
    if batch_size:
        command += ["--batch", str(batch_size)]
    return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1])


def run_alone(way: str, args: argparse.Namespace) -> None:
    """Builds one loop, runs 20 iterations and prints this process's peak RSS in bytes."""
    device = pick_device(args.device)
    batch = args.batch[0] if args.batch else None
    overrides, dataset = case_data(args.case[0], batch)
    layers = {**overrides, "device": args.device, "precision": args.precision, "compile": args.compile}
    if batch:
        layers["batch_size"] = batch
    if args.channels_last != "auto":
        layers["channels_last"] = args.channels_last
    config = resolve(make_config(layers), dataset.kind, dataset.sample_shape, args.case[0])
    loop = (GanforgeLoop if way == "ganforge" else TextbookLoop)(config, dataset, device)
    loop.run(20)
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's high-water mark across exec.
    status = Path("/proc/self/status").read_text()
    print(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024)


def table(results: list[dict]) -> str:
    lines = [
        "| case | batch | device | ganforge settings | ganforge img/s | textbook img/s | ratio (min-max) "
        "| G step img/s: D frozen / not | peak MiB ganforge / textbook | TFLOP/s ganforge / textbook | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mfu = f"{r['mfu_vs_bf16_peak']['ganforge']:.1%} / {r['mfu_vs_bf16_peak']['textbook']:.1%}" if r["mfu_vs_bf16_peak"] else "-"
        lines.append(
            f"| {r['case']} | {r['batch_size']} | {r['device']} | {r['settings']} | {r['ganforge_images_per_s']:,} "
            f"| {r['textbook_images_per_s']:,} | {r['ratio']:.2f}x ({r['ratio_min_max'][0]:.2f}-{r['ratio_min_max'][1]:.2f}) "
            f"| {r['g_step_frozen_images_per_s']:,} / {r['g_step_unfrozen_images_per_s']:,} "
            f"| {r['peak_memory_mib']['ganforge']:,} / {r['peak_memory_mib']['textbook']:,} "
            f"| {r['tflop_per_s']['ganforge']:.3g} / {r['tflop_per_s']['textbook']:.3g} | {mfu} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", choices=["toy", "digits", "mnist", "dcgan64"], help="repeatable (default: toy, digits, mnist)")
    parser.add_argument("--batch", type=int, action="append", help="batch size, repeatable (default: the case's; dcgan64: 128 and 1024)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", default="off", choices=["off", "on", "graphs"])
    parser.add_argument("--channels_last", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per loop")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--peak_rss_of", choices=["ganforge", "textbook"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_rss_of:
        return run_alone(args.peak_rss_of, args)
    results = []
    for case in args.case or ["toy", "digits", "mnist"]:
        for batch in args.batch or ([128, 1024] if case == "dcgan64" else [None]):
            results.append(measure(case, batch, args))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
