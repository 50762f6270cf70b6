"""How the Stacked MNIST score reads a trained generator: per channel, which digits and how surely.

The Stacked MNIST KL is the three channels' digit KLs plus their dependence. This prints, for
one run's exported generator (26,000 samples, as the benchmark) and for the 10,000 MNIST test
digits, each channel's digit histogram as the shipped `mnist28` classifier reads it, the share
of digits it reads with probability below 0.9, and how often an independent reader agrees with
it: a 3-nearest-neighbour vote among the 60,000 training digits (PCA to 50 dimensions), and
the digits that reader reads.
Last, the modes and KL of the generated samples as the benchmark scores them, by the chosen reader.
A generator whose digits are often ambiguous has a histogram shaped by how each reader breaks ties.
The test digits are also read blurred and thickened: whether rough strokes alone, rather than
the digits a generator makes, would shift the histogram. The histogram of the digits read surely
(probability at least 0.9) shows whether the shift is only in how the ambiguous ones are read.

    python benchmarks/stacked_readout.py runs/stackedmnist --mnist ../shared/data/mnist
    python benchmarks/stacked_readout.py runs/stackedmnist --classifier mnist28b \
        --checkpoint runs/stackedmnist/checkpoints/checkpoint-00005000.pt --weights generator

With `--checkpoint`, the generator is the one that checkpoint holds, its averaged (`ema`, what a
run exports) or live (`generator`) weights, with BatchNorm statistics re-estimated for those
weights as a run does before it exports.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

import ganforge
from _common import machine
from ganforge.checkpoint import load_checkpoint
from ganforge.data.images import load_mnist
from ganforge.ema import recalibrate_batchnorm
from ganforge.errors import GanforgeError
from ganforge.evaluate import STACKED_SAMPLES
from ganforge.export import SampleableGenerator, cluster_draw
from ganforge.features import extract, load_classifier
from ganforge.metrics.modes import stacked_mnist_mode_stats
from ganforge.noise import NoiseSampler

SURE = 0.9  # a digit read with a lower top probability counts as ambiguous


def nearest_neighbour_reader(train_images: np.ndarray, train_labels: np.ndarray, k: int = 3):
    """A classifier independent of `mnist28`: a k-NN vote in a 50-dimensional PCA of the training digits."""
    pca = PCA(50, random_state=0).fit(train_images[:20_000])
    reference = torch.as_tensor(pca.transform(train_images), dtype=torch.float32)
    labels = torch.as_tensor(train_labels.astype(np.int64))

    def read(images: np.ndarray) -> np.ndarray:
        points = torch.as_tensor(pca.transform(images.reshape(len(images), -1)), dtype=torch.float32)
        votes = [labels[torch.cdist(chunk, reference).topk(k, largest=False).indices] for chunk in points.split(2_000)]
        return torch.cat(votes).mode(dim=1).values.numpy()

    return read


def degraded(images: np.ndarray) -> dict[str, np.ndarray]:
    """Real digits made rough: blurred twice by a 3x3 binomial filter, and thickened by a 3x3 maximum filter."""
    x = torch.as_tensor(images)
    kernel = torch.tensor([0.25, 0.5, 0.25])
    kernel = (kernel[:, None] * kernel[None]).view(1, 1, 3, 3)
    blurred = F.conv2d(F.conv2d(x, kernel, padding=1), kernel, padding=1)
    return {"blurred (3x3 binomial, twice)": blurred.numpy(), "thickened (3x3 maximum)": F.max_pool2d(x, 3, 1, 1).numpy()}


def readout(images: np.ndarray, classifier, reader) -> dict:
    """(n, 1, 28, 28) digits in [0, 1] -> the digits read, histograms (%: all, read surely), ambiguous share and agreement with `reader`."""
    probabilities = extract(classifier, torch.as_tensor(images)).probabilities
    digits, votes = probabilities.argmax(axis=1), reader(images)
    sure = probabilities.max(axis=1) >= SURE
    return {
        "digits": digits,
        "histogram_percent": _percent(digits),
        "sure_histogram_percent": _percent(digits[sure]),
        "ambiguous": float(1 - sure.mean()),
        "agreement": float((votes == digits).mean()),
        "reader_histogram_percent": _percent(votes),
    }


def _percent(digits: np.ndarray) -> list[float]:
    return np.round(np.bincount(digits, minlength=10) / max(len(digits), 1) * 100, 1).tolist()


def checkpoint_generator(exported: SampleableGenerator, path: Path, weights: str) -> SampleableGenerator:
    """`exported` with the `weights` ('ema' or 'generator') that the checkpoint at `path` holds, BatchNorm recalibrated."""
    try:
        saved = load_checkpoint(path).get(weights)
    except GanforgeError as err:
        raise SystemExit(f"--checkpoint: {err}") from None
    if saved is None:
        raise SystemExit(f"--checkpoint: {path} holds no '{weights}' weights (a run without an EMA holds only 'generator')")
    net = copy.deepcopy(exported.network)
    try:
        net.load_state_dict(saved)
    except RuntimeError as err:
        raise SystemExit(f"--checkpoint: {path} is not a checkpoint of this run's generator ({str(err).splitlines()[0]})") from None
    # Clusters at their frequencies, as `sample` draws them (without labels the network takes its classes in turn).
    labels = (lambda n: cluster_draw(exported.clusters, n, seed=1)) if exported.clusters else None
    recalibrate_batchnorm(net, NoiseSampler(exported.latent_dim, exported.spec["noise"]["distribution"], seed=1), labels=labels)
    return SampleableGenerator(net, exported.spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a Stacked MNIST run folder (or its exported generator's folder)")
    parser.add_argument("--mnist", type=Path, default=Path("../shared/data/mnist"), help="folder of the MNIST IDX files")
    parser.add_argument("--n", type=int, default=STACKED_SAMPLES, help="generated samples (default 26,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier", choices=("mnist28", "mnist28b"), default="mnist28", help="the shipped reader (default mnist28)")
    parser.add_argument("--checkpoint", type=Path, help="read the generator this checkpoint of the run holds, not the exported one")
    parser.add_argument("--weights", choices=("ema", "generator"), default="ema",
                        help="with --checkpoint: the averaged weights (ema, the default) or the live generator's")
    args = parser.parse_args(argv)
    source = f"{args.checkpoint}, {args.weights} weights" if args.checkpoint else "its exported generator"
    print(f"ganforge {ganforge.__version__}; {machine()}; run {args.run} ({source}); read by {args.classifier}; "
          f"{args.n} samples, seed {args.seed}")
    generator = ganforge.load_generator(args.run)
    if args.checkpoint:
        generator = checkpoint_generator(generator, args.checkpoint, args.weights)
    train = load_mnist(args.mnist, split="train")
    reader = nearest_neighbour_reader(train.samples.reshape(len(train.samples), -1).numpy() / np.float32(255), train.labels.numpy())
    classifier = load_classifier(args.classifier)
    test = load_mnist(args.mnist, split="test").samples.numpy() / np.float32(255)
    rows = {"MNIST test digits": readout(test, classifier, reader)}
    for name, images in degraded(test).items():
        rows[f"MNIST test digits, {name}"] = readout(images, classifier, reader)
    samples = np.asarray(generator.sample(args.n, seed=args.seed), dtype=np.float32)
    for channel, name in enumerate("RGB"):
        rows[f"generated, channel {name}"] = readout(samples[:, channel : channel + 1], classifier, reader)
    print("| digits | % read as 0 1 2 3 4 5 6 7 8 9 | read with p < 0.9 | % of those read with p >= 0.9 | k-NN reader agrees "
          "| % k-NN reads as 0 1 2 3 4 5 6 7 8 9 |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        histogram, sure, votes = (" ".join(f"{v:.1f}" for v in row[key])
                                  for key in ("histogram_percent", "sure_histogram_percent", "reader_histogram_percent"))
        print(f"| {name} | {histogram} | {row['ambiguous']:.1%} | {sure} | {row['agreement']:.1%} | {votes} |")
    # The benchmark's score of these samples by this reader (the channels' digits read above): what
    # `ganforge eval` reports, for a checkpoint too.
    modes = stacked_mnist_mode_stats(np.stack([rows[f"generated, channel {name}"]["digits"] for name in "RGB"], axis=1))
    print(f"read by {args.classifier}: {modes['modes']} of 1,000 modes, KL {modes['kl']:.4f}, "
          f"channels' digit KLs {', '.join(f'{v:.4f}' for v in modes['channel_kl'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
