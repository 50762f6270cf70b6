"""The exported generator: `generator.safetensors` plus `generator.json`, loadable without training code."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor, nn

import ganforge.tabular  # noqa: F401  (registers TableGenerator with build_network)
from ganforge.checkpoint import atomic_write
from ganforge.config import CHOICES, MAXIMA, shown
from ganforge.data.dataset import to_data_space
from ganforge.errors import GanforgeError, first_line
from ganforge.limits import check_networks_fit
from ganforge.nets import build_network
from ganforge.noise import NoiseSampler

WEIGHTS, SPEC = "generator.safetensors", "generator.json"
# The weights file's metadata entry SEAL holds JSON: the spec's JSON text under SPEC_KEY and a
# SHA-256 over the tensors and that text under CHECKSUM.
SEAL, SPEC_KEY, CHECKSUM = "ganforge", "spec", "sha256"
MAX_DIM = 1_000_000  # the largest size of one dimension of a sample a spec may name


class SampleableGenerator(nn.Module):
    """A trained generator with its noise and output transform.

    `forward(z)` is the network (model space); `sample(n, seed)` draws z and returns n
    samples in data space: images as float (n, c, h, w) in [0, 1], vectors in their
    original units (n, dim). A class-conditional generator (`classes`: its class names)
    takes `labels`, and draws its classes in turn without them. A self-conditioned one
    (`clusters`: how many training images each cluster held) draws its clusters at those
    frequencies.
    """

    def __init__(self, network: nn.Module, spec: dict) -> None:
        super().__init__()
        self.network = network.eval()
        self.spec = spec
        self.latent_dim = spec["noise"]["latent_dim"]
        self.classes: list[str] = list(spec.get("classes") or [])
        self.clusters: list[int] = list(spec.get("clusters") or [])

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.network(z) if labels is None else self.network(z, labels)

    @property
    def makes_rows(self) -> bool:
        """Whether this generator makes table rows (its transform is a table's)."""
        return self.spec["transform"].get("kind") == "table"

    def class_index(self, name: str | int) -> int:
        """A class's label from its name or number, or a clear error naming the classes there are."""
        if not self.classes:
            raise GanforgeError("this generator is not class-conditional: train it with conditional=true to pick a class")
        if str(name) in self.classes:
            return self.classes.index(str(name))
        if str(name).isdigit() and int(name) < len(self.classes):
            return int(name)
        raise GanforgeError(f"class {name!r} is not one of this generator's classes: {', '.join(self.classes)}")

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 1024, labels: Tensor | None = None) -> Tensor:
        """n samples in data space; `labels` (n,) class labels for a conditional generator (default: classes in turn)."""
        device = next(self.network.parameters()).device
        if labels is not None:
            self.class_index(0)  # refuses labels for a generator without classes
            labels = torch.as_tensor(labels, dtype=torch.long, device=device).expand(n)
        elif self.clusters:
            labels = cluster_draw(self.clusters, n, seed).to(device)
        noise = NoiseSampler(self.latent_dim, self.spec["noise"]["distribution"], device, seed)
        chunks = [self.forward(noise(min(batch_size, n - i)), None if labels is None else labels[i : i + batch_size]) for i in range(0, n, batch_size)]
        return to_data_space(torch.cat(chunks), self.spec["transform"])


def cluster_draw(counts: list[int], n: int, seed: int) -> Tensor:
    """n cluster labels drawn at the frequencies `counts` gives, from their own stream for `seed`."""
    stream = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.tensor(counts, dtype=torch.float64), n, replacement=True, generator=stream)


