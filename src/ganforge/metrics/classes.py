"""Class statistics for labelled domains, from a classifier's predicted probabilities."""

from __future__ import annotations

import numpy as np
import torch

from ganforge.errors import GanforgeError
from ganforge.metrics._arrays import as_float64

Array = torch.Tensor | np.ndarray


def class_histogram(labels: Array, num_classes: int) -> np.ndarray:
    """Fraction of `labels` (n,) integers in 0..num_classes-1 falling in each class, shape (num_classes,)."""
    values = np.asarray(labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels)
    if values.ndim != 1 or len(values) == 0:
        raise GanforgeError(f"labels have shape {values.shape}: expected a non-empty (samples,) array")
    if values.min() < 0 or values.max() >= num_classes:
        raise GanforgeError(f"labels range over {values.min()}..{values.max()}: expected 0..{num_classes - 1}")
    return np.bincount(values.astype(np.int64), minlength=num_classes) / len(values)


def class_stats(probabilities: Array, reference: Array, eps: float = 1e-12) -> dict:
    """Classes covered, class-histogram KL and an Inception-Score-style score.

    Args:
        probabilities: (n, C) class probabilities p(y|x) of generated samples (rows sum to 1).
        reference: (C,) class frequencies of the real data (e.g. `class_histogram` of the
            classifier's predictions on real images), summing to 1.

    Returns:
        {"classes_covered": classes predicted (argmax) for at least one sample (int),
        "class_kl": KL(generated histogram || reference) in nats, over argmax predictions
        (0 log 0 = 0; a reference class of frequency 0 is floored at `eps`),
        "classifier_score": exp(E_x KL(p(y|x) || p(y))) with p(y) the mean of p(y|x): the
        Inception Score's formula (1 to C; higher means confident and varied), on one split}.
    """
    p = as_float64(probabilities)
    q = as_float64(reference)
    if p.ndim != 2 or len(p) == 0:
        raise GanforgeError(f"probabilities have shape {p.shape}: expected (samples, classes)")
    if q.shape != (p.shape[1],):
        raise GanforgeError(f"reference has shape {q.shape}: expected ({p.shape[1]},), one frequency per class")
    if not (np.isfinite(p).all() and np.isfinite(q).all()) or p.min() < 0 or q.min() < 0:
        raise GanforgeError("probabilities and reference must be finite and non-negative")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-4) or not np.isclose(q.sum(), 1.0, atol=1e-4):
        raise GanforgeError("probabilities (each row) and reference must sum to 1: pass softmax outputs and class frequencies")
    generated = class_histogram(p.argmax(axis=1), p.shape[1])
    seen = generated > 0
    class_kl = float(np.sum(generated[seen] * np.log(generated[seen] / np.maximum(q[seen], eps))))
    marginal = p.mean(axis=0)
    pointwise = np.where(p > 0, p * (np.log(np.maximum(p, eps)) - np.log(np.maximum(marginal, eps))), 0.0)
    return {
        "classes_covered": int(seen.sum()),
        "class_kl": class_kl,
        "classifier_score": float(np.exp(pointwise.sum(axis=1).mean())),
    }
