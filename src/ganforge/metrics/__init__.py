"""Sample-quality metrics, each on plain arrays (numpy or torch), computed in float64.

- distributions: `frechet_distance` (the FID formula), `kernel_inception_distance` (KID);
- manifolds: `precision_recall` (Kynkäänniemi et al. 2019), `density_coverage` (Naeem et al. 2020);
- classes: `class_stats` (classes covered, class-histogram KL, Inception-Score-style score);
- modes: `mixture_mode_stats` (2D mixtures) and `stacked_mnist_mode_stats` (1,000 digit triples).

Bad input (wrong shape, too few samples, NaN/Inf) raises GanforgeError with one sentence.
"""

from ganforge.metrics.classes import class_histogram, class_stats
from ganforge.metrics.distributions import feature_stats, frechet_distance, frechet_distance_from_stats, kernel_inception_distance
from ganforge.metrics.manifolds import density_coverage, precision_recall
from ganforge.metrics.modes import mixture_mode_stats, stacked_mnist_mode_stats

__all__ = [
    "class_histogram",
    "class_stats",
    "density_coverage",
    "feature_stats",
    "frechet_distance",
    "frechet_distance_from_stats",
    "kernel_inception_distance",
    "mixture_mode_stats",
    "precision_recall",
    "stacked_mnist_mode_stats",
]
