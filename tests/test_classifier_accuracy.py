"""The shipped MNIST classifiers' accuracy (`mnist28` and the second reader `mnist28b`), measured on the real MNIST test set (not read from its record).

Needs ../shared/data/mnist beside the repository (the official IDX files); skipped where it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ganforge.data.images import load_mnist
from ganforge.features import load_classifier

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason=f"the MNIST test set is not at {MNIST}")
@pytest.mark.parametrize("name", ["mnist28", "mnist28b"])
def test_mnist_classifiers_read_the_mnist_test_set_as_their_records_say(name):
    test = load_mnist(MNIST, split="test")
    assert len(test) == 10_000
    classifier = load_classifier(name)
    with torch.no_grad():
        predictions = torch.cat([classifier(batch.float() / 255).argmax(1) for batch in test.samples.split(1000)])
    accuracy = (predictions == test.labels).double().mean().item()
    assert accuracy >= 0.99
    assert accuracy == pytest.approx(classifier.info["test_accuracy"], abs=1e-4), "the recorded accuracy is the measured one"
