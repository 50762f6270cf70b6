"""The exported generator: `generator.safetensors` plus `generator.json`, loadable without training code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor, nn

import ganforge.tabular  # noqa: F401  (registers TableGenerator with build_network)
from ganforge.checkpoint import atomic_write
from ganforge.data.dataset import to_data_space
from ganforge.errors import GanforgeError
from ganforge.nets import build_network
from ganforge.noise import NoiseSampler

WEIGHTS, SPEC = "generator.safetensors", "generator.json"


class SampleableGenerator(nn.Module):
    """A trained generator with its noise and output transform.

    `forward(z)` is the network (model space); `sample(n, seed)` draws z and returns n
    samples in data space: images as float (n, c, h, w) in [0, 1], vectors in their
    original units (n, dim).
    """

    def __init__(self, network: nn.Module, spec: dict) -> None:
        super().__init__()
        self.network = network.eval()
        self.spec = spec
        self.latent_dim = spec["noise"]["latent_dim"]

    def forward(self, z: Tensor) -> Tensor:
        return self.network(z)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 1024) -> Tensor:
        device = next(self.network.parameters()).device
        noise = NoiseSampler(self.latent_dim, self.spec["noise"]["distribution"], device, seed)
        chunks = [self.network(noise(min(batch_size, n - i))) for i in range(0, n, batch_size)]
        return to_data_space(torch.cat(chunks), self.spec["transform"])


def export_generator(run_dir: Path, generator: nn.Module, spec: dict) -> None:
    """Writes the generator's weights and rebuild spec (class name, constructor config, noise, transform)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    atomic_write(run_dir / WEIGHTS, lambda f: f.write(save(tensors)))
    atomic_write(run_dir / SPEC, lambda f: f.write(json.dumps(spec, indent=2).encode()))


def load_generator(run_dir: str | Path, device: str | torch.device = "cpu") -> SampleableGenerator:
    """Rebuilds the exported generator of a run folder, in eval mode, on `device`."""
    run_dir = Path(run_dir)
    spec_path, weights_path = run_dir / SPEC, run_dir / WEIGHTS
    for path in (spec_path, weights_path):
        if not path.is_file():
            raise GanforgeError(f"{path} does not exist: expected a run folder with an exported generator (train it first)")
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        network = build_network(spec["class"], spec["config"])
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise GanforgeError(f"{spec_path} cannot be rebuilt: corrupt or written by an incompatible ganforge version ({type(err).__name__}: {err})") from None
    try:
        network.load_state_dict(load_file(weights_path))
    except (SafetensorError, RuntimeError, OSError) as err:
        raise GanforgeError(f"{weights_path} is corrupt or does not match {spec_path} ({str(err).splitlines()[0][:200]})") from None
    return SampleableGenerator(network, spec).to(device)
