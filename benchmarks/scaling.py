"""Data-parallel scaling: training images/s at 1, 2, ... processes, and gradient traffic per iteration.

Runs ganforge's own training iteration (Trainer.iteration: D step + G step) under torchrun
for each process count, on CPU (Gloo) or one GPU per process (NCCL), with the global batch
fixed, and prints a Markdown table. Images/s counts real images consumed per second.

    python benchmarks/scaling.py                                  # digits, CPU, 1 and 2 processes
    python benchmarks/scaling.py --data mnist:../shared/data/mnist --nproc 1 2 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(args: argparse.Namespace) -> None:
    """One process of a torchrun job: times `args.iterations` training iterations after a warm-up."""
    from ganforge import distributed
    from ganforge.config import make_config, parse_overrides, resolve
    from ganforge.data import load_dataset
    from ganforge.training.state import Trainer

    device = distributed.init(args.device)
    config = make_config({"data": args.data, "device": args.device, "batch_size": args.batch_size}, parse_overrides(args.overrides))
    dataset = load_dataset(config.data)
    config = resolve(config, dataset.kind, dataset.sample_shape, "bench")
    trainer = Trainer(config, dataset, device)
    dataset.to(device)

    def run(iterations: int) -> float:
        distributed.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            scalars, _ = trainer.iteration(skip_nonfinite=False)
        scalars.tolist()  # wait for the device
        distributed.barrier()
        return time.perf_counter() - start

    run(args.warmup)
    seconds = run(args.iterations)
    if distributed.is_main():
        grad_bytes = {
            name: sum(p.numel() * p.element_size() for p in module.parameters())
            for name, module in (("generator", trainer.generator), ("discriminator", trainer.discriminator))
        }
        result = {
            "world_size": distributed.world_size(),
            "images_per_s": config.batch_size * config.d_steps_per_g_step * args.iterations / seconds,
            "batch_size": config.batch_size,
            "grad_bytes": grad_bytes,
            "d_steps_per_g_step": config.d_steps_per_g_step,
        }
        with open(args.result, "w") as f:
            json.dump(result, f)
    distributed.close()


def launch(args: argparse.Namespace, nproc: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            os.path.join(HERE, "scaling.py"), "--worker", "--result", result, "--data", args.data, "--device", args.device,
            "--batch_size", str(args.batch_size), "--iterations", str(args.iterations), "--warmup", str(args.warmup), *args.overrides,
        ]
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // nproc)))
        code = subprocess.run(command, env=env, stdout=subprocess.DEVNULL).returncode
        if code != 0:
            sys.exit(f"scaling.py: the run with {nproc} process(es) failed with exit code {code} (its errors are above)")
        with open(result) as f:
            return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=64, help="global batch")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = [launch(args, n) for n in args.nproc]
    base = rows[0]["images_per_s"] / rows[0]["world_size"]
    print(f"data={args.data} device={args.device} global batch={args.batch_size} iterations={args.iterations} cpus={os.cpu_count()}")
    print("| processes | images/s | per process | scaling efficiency |")
    print("|---|---|---|---|")
    for row in rows:
        per = row["images_per_s"] / row["world_size"]
        print(f"| {row['world_size']} | {row['images_per_s']:,.0f} | {per:,.0f} | {per / base:.0%} |")
    grads = rows[0]["grad_bytes"]
    d_steps = rows[0]["d_steps_per_g_step"]
    per_iteration = grads["generator"] + d_steps * grads["discriminator"]
    print(
        f"\nGradient all-reduce per iteration: G {grads['generator'] / 1e6:.2f} MB + D {grads['discriminator'] / 1e6:.2f} MB"
        f" x {d_steps} = {per_iteration / 1e6:.2f} MB (fp32); a ring all-reduce sends about 2(N-1)/N of that per process."
    )


if __name__ == "__main__":
    main()
