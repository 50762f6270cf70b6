"""The one place that knows how many processes there are (torch.distributed, started by torchrun).

With WORLD_SIZE unset (a plain `ganforge train`) every helper here is a no-op for a single
process, so the training loop reads the same at any world size.
"""

from __future__ import annotations

import datetime
import inspect
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn

TIMEOUT = datetime.timedelta(seconds=int(os.environ.get("GANFORGE_DIST_TIMEOUT", "300")))


def launched() -> bool:
    """True when started by torchrun (or anything that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_name: str) -> torch.device:
    """Joins the process group (NCCL on GPUs, Gloo on CPUs) and returns this process's device."""
    if not launched():
        return torch.device(device_name) if device_name != "auto" else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        # torchrun's store outlives a restart (--max-restarts); keys from the failed attempt,
        # such as a dead peer's address, must not be read by the next one.
        store, rank, size = next(dist.rendezvous("env://", timeout=TIMEOUT))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"ganforge/attempt-{attempt}/", store)
        dist.init_process_group("nccl" if use_cuda else "gloo", store=store, rank=rank, world_size=size, timeout=TIMEOUT)
    return device


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """In-place mean over ranks; returns the tensor."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
        tensor /= world_size()
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if `flag` is True on any rank (e.g. a stop request seen by one process)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_object(obj: object) -> object:
    """Rank 0's `obj` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average_buffers(module: nn.Module) -> None:
    """Averages floating-point buffers (BatchNorm running statistics) across ranks so all agree."""
    if not dist.is_initialized():
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            all_reduce_mean(buffer.data)


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `module` when there are several processes; else `module`.

    Buffers are not broadcast from rank 0 at each forward (`broadcast_buffers=False`):
    BatchNorm statistics stay per rank and are averaged before sampling and saving.
    """
    if not dist.is_initialized():
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # Newer torch renames the option; the buffers are identical at start either way.
    no_buffer_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters else {"broadcast_buffers": False}
    return ddp(module, device_ids=device_ids, **no_buffer_sync)


def shard(batch: Tensor) -> Tensor:
    """This rank's contiguous slice of a global batch (batch, ...) -> (batch // world_size, ...)."""
    size = batch.shape[0] // world_size()
    return batch[rank() * size : (rank() + 1) * size]
