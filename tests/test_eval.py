"""Feature extractors, Stacked MNIST, `ganforge.evaluate` and `ganforge eval` end to end (no real data files needed)."""

from __future__ import annotations

import gzip
import io
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ganforge
from ganforge.data import load_dataset
from ganforge.data.dataset import Dataset
from ganforge.data.images import load_digits
from ganforge.data.toy import mixture_modes
from ganforge.errors import GanforgeError
from ganforge.evaluate import evaluate, evaluate_samples, is_better, pick_extractor, reference_dataset, stacked_digits
from ganforge.features import DigitClassifier, PixelFeatures, extract, inception_features, load_classifier
from ganforge.metrics import mixture_mode_stats
from helpers import assert_clean_error, load_benchmark


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def fake_mnist(tmp_path) -> Path:
    """An MNIST-format folder: 80 training and 20 test images of 28x28 noise, labelled 0..9 in turn."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 80), ("t10k", 20)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


class Replay:
    """A stand-in generator whose samples are given data, so the expected metrics are known."""

    def __init__(self, samples: torch.Tensor) -> None:
        self.samples = samples

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        index = torch.randperm(len(self.samples), generator=torch.Generator().manual_seed(seed))[:n]
        return self.samples[index]


# shipped classifiers


@pytest.mark.parametrize(("name", "size", "dim"), [("digits8", 8, 64), ("mnist28", 28, 128), ("mnist28b", 28, 96)])
def test_shipped_classifiers_load_and_give_features_and_probabilities(name, size, dim):
    classifier = load_classifier(name)
    assert classifier.info["test_accuracy"] >= 0.98
    result = extract(classifier, torch.rand(6, 1, size, size))
    assert result.features.shape == (6, dim) and result.features.dtype == np.float64
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0)


def test_digits8_classifier_reads_the_held_out_digits():
    # The 20 % of scikit-learn's digits that scripts/train_classifiers.py holds out (seeded permutation).
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data))
    test = order[int(0.8 * len(data)) :]
    predictions = extract(load_classifier("digits8"), data.samples[test].float() / 255).probabilities.argmax(1)
    assert (predictions == data.labels[test].numpy()).mean() >= 0.98


def test_classifier_input_is_fitted_to_its_size_and_grey():
    classifier = load_classifier("digits8")
    images = torch.rand(4, 1, 16, 16)
    rgb = extract(classifier, images.expand(-1, 3, -1, -1))
    np.testing.assert_allclose(rgb.features, extract(classifier, images).features, rtol=1e-6, atol=1e-6)


def test_unknown_classifier_is_a_clear_error():
    with pytest.raises(GanforgeError, match="digits8, mnist28, mnist28b"):
        load_classifier("cifar")


def test_the_second_mnist_reader_is_of_another_design_seed_and_augmentation():
    first, second = load_classifier("mnist28"), load_classifier("mnist28b")
    assert second.config["design"] == "strided" and "design" not in first.config
    assert second.info["seed"] != first.info["seed"] and second.info["augmentation"].startswith("random affine")
    assert {type(m) for m in second.modules()} - {type(m) for m in first.modules()}  # layers the first has not (GELU)


def test_any_module_can_extract_features():
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    result = extract(module, torch.rand(7, 1, 8, 8), batch_size=3)
    assert result.features.shape == (7, 5) and result.probabilities is None
    assert PixelFeatures(4)(torch.rand(2, 3, 8, 8)).shape == (2, 48)


def test_inception_without_torch_fidelity_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr("ganforge.features.fid_helper_weights", lambda: None)  # torch-fidelity, the fallback
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    with pytest.raises(GanforgeError, match=r"pip install 'ganforge\[inception\]'") as info:
        inception_features()
    assert "\n" not in str(info.value)


def test_inception_offline_says_where_the_weights_go(monkeypatch):
    monkeypatch.setattr("ganforge.features.fid_helper_weights", lambda: None)  # torch-fidelity, the fallback

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    package = types.ModuleType("torch_fidelity")
    module = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    module.FeatureExtractorInceptionV3 = offline
    monkeypatch.setitem(sys.modules, "torch_fidelity", package)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", module)
    with pytest.raises(GanforgeError, match="weights are not available.*hub/checkpoints"):
        inception_features()
    # Chosen by default for RGB images, its absence is a note and pixel features, not a failure.
    extractor = pick_extractor("auto", "images")
    assert extractor.name == "pixels16" and "Inception FID unavailable" in extractor.notes[0]


def test_inception_wrapper_feeds_torch_fidelity_uint8_rgb(monkeypatch):
    monkeypatch.setattr("ganforge.features.fid_helper_weights", lambda: None)  # torch-fidelity, the fallback

    class FakeInception(nn.Module):
        """Stands in for torch-fidelity's network: checks its input contract, returns per-channel means."""

        def __init__(self, name, features_list):
            super().__init__()
            assert name == "inception-v3-compat" and features_list == ["2048"]
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x):
            assert x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3
            return (x.float().mean(dim=(2, 3)) * self.scale,)

    package = types.ModuleType("torch_fidelity")
    module = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    module.FeatureExtractorInceptionV3 = FakeInception
    monkeypatch.setitem(sys.modules, "torch_fidelity", package)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", module)
    grey = torch.full((120, 1, 8, 8), 0.5)
    features = extract(inception_features(), grey).features
    np.testing.assert_allclose(features, 128.0)  # round(0.5 * 255) in each of the 3 channels
    extractor = pick_extractor("auto", "images")
    assert extractor.name == "inception-v3-compat-2048" and not extractor.notes


