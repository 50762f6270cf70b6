"""Self-conditioning: k-means clusters of the training images, standing in for class labels.

An unconditional run with `clusters=K` trains a class-conditional generator and
discriminator on K clusters of its own images, found once before training and without any
labels (after Liu et al. 2020, "Diverse Image Generation via Self-Conditioned GANs", whose
clusters come from the discriminator's features; here they come from the pixels, once).
Each cluster is a group of similar images, so the generator learns a few simpler
distributions instead of one with many modes, and it samples each cluster as often as the
data holds it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ganforge.errors import GanforgeError

MAX_SIDE = 32  # images are shrunk to at most this many pixels a side before clustering
MAX_FIT = 20_000  # images the PCA and k-means are fitted on (a random subset of larger sets)
PCA_DIM = 64  # the clustering space: the leading principal components of the pixels
CHUNK = 4_096  # images shrunk, projected and assigned at a time (bounds the memory of large images)


def _pixels(images: Tensor) -> np.ndarray:
    """(n, c, h, w) images as float32 rows of at most MAX_SIDE x MAX_SIDE pixels per channel."""
    x = images.float()
    if max(x.shape[-2:]) > MAX_SIDE:
        x = F.adaptive_avg_pool2d(x, (min(x.shape[-2], MAX_SIDE), min(x.shape[-1], MAX_SIDE)))
    return x.flatten(1).numpy()


def cluster_labels(images: Tensor, k: int, seed: int) -> Tensor:
    """Each image's cluster (n,) int64 in [0, k): k-means in the leading principal components of its pixels.

    Deterministic for a seed and a machine; every cluster holds at least one image.
    """
    from sklearn.cluster import KMeans  # scikit-learn is imported only by the runs that cluster
    from sklearn.decomposition import PCA

    images = images.cpu()
    n = images.shape[0]
    if not 2 <= k <= n:
        raise GanforgeError(f"clusters={k} is invalid for {n} images: expected from 2 to {n}")
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, MAX_FIT, replace=False)) if n > MAX_FIT else np.arange(n)
    fit = np.concatenate([_pixels(images[torch.from_numpy(fit_rows[i : i + CHUNK])]) for i in range(0, len(fit_rows), CHUNK)])
    pca = PCA(min(PCA_DIM, *fit.shape), svd_solver="randomized", random_state=seed).fit(fit)
    kmeans = KMeans(k, n_init=1, random_state=seed).fit(pca.transform(fit))
    labels = np.concatenate([kmeans.predict(pca.transform(_pixels(images[i : i + CHUNK]))) for i in range(0, n, CHUNK)])
    labels = torch.from_numpy(labels.astype(np.int64))
    labels[torch.from_numpy(fit_rows)] = torch.from_numpy(kmeans.labels_.astype(np.int64))  # so no cluster is left empty
    return labels