def export_generator(run_dir: Path, generator: nn.Module, spec: dict) -> None:
    """Writes the generator's weights and rebuild spec (class name, constructor config, noise, transform).

    The weights file carries the spec in its metadata and a SHA-256 over both, so one file,
    replaced in one rename, holds everything a sampler needs and shows any changed byte.
    generator.json is a readable copy, written after it.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    text = json.dumps(spec, sort_keys=True)
    header, data = _split(save(tensors))
    # One metadata entry: safetensors writes several in no fixed order, and the file should be a function of the weights.
    seal = json.dumps({SPEC_KEY: text, CHECKSUM: _digest(header, data, text)})
    weights = save(tensors, metadata={SEAL: seal})
    atomic_write(run_dir / WEIGHTS, lambda f: f.write(weights))
    atomic_write(run_dir / SPEC, lambda f: f.write(json.dumps(spec, indent=2).encode()))


def _split(raw: bytes) -> tuple[dict, bytes]:
    """A safetensors file's header (a dict: tensor entries and `__metadata__`) and its data bytes; ValueError if malformed."""
    if len(raw) < 8:
        raise ValueError("shorter than a safetensors header")
    size = int.from_bytes(raw[:8], "little")
    if size > len(raw) - 8:
        raise ValueError("header longer than the file")
    header = json.loads(raw[8 : 8 + size].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    return header, raw[8 + size :]


def _digest(header: dict, data: bytes, spec_text: str) -> str:
    """SHA-256 over the tensor entries of a safetensors header, its data bytes and the spec's JSON text."""
    entries = json.dumps({k: v for k, v in header.items() if k != "__metadata__"}, sort_keys=True)
    return hashlib.sha256(entries.encode() + b"\n" + spec_text.encode() + b"\n" + data).hexdigest()


def load_generator(run_dir: str | Path, device: str | torch.device = "cpu") -> SampleableGenerator:
    """Rebuilds the exported generator of a run folder, in eval mode, on `device`.

    The spec sealed in the weights file is used once its checksum matches (generator.json is
    then only a copy); an export written before specs were sealed there has none, and its
    generator.json is taken on its fields' checks alone. Then every field of the spec is
    checked, the network built and the weights loaded. Any failure is a GanforgeError naming the file.
    """
    run_dir = Path(run_dir)
    spec_path, weights_path = run_dir / SPEC, run_dir / WEIGHTS
    for path in (spec_path, weights_path):
        if not path.is_file():
            raise GanforgeError(f"{path} does not exist: expected a run folder with an exported generator (train it first)")
    weights = weights_path.read_bytes()
    spec = _sealed_spec(weights, weights_path)
    source = weights_path
    if spec is None:
        spec, source = _read_spec(spec_path), spec_path
    problem = spec_problem(spec)
    if problem:
        raise GanforgeError(f"{source} cannot be rebuilt: {problem} (corrupt, or written by an incompatible ganforge version)")
    network = _build(spec, source, device)
    try:
        network.load_state_dict(load(weights))
    except (SafetensorError, RuntimeError, OSError) as err:
        raise GanforgeError(f"{weights_path} is corrupt or does not match {source} ({first_line(err)})") from None
    return SampleableGenerator(network, spec).to(device)


def _sealed_spec(weights: bytes, weights_path: Path) -> dict | None:
    """The spec sealed in the weights file, its checksum checked; None for an export without one."""
    try:
        header, data = _split(weights)
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict) or SEAL not in metadata:
            return None
        seal = json.loads(metadata[SEAL])
        text, digest = seal[SPEC_KEY], seal[CHECKSUM]
        if digest != _digest(header, data, text):
            raise GanforgeError(f"{weights_path} is corrupt: its checksum does not match")
        return json.loads(text)
    except (ValueError, TypeError, KeyError, RecursionError) as err:  # JSON and UTF-8 errors are ValueErrors
        raise GanforgeError(f"{weights_path} is corrupt: not a safetensors file ({str(err)[:120]})") from None