# evaluation


def test_real_digits_against_themselves_score_perfectly():
    digits = load_dataset("digits")
    # Every default metric but KID (100 subsets of 1,000: the slowest, and tested on its own).
    metrics = ("fd", "precision_recall", "density_coverage", "classes")
    result = evaluate(Replay(digits.samples.float() / 255), digits, seed=1, metrics=metrics)
    metrics = result["metrics"]
    assert result["n"] == result["n_real"] == 1797 and result["features"].startswith("digits8-")
    assert metrics["fd"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["precision"] == metrics["recall"] == metrics["coverage"] == 1.0
    assert metrics["classes_covered"] == 10 and metrics["class_kl"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["classifier_score"] > 8


def test_noise_scores_far_worse_than_the_real_baseline():
    digits = load_dataset("digits")
    noise = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    result = evaluate_samples(noise, digits, real_baseline=True, metrics=("fd", "precision_recall", "classes"))
    metrics, baseline = result["metrics"], result["real_baseline"]
    assert baseline["n"] == 898
    assert metrics["fd"] > 20 * baseline["fd"]
    assert metrics["precision"] < 0.3 < 0.8 < baseline["precision"]
    assert baseline["classes_covered"] == 10 and baseline["class_kl"] < 0.05


def test_the_real_baseline_is_scored_at_the_generators_sample_count():
    """A perfect generator (fresh draws from the data's own Gaussian) scores a lower FD on all its samples
    than two real halves do (FD's bias grows as n shrinks); scored at the halves' count, it matches them."""
    raw, halves, same_count = [], [], []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        mix = rng.normal(size=(16, 16)) / 4
        draw = lambda n: torch.from_numpy((rng.normal(size=(n, 16)) @ mix).astype(np.float32))  # noqa: E731, B023
        real = Dataset("gauss", "vectors", draw(2000), {"kind": "affine", "shift": [0.0] * 16, "scale": [1.0] * 16})
        result = evaluate_samples(draw(2000), real, metrics=("fd",), real_baseline=True, seed=seed)
        baseline = result["real_baseline"]
        assert baseline["n"] == 1000 and set(baseline["generator"]) == {"fd"}
        raw.append(result["metrics"]["fd"])
        halves.append(baseline["fd"])
        same_count.append(baseline["generator"]["fd"])
    assert np.mean(raw) < 0.6 * np.mean(halves)
    assert 0.67 < np.mean(same_count) / np.mean(halves) < 1.5


def test_metric_direction_for_a_best_checkpoint():
    assert is_better("fd", 3.0, None) and is_better("fd", 3.0, 4.0) and not is_better("fd", 5.0, 4.0)
    assert is_better("coverage", 0.9, 0.8) and not is_better("modes", 990, 1000)


def test_mixture_defaults_to_mode_statistics():
    ring = load_dataset("ring8")
    result = evaluate(Replay(ring.samples), ring, real_baseline=True)
    assert result["n"] == 2500 and set(result["metrics"]) == {"modes", "hq_percent", "reverse_kl", "spread"}
    assert result["metrics"]["modes"] == 8 and result["real_baseline"]["modes"] == 8
    collapsed = evaluate(Replay(ring.modes[:1].repeat(100, 1)), ring, n=50)
    assert collapsed["metrics"]["modes"] == 1 and collapsed["metrics"]["reverse_kl"] == pytest.approx(math.log(8))


def test_vectors_use_raw_features_and_images_refuse_them(tmp_path):
    path = tmp_path / "v.npy"
    np.save(path, np.random.default_rng(0).normal(size=(200, 3)))
    vectors = load_dataset(str(path))
    result = evaluate_samples(vectors.samples[:100], vectors, metrics=("fd", "density_coverage"))
    assert result["features"] == "raw" and result["metrics"]["coverage"] > 0.3
    with pytest.raises(GanforgeError, match="applies to vector data"):
        evaluate_samples(torch.rand(10, 1, 8, 8), load_dataset("digits"), features="raw")


def test_unknown_metric_and_misplaced_metric_are_clear_errors():
    digits = load_dataset("digits")
    with pytest.raises(GanforgeError, match="metric 'fid' is unknown"):
        evaluate_samples(torch.rand(10, 1, 8, 8), digits, metrics=("fid",))
    with pytest.raises(GanforgeError, match="2D mixtures and Stacked MNIST"):
        evaluate_samples(torch.rand(10, 1, 8, 8), digits, metrics=("modes",))
    with pytest.raises(GanforgeError, match="needs a classifier"):
        evaluate_samples(torch.rand(10, 1, 8, 8), digits, metrics=("classes",), features="pixels")


def test_real_features_are_cached_per_extractor(tmp_path):
    digits = load_dataset("digits")
    fake = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    fresh = evaluate_samples(fake, digits, metrics=("fd",))
    cached = [evaluate_samples(fake, digits, metrics=("fd",), cache=tmp_path) for _ in range(2)]
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert cached[0]["metrics"] == cached[1]["metrics"] == fresh["metrics"]
    evaluate_samples(fake, digits, metrics=("fd",), features="pixels", cache=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_user_module_features():
    digits = load_dataset("digits")
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    result = evaluate_samples(digits.samples.float() / 255, digits, features=module, metrics=("fd",))
    assert result["features"].startswith("Sequential-") and result["metrics"]["fd"] == pytest.approx(0.0, abs=1e-6)


# Stacked MNIST


def test_stacked_mnist_stacks_three_labelled_digits_deterministically(fake_mnist):
    data = load_dataset(f"stackedmnist:{fake_mnist}")
    again = load_dataset(f"stackedmnist:{fake_mnist}")
    mnist = load_dataset(f"mnist:{fake_mnist}")
    assert data.samples.shape == (60_000, 3, 28, 28) and data.samples.dtype == torch.uint8
    assert torch.equal(data.samples, again.samples) and torch.equal(data.labels, again.labels)
    for i in (0, 1, 59_999):
        digits = [data.labels[i] // 100, data.labels[i] // 10 % 10, data.labels[i] % 10]
        for channel in range(3):
            # Which training image each channel holds: the one equal to it, whose label is that channel's digit.
            match = (mnist.samples[:, 0] == data.samples[i, channel]).flatten(1).all(1).nonzero()[0, 0]
            assert mnist.labels[match] == digits[channel]
    assert len(torch.unique(data.labels)) == 1000


class BrightnessReader(DigitClassifier):
    """Reads the digit round(9 x mean brightness): a classifier whose answers a test can set."""

    def __init__(self) -> None:
        super().__init__(image_size=28, width=1, feature_dim=10)
        self.head = nn.Identity()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return 50.0 * nn.functional.one_hot((images.mean(dim=(1, 2, 3)) * 9).round().long(), 10).float()


def test_stacked_modes_classify_each_channel():
    triples = torch.tensor([[1, 2, 3], [9, 0, 4], [1, 2, 3]])
    images = (triples.float() / 9)[:, :, None, None].expand(-1, -1, 28, 28)
    np.testing.assert_array_equal(stacked_digits(images, BrightnessReader()), triples.numpy())
    with pytest.raises(GanforgeError, match="3-channel"):
        stacked_digits(torch.rand(2, 1, 28, 28), BrightnessReader())


def test_mnist_runs_are_judged_against_the_test_images(fake_mnist):
    reference = reference_dataset({"data": f"mnist:{fake_mnist}", "image_size": 28, "channels": 1})
    assert len(reference) == 20 and reference.info["split"] == "t10k"
    assert len(reference_dataset({"data": f"stackedmnist:{fake_mnist}", "image_size": 28})) == 60_000


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so progress bars draw."""

    def isatty(self) -> bool:
        return True


def test_a_slow_extraction_shows_a_progress_bar_on_a_terminal_and_changes_no_feature(monkeypatch):
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    images = torch.rand(7, 1, 8, 8)
    quiet = extract(module, images, batch_size=3)
    monkeypatch.setattr("ganforge.features.PROGRESS_DELAY", 0.0)
    for progress, shown in ((None, False), ("pixel features of generated images", True)):
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        result = extract(module, images, batch_size=3, progress=progress)
        np.testing.assert_array_equal(result.features, quiet.features)
        assert ("pixel features of generated images" in terminal.getvalue() and "/7 " in terminal.getvalue()) == shown
        terminal = io.StringIO()  # not a terminal (a log file): no bar even when asked
        monkeypatch.setattr(sys, "stderr", terminal)
        extract(module, images, batch_size=3, progress=progress)
        assert terminal.getvalue() == ""


# the command line


def test_eval_command_writes_json_and_history(cli, copy_run, digits_run, tmp_path):
    run = copy_run(digits_run)
    cache = tmp_path / "cache"
    first = cli("eval", run, "--n", "60", "--cache-dir", cache, "--real-baseline")
    assert first.code == 0, first.err
    record = json.loads(first.out)
    assert record["step"] == 10 and record["data"] == "digits" and record["n"] == 60
    assert set(record["metrics"]) == {
        "fd", "kid_mean", "kid_std", "precision", "recall", "density", "coverage", "classes_covered", "class_kl", "classifier_score",
    }
    assert record["real_baseline"]["fd"] < record["metrics"]["fd"]
    assert "training" not in record["real_baseline"]  # digits are their own reference: no held-out images
    assert json.loads((run / "eval.json").read_text()) == record
    second = cli("eval", run, "--n", "60", "--cache-dir", cache, "--metrics", "fd,kid", "--seed", "0")
    assert second.code == 0
    history = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert len(history) == 2 and history[0] == record
    assert history[1]["metrics"]["fd"] == record["metrics"]["fd"] and "precision" not in history[1]["metrics"]
    assert len(list(cache.glob("*.npz"))) == 1


def test_eval_command_shows_its_slow_extractions_progress_on_a_terminal(copy_run, digits_run, tmp_path, monkeypatch):
    run = copy_run(digits_run)
    monkeypatch.setattr("ganforge.features.PROGRESS_DELAY", 0.0)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert ganforge.cli.main(["eval", str(run), "--n", "60", "--cache-dir", str(tmp_path / "cache")]) == 0
    shown = terminal.getvalue()
    assert "features of real images" in shown and "features of generated images" in shown and "/60 " in shown


def test_eval_command_on_a_mixture_reports_modes(cli, ring8_run, copy_run):
    run = copy_run(ring8_run)
    result = cli("eval", run, "--no-cache")
    assert result.code == 0
    record = json.loads(result.out)
    assert record["n"] == 2500 and set(record["metrics"]) == {"modes", "hq_percent", "reverse_kl", "spread"}
    samples = ganforge.load_generator(run).sample(2500, seed=0)
    assert record["metrics"] == mixture_mode_stats(samples, *mixture_modes("ring8"))


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--metrics", "fid"], ["metric 'fid' is unknown", "fd, kid"]),
        (["--features", "raw"], ["--features raw applies to vector data"]),
        (["--features", "vgg"], ["--features 'vgg' is unknown"]),
        (["--n", "1"], ["--n 1 is invalid"]),
    ],
)
def test_eval_command_bad_input_is_one_line(cli, digits_run, tmp_path, args, fragments):
    assert_clean_error(cli("eval", digits_run, "--no-cache", *args), *fragments)
    assert not (digits_run / "eval.json").exists()


def test_eval_command_on_stacked_mnist_reports_modes(cli, fake_mnist, tmp_path):
    run = tmp_path / "stacked"
    trained = cli("train", "--data", f"stackedmnist:{fake_mnist}", "--steps", "2", "--out", run, "--batch_size", "8",
                  "--g_width", "4", "--d_width", "4", "--pack", "2", "--device", "cpu", "--quiet")
    assert trained.code == 0, trained.err
    record = json.loads(cli("eval", run, "--n", "40", "--no-cache", "--real-baseline").out)
    assert record["features"].startswith("mnist28-") and record["n"] == 40 and record["n_real"] is None
    assert set(record["metrics"]) == {"modes", "kl", "channel_kl"} and 1 <= record["metrics"]["modes"] <= 40
    assert len(record["metrics"]["channel_kl"]) == 3 and sum(record["metrics"]["channel_kl"]) <= record["metrics"]["kl"] + 1e-9
    assert record["real_baseline"]["n_modes"] == 40


def test_mnist_real_baseline_scores_training_images_as_the_generator_is_scored(cli, fake_mnist, tmp_path):
    """The test images are the reference, so the baseline also scores training images at the generator's
    count against all of them: the same protocol as the generator's own figures."""
    run = tmp_path / "run"
    trained = cli("train", "--data", f"mnist:{fake_mnist}", "--steps", "2", "--out", run, "--batch_size", "8",
                  "--g_width", "4", "--d_width", "4", "--device", "cpu", "--quiet")
    assert trained.code == 0, trained.err
    record = json.loads(cli("eval", run, "--n", "16", "--no-cache", "--real-baseline").out)
    baseline = record["real_baseline"]
    assert record["n_real"] == 20 and baseline["n"] == 10
    training = baseline["training"]
    assert training["n"] == 16 and set(training) == {*record["metrics"], "n"}
    # Training images are drawn from the same noise as the test images; two steps of a tiny generator are not.
    assert training["fd"] < record["metrics"]["fd"] / 2
    again = json.loads(cli("eval", run, "--n", "16", "--no-cache", "--real-baseline", "--metrics", "fd").out)
    assert again["real_baseline"]["training"]["fd"] == pytest.approx(training["fd"])


@pytest.mark.parametrize("script", ["mnist_quality", "stacked_mnist"])
def test_mnist_benchmark_scripts_run(script, fake_mnist, tmp_path, monkeypatch, capsys):
    """Two training steps and a few samples, so the scripts keep working without the real data."""
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    benchmark = load_benchmark(script, monkeypatch)
    report = tmp_path / "report.json"
    args = ["--mnist", str(fake_mnist), "--steps", "2", "--seeds", "0", "--n", "20", "--json", str(report)]
    assert benchmark.main(args) == 0
    runs = json.loads(report.read_text())["runs"]
    assert len(runs) == 1 and runs[0]["steps"] == 2
    assert script != "stacked_mnist" or runs[0]["pack"] == 1, "the stackedmnist preset does not pack"
    assert script != "stacked_mnist" or runs[0]["second_reader"]["features"] == "mnist28b" and 0 < runs[0]["second_reader"]["modes"] <= 20
    table_header = {"mnist_quality": "| run | steps | fd |", "stacked_mnist": "| Method | modes (of 1,000) | KL |"}[script]
    assert table_header in capsys.readouterr().out


def test_stacked_readout_script_runs(cli, fake_mnist, tmp_path, monkeypatch, capsys):
    """The readout of a (barely trained) Stacked MNIST run: the test digits' rows (as they are, blurred,
    thickened) and one row per channel."""
    run = tmp_path / "stacked"
    trained = cli("train", "--data", f"stackedmnist:{fake_mnist}", "--steps", "2", "--out", run, "--batch_size", "8",
                  "--g_width", "4", "--d_width", "4", "--pack", "2", "--device", "cpu", "--quiet")
    assert trained.code == 0, trained.err
    readout = load_benchmark("stacked_readout", monkeypatch)
    assert readout.main([str(run), "--mnist", str(fake_mnist), "--n", "30"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| MNIST test") or line.startswith("| generated")]
    assert len(rows) == 6 and sum("blurred" in row or "thickened" in row for row in rows) == 2
    # Each row: the shares of the 10 digits as each reader reads them, summing to 100 % up to rounding.
    for row in rows:
        for column in (2, 6):
            shares = [float(v) for v in row.split("|")[column].split()]
            assert len(shares) == 10 and sum(shares) == pytest.approx(100, abs=0.6)
    # Last, the score of those samples: what `ganforge eval` reports for the same generator, samples and seed.
    scored = cli("eval", run, "--n", "30", "--seed", "0", "--no-cache")
    assert scored.code == 0, scored.err
    kl = json.loads(scored.out.strip().splitlines()[-1])["metrics"]["kl"]
    assert f"modes, KL {kl:.4f}, channels' digit KLs" in out

    # The generator a checkpoint holds, live weights, read by the second classifier.
    checkpoint = max((run / "checkpoints").glob("checkpoint-*.pt"))
    args = [str(run), "--mnist", str(fake_mnist), "--n", "30", "--checkpoint", str(checkpoint), "--weights", "generator"]
    assert readout.main([*args, "--classifier", "mnist28b"]) == 0
    out = capsys.readouterr().out
    assert f"({checkpoint}, generator weights); read by mnist28b" in out
    assert sum(line.startswith("| generated") for line in out.splitlines()) == 3


def test_stacked_readout_takes_a_checkpoints_weights(cli, fake_mnist, tmp_path, monkeypatch):
    """--checkpoint swaps in the live or averaged weights of that checkpoint (BatchNorm statistics recalibrated),
    and says so when the checkpoint is missing or holds no such weights."""
    from ganforge.checkpoint import load_checkpoint, write_checkpoint
    from ganforge.export import load_generator

    run = tmp_path / "stacked"
    trained = cli("train", "--data", f"stackedmnist:{fake_mnist}", "--steps", "3", "--out", run, "--batch_size", "8",
                  "--g_width", "4", "--d_width", "4", "--device", "cpu", "--quiet")
    assert trained.code == 0, trained.err
    readout = load_benchmark("stacked_readout", monkeypatch)
    path = max((run / "checkpoints").glob("checkpoint-*.pt"))
    state = load_checkpoint(path)
    for weights in ("generator", "ema"):
        net = readout.checkpoint_generator(load_generator(run), path, weights).network
        parameters = dict(net.named_parameters())
        assert parameters and all(torch.equal(parameters[name], state[weights][name]) for name in parameters)
    with pytest.raises(SystemExit, match="holds no 'ema' weights"):
        without = tmp_path / "checkpoint-00000003.pt"
        write_checkpoint(without, {key: value for key, value in state.items() if key not in ("ema", "format_version")} | {"ema": None})
        readout.checkpoint_generator(load_generator(run), without, "ema")
    with pytest.raises(SystemExit, match="--checkpoint: .*missing.pt"):
        readout.checkpoint_generator(load_generator(run), tmp_path / "missing.pt", "ema")

    # A self-conditioned generator takes cluster labels at their frequencies while BatchNorm is re-estimated
    # (without them it would draw its clusters in turn).
    clustered = tmp_path / "clustered"
    trained = cli("train", "--data", f"stackedmnist:{fake_mnist}", "--steps", "3", "--out", clustered, "--batch_size", "8",
                  "--g_width", "4", "--d_width", "4", "--clusters", "2", "--device", "cpu", "--quiet")
    assert trained.code == 0, trained.err
    path = max((clustered / "checkpoints").glob("checkpoint-*.pt"))
    draws = []
    real_draw = readout.cluster_draw
    monkeypatch.setattr(readout, "cluster_draw", lambda counts, n, seed: draws.append(counts) or real_draw(counts, n, seed))
    exported = load_generator(clustered)
    assert readout.checkpoint_generator(exported, path, "ema").sample(4).shape == (4, 3, 28, 28)
    assert draws and all(counts == exported.clusters for counts in draws)


def test_stacked_readout_histogram_of_surely_read_digits(monkeypatch):
    """The ambiguous share counts digits read with p < 0.9; the sure histogram holds only the others."""
    readout = load_benchmark("stacked_readout", monkeypatch)
    probabilities = np.full((4, 10), 0.0, dtype=np.float32)
    probabilities[0, 7] = probabilities[1, 7] = 0.95  # two 7s read surely
    probabilities[2, 1], probabilities[2, 7] = 0.6, 0.4  # an unsure 1
    probabilities[3, 9], probabilities[3, 4] = 0.5, 0.5  # an unsure 9 (argmax breaks the tie to the first: 4)
    monkeypatch.setattr(readout, "extract", lambda classifier, images: types.SimpleNamespace(probabilities=probabilities))
    row = readout.readout(np.zeros((4, 1, 28, 28), dtype=np.float32), None, lambda images: np.array([7, 7, 1, 9]))
    assert row["ambiguous"] == pytest.approx(0.5)
    assert row["sure_histogram_percent"] == [0.0] * 7 + [100.0, 0.0, 0.0]
    assert row["histogram_percent"] == [0.0, 25.0, 0.0, 0.0, 25.0, 0.0, 0.0, 50.0, 0.0, 0.0]
    assert row["agreement"] == pytest.approx(0.75)


def test_toy_benchmark_script_runs(tmp_path, monkeypatch, capsys):
    """A few steps of each mixture: every run is scored and the table lists both beside PacGAN's rows."""
    toy_modes = load_benchmark("toy_modes", monkeypatch)
    report = tmp_path / "report.json"
    assert toy_modes.main(["--seeds", "0", "--set", "steps=20", "--json", str(report)]) == 0
    saved = json.loads(report.read_text())
    assert [run["dataset"] for run in saved["runs"]] == ["ring8", "grid25"] and saved["changed"] == {"steps": "20"}
    assert all(0 <= run["hq_percent"] <= 100 and run["seconds"] > 0 for run in saved["runs"])
    table = capsys.readouterr().out
    assert "ring8" in table and "grid25" in table and "PacGAN" in table


def test_eval_command_on_a_folder_without_a_run(cli, tmp_path):
    assert_clean_error(cli("eval", tmp_path / "nothing"), "generator.json does not exist")