def exported_step(run_dir: Path) -> int | None:
    """The step of a run folder's exported generator: 0 if there is none, None if its spec does not read.

    The spec sealed in the weights file counts first: a run killed between writing the
    weights and their readable copy has the new step there.
    """
    weights_path, spec_path = run_dir / WEIGHTS, run_dir / SPEC
    if not weights_path.exists() and not spec_path.exists():
        return 0
    try:
        spec = _sealed_spec(weights_path.read_bytes(), weights_path) if weights_path.is_file() else None
        if spec is None:
            spec = _read_spec(spec_path)
    except (GanforgeError, OSError):
        return None
    step = spec.get("step") if isinstance(spec, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _read_spec(spec_path: Path) -> object:
    try:
        return json.loads(spec_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise GanforgeError(f"{spec_path} is not a JSON generator spec ({type(err).__name__}: {str(err)[:120]})") from None


def _build(spec: dict, spec_path: Path, device: str | torch.device) -> nn.Module:
    """The network of `spec`, after checking on the meta device that it fits in memory and makes samples of sample_shape."""
    try:
        check_networks_fit(lambda: (build_network(spec["class"], spec["config"]),), device, training=False)
        with torch.device("meta"):
            shape = tuple(build_network(spec["class"], spec["config"])(torch.zeros(2, spec["noise"]["latent_dim"])).shape[1:])
        if list(shape) != spec["sample_shape"]:
            raise GanforgeError(f"the network makes samples of shape {shape}, but sample_shape is {spec['sample_shape']}")
        return build_network(spec["class"], spec["config"])
    except (GanforgeError, TypeError, ValueError, RuntimeError) as err:
        raise GanforgeError(f"{spec_path} cannot be rebuilt: {first_line(err)}") from None


# The most items (numbers, strings, lists, objects) a table run's layout and transform may hold.
MAX_JSON_ITEMS = 10_000_000


def spec_problem(spec: object) -> str | None:
    """What is wrong with a generator spec's fields (types, sizes, consistency), or None."""
    if not isinstance(spec, dict):
        return f"it holds a {type(spec).__name__}: expected a JSON object"
    fields = {"class": str, "config": dict, "noise": dict, "transform": dict, "sample_shape": list}
    for name, kind in fields.items():
        if not isinstance(spec.get(name), kind):
            return f"'{name}' is missing or not a {kind.__name__}"
    shape = spec["sample_shape"]
    if not shape or len(shape) > 3 or not all(_count(d, 1, MAX_DIM) for d in shape):
        return f"sample_shape {shown(shape)} is not a list of 1 to 3 positive sizes"
    noise = spec["noise"]
    if not _count(noise.get("latent_dim"), 1, MAXIMA["latent_dim"]) or noise.get("distribution") not in CHOICES["noise"]:
        return f"noise {shown(noise)} is invalid: expected a latent_dim from 1 to {MAXIMA['latent_dim']:,} and a distribution"
    if spec["config"].get("latent_dim") != noise["latent_dim"]:
        return f"the network's latent_dim {shown(spec['config'].get('latent_dim'))} differs from the noise's {noise['latent_dim']}"
    structured = spec["transform"].get("kind") == "table"  # a table generator's config holds its row layout
    for key, value in spec["config"].items():
        plain = isinstance(value, str) and len(value) < 40 or _count(value, 0, MAXIMA["g_width"]) or (
            isinstance(value, list) and all(_count(d, 1, MAX_DIM) for d in value))
        if isinstance(value, bool) or not (plain or structured and _json_sized(value, MAX_JSON_ITEMS)):
            return f"config {shown(key)}={shown(value)} is invalid"
    clusters = spec.get("clusters") or []
    if clusters and not (isinstance(clusters, list) and len(clusters) == spec["config"].get("classes")
                         and all(_count(c, 0, 2**62) for c in clusters) and sum(clusters) > 0):
        return f"clusters {shown(clusters)} is not a count of images for each of the network's {shown(spec['config'].get('classes'))} classes"
    return _transform_problem(spec["transform"], shape)


def _transform_problem(transform: dict, shape: list) -> str | None:
    if transform.get("kind") == "image":
        return None
    if transform.get("kind") == "table":
        columns, row_dim = transform.get("columns"), transform.get("row_dim")
        if not (isinstance(columns, list) and columns and all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in columns)):
            return "transform columns are not a list of named columns"
        if not _count(row_dim, 1, shape[-1]) or not _json_sized(transform, MAX_JSON_ITEMS):  # a row, then its condition
            return f"the table transform does not fit sample_shape {shown(shape)}"
        return None
    if transform.get("kind") != "affine":
        return f"transform kind {shown(transform.get('kind'))} is unknown: expected image, affine or table"
    for name in ("shift", "scale"):
        value = transform.get(name)
        numbers = isinstance(value, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value)
        if not numbers or len(value) != shape[-1]:
            return f"transform {name} is not {shape[-1]} finite numbers"
    return None


def _json_sized(value: object, budget: int) -> bool:
    """Whether `value` is plain JSON (short strings, finite numbers, lists and objects) of at most `budget` items."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > budget:
            return False
        if isinstance(item, dict):
            if not all(isinstance(k, str) and len(k) < 200 for k in item):
                return False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif not (item is None or isinstance(item, (bool, int)) or isinstance(item, str) and len(item) < 10_000):
            return False
    return True


def _count(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
