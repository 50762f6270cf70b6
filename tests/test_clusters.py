"""Self-conditioning (`clusters=K`): k-means clusters of the training images stand in for class labels
in an unconditional run; samples draw each cluster as often as the data holds it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ganforge
from ganforge.checkpoint import load_checkpoint, write_checkpoint
from ganforge.config import make_config, resolve
from ganforge.data.clusters import cluster_labels
from ganforge.errors import GanforgeError
from ganforge.export import spec_problem
from helpers import LabelSpy, digits_args, tree


def _three_kinds(n: int, side: int = 8, channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 images of three kinds (dark, bright left half, bright top half) with noise, and each one's kind."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, n)
    x = rng.integers(0, 40, (n, channels, side, side))
    x[kind == 1, :, :, : side // 2] += 200
    x[kind == 2, :, : side // 2, :] += 200
    return torch.from_numpy(x.astype(np.uint8)), kind


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings group the items alike (equal up to renaming the groups)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("side,channels", [(8, 1), (64, 3)], ids=["8px", "64px-rgb"])
def test_k_means_finds_the_kinds_of_images_again_the_same_way_each_time(side, channels):
    images, kind = _three_kinds(300, side, channels)
    labels = cluster_labels(images, 3, seed=0)
    assert labels.dtype == torch.int64 and labels.shape == (300,)
    assert _same_partition(labels.numpy(), kind)
    assert torch.equal(labels, cluster_labels(images, 3, seed=0))


def test_every_cluster_holds_an_image_and_a_bad_count_is_one_line():
    images, _ = _three_kinds(40)
    assert torch.bincount(cluster_labels(images, 12, seed=1), minlength=12).min() >= 1
    with pytest.raises(GanforgeError, match="clusters=41 is invalid for 40 images: expected from 2 to 40"):
        cluster_labels(images, 41, seed=0)


def _resolved(size: int = 60_000, **keys):
    return resolve(make_config({"data": "imgs.npy", **keys}), "images", (1, 28, 28), "x", 0, size)


def test_the_images_preset_self_conditions_unless_the_run_cannot_take_it():
    assert _resolved().clusters == 400
    assert _resolved(size=10_000).clusters == 0  # small image sets: their own preset
    assert resolve(make_config({"data": "digits", "conditional": True}), "images", (1, 8, 8), "x", 10, 1797).clusters == 0
    assert _resolved(arch="mlp").clusters == 0 and _resolved(pack=2).clusters == 0
    assert _resolved(clusters=0).clusters == 0 and _resolved(clusters=7).clusters == 7


def test_the_presets_mode_seeking_term_comes_with_its_clusters_or_a_conditional_runs_classes_and_a_set_weight_stays():
    def conditional(size, **keys):
        return resolve(make_config({"data": "imgs.npy", "conditional": True, **keys}), "images", (1, 28, 28), "x", 10, size)

    assert (_resolved().diversity, _resolved().diversity_kimg) == (0.06, 0.0)
    assert _resolved(clusters=7).diversity == 0.06
    assert _resolved(clusters=0).diversity == 0.0 and _resolved(arch="mlp").diversity == 0.0
    assert _resolved(clusters=0, diversity=0.5).diversity == 0.5 and _resolved(diversity=0).diversity == 0.0
    # A conditional run has no clusters: the images preset's term works among each class's samples instead,
    # for its first 384,000 images.
    assert (conditional(60_000).clusters, conditional(60_000).diversity, conditional(60_000).diversity_kimg) == (0, 0.2, 384.0)
    assert conditional(60_000, diversity=0).diversity == 0.0 and conditional(60_000, diversity=0.5).diversity == 0.5
    assert (conditional(60_000, diversity_kimg=0).diversity, conditional(60_000, diversity_kimg=0).diversity_kimg) == (0.2, 0.0)
    assert conditional(10_000).diversity == 0.0  # small image sets: their own preset, tuned without the term


@pytest.mark.parametrize("keys,message", [
    (dict(clusters=5, arch="mlp"), "clusters=5 cannot be used here: self-conditioning needs arch=conv or resnet, not arch=mlp"),
    (dict(clusters=5, pack=2), "clusters=5 cannot be used here: self-conditioning needs pack=1"),
    (dict(clusters=4000), "clusters=4000 is more than the 3000 examples of data='imgs.npy': expected at most 3000"),
    (dict(clusters=80_000), "clusters=80000 is invalid: expected an integer from 0 to 4,096"),
    (dict(clusters=1), "clusters=1 is invalid: expected 0 (off) or a number of clusters >= 2"),
])
def test_clusters_a_run_cannot_take_are_refused_in_one_line(keys, message):
    with pytest.raises(GanforgeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _resolved(size=3000, **keys)


def test_clusters_and_labels_together_are_refused():
    config = make_config({"data": "digits", "conditional": True, "clusters": 4})
    with pytest.raises(GanforgeError, match="a conditional run is conditioned on its labels: set conditional=false, or clusters=0"):
        resolve(config, "images", (1, 8, 8), "x", 10, 1797)


@pytest.fixture(scope="module")
def clustered_run(tmp_path_factory):
    from ganforge.cli import main

    out = tmp_path_factory.mktemp("clusters") / "digits"
    assert main(digits_args(out, 10, "--clusters", "4")) == 0
    return out


def test_a_clustered_run_samples_its_clusters_at_their_frequencies(clustered_run, cli, tmp_path):
    spec = json.loads((clustered_run / "generator.json").read_text())
    counts = spec["clusters"]
    assert spec["config"]["classes"] == 4 and spec["classes"] == [] and sum(counts) == 1797 and min(counts) > 0
    generator = ganforge.load_generator(clustered_run)
    generator.network = spy = LabelSpy(generator.network)
    seen = spy.seen
    generator.sample(8000, seed=3, batch_size=1024)
    drawn = torch.cat(seen)
    assert drawn.shape == (8000,)
    assert np.allclose(torch.bincount(drawn, minlength=4).numpy() / 8000, np.array(counts) / sum(counts), atol=0.02)
    seen.clear()
    generator.sample(8000, seed=3, batch_size=1024)
    assert torch.equal(torch.cat(seen), drawn)  # the same seed draws the same clusters
    result = cli("sample", str(clustered_run), "--n", "5", "--class", "1", "--out", str(tmp_path / "x.npy"))
    assert result.code == 2 and "not class-conditional" in result.err  # clusters are not classes to ask for


def test_the_training_batches_are_conditioned_on_their_images_clusters(clustered_run):
    state = load_checkpoint(clustered_run / "checkpoints" / "checkpoint-00000010.pt")
    saved = state["clusters"].long()
    config = json.loads((clustered_run / "config.json").read_text())
    assert torch.equal(saved, cluster_labels(ganforge.data.load_dataset("digits").samples, 4, config["seed"]))
    assert torch.bincount(saved, minlength=4).tolist() == json.loads((clustered_run / "generator.json").read_text())["clusters"]


def test_a_clustered_run_resumes_bit_identically(cli, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(*digits_args(straight, 10, "--clusters", "4")).code == 0
    assert cli(*digits_args(split, 5, "--clusters", "4")).code == 0
    assert cli(*digits_args(split, 10, "--clusters", "4")).code == 0
    assert (straight / "generator.safetensors").read_bytes() == (split / "generator.safetensors").read_bytes()


def test_a_checkpoint_whose_clusters_do_not_fit_is_refused_and_nothing_changes(clustered_run, copy_run, cli):
    run = copy_run(clustered_run)
    path = run / "checkpoints" / "checkpoint-00000010.pt"
    state = load_checkpoint(path)
    state["clusters"] = state["clusters"][:-1]
    write_checkpoint(path, state)
    before = tree(run)
    result = cli(*digits_args(run, 20, "--clusters", "4"))
    assert result.code == 2 and "holds no cluster of each of the 1797 training images in 0..3" in result.err
    assert tree(run) == before


def test_a_spec_whose_cluster_counts_do_not_fit_its_network_is_refused(clustered_run):
    spec = json.loads((clustered_run / "generator.json").read_text())
    assert spec_problem(spec) is None
    for bad in ([1, 2, 3], [1, 2, 3, -1], [0, 0, 0, 0], "1,2,3,4"):
        assert "clusters" in spec_problem({**spec, "clusters": bad})


def test_a_run_saved_before_self_conditioning_resumes_without_it(cli, tmp_path, monkeypatch):
    """A run whose config and checkpoints were written before the `clusters` key existed goes on with clusters=0,
    even where the preset now self-conditions."""
    from ganforge import presets

    run = tmp_path / "run"
    assert cli(*digits_args(run, 5)).code == 0
    saved = json.loads((run / "config.json").read_text())
    del saved["clusters"]
    (run / "config.json").write_text(json.dumps(saved))
    for path in (run / "checkpoints").glob("checkpoint-*.pt"):
        state = load_checkpoint(path)
        del state["config"]["clusters"], state["clusters"]
        write_checkpoint(path, state)
    monkeypatch.setitem(presets.PRESETS, "digits", {**presets.PRESETS["digits"], "clusters": 4})
    resumed = cli(*digits_args(run, 10))
    assert resumed.code == 0 and "from step 5" in resumed.err
    assert json.loads((run / "config.json").read_text())["clusters"] == 0
    assert cli(*digits_args(tmp_path / "fresh", 5)).code == 0  # a new run takes the preset's clusters
    assert json.loads((tmp_path / "fresh" / "config.json").read_text())["clusters"] == 4


def test_a_conditional_run_begun_without_the_term_resumes_without_it(cli, tmp_path, monkeypatch):
    """A conditional run begun before its preset gave conditional runs the term goes on without it; a new run takes it."""
    from ganforge import presets

    run = tmp_path / "run"
    assert cli(*digits_args(run, 5, "conditional=true")).code == 0
    monkeypatch.setitem(presets.CONDITIONAL, "digits", dict(diversity=0.5, diversity_kimg=0.32))
    resumed = cli(*digits_args(run, 10, "conditional=true"))
    assert resumed.code == 0 and "from step 5" in resumed.err
    saved = json.loads((run / "config.json").read_text())
    assert (saved["diversity"], saved["diversity_kimg"]) == (0.0, 0.0)
    assert cli(*digits_args(tmp_path / "fresh", 5, "conditional=true")).code == 0
    fresh = json.loads((tmp_path / "fresh" / "config.json").read_text())
    assert (fresh["diversity"], fresh["diversity_kimg"]) == (0.5, 0.32)


def test_a_self_conditioned_run_begun_without_the_term_resumes_without_it(cli, tmp_path, monkeypatch):
    """A run begun when the preset self-conditioned without the mode-seeking term goes on without it once the
    preset adds the term, and a new run takes it."""
    from ganforge import presets

    monkeypatch.setitem(presets.PRESETS, "digits", {**presets.PRESETS["digits"], "clusters": 4})
    run = tmp_path / "run"
    assert cli(*digits_args(run, 5)).code == 0
    monkeypatch.setitem(presets.PRESETS, "digits", {**presets.PRESETS["digits"], "clusters": 4, "diversity": 0.5})
    resumed = cli(*digits_args(run, 10))
    assert resumed.code == 0 and "from step 5" in resumed.err
    assert json.loads((run / "config.json").read_text())["diversity"] == 0.0
    assert cli(*digits_args(tmp_path / "fresh", 5)).code == 0
    assert json.loads((tmp_path / "fresh" / "config.json").read_text())["diversity"] == 0.5


def test_batchnorm_is_recalibrated_on_every_cluster_at_its_share(monkeypatch):
    """With more clusters than a calibration batch holds (80 > 64), the exported generator's BatchNorm statistics
    still come from all of them, each at its share of the training images, as the training batches drew them
    (clusters in turn would reach only the first 64)."""
    import ganforge.training.state as trainer_module
    from ganforge.data import load_dataset

    calls = []
    recalibrate = trainer_module.recalibrate_batchnorm
    monkeypatch.setattr(trainer_module, "recalibrate_batchnorm", lambda *args, **kwargs: calls.append(kwargs) or recalibrate(*args, **kwargs))
    dataset = load_dataset("digits")
    keys = {"data": "digits", "clusters": 80, "batch_size": 16, "g_width": 4, "d_width": 4, "device": "cpu"}
    config = resolve(make_config(keys), dataset.kind, dataset.sample_shape, "digits", size=len(dataset))
    trainer = trainer_module.Trainer(config, dataset, torch.device("cpu"), say=lambda *_: None)
    trainer.sampling_generator()
    draw = calls[-1]["labels"]
    assert draw is not None, "the calibration ran without cluster labels"
    drawn = torch.bincount(draw(64 * 16), minlength=80)
    assert (drawn[64:] > 0).any(), "the calibration batches never reach clusters past the 64th"
    share = torch.bincount(trainer.labels, minlength=80).double() / len(trainer.labels)
    drawn = torch.bincount(draw(200_000), minlength=80).double() / 200_000
    assert (drawn - share).abs().sum() / 2 < 0.01, "clusters are not drawn at their share of the training images"


def test_batchnorm_recalibration_feeds_each_batch_the_labels_it_is_given():
    from ganforge.ema import recalibrate_batchnorm
    from ganforge.nets import ConvGenerator

    spy = LabelSpy(ConvGenerator(4, 1, 8, 4, 0, "batch", 80))
    recalibrate_batchnorm(spy, lambda n: torch.randn(n, 4), batches=3, batch_size=8, labels=lambda n: torch.full((n,), 70))
    assert len(spy.seen) == 3 and all(labels.tolist() == [70] * 8 for labels in spy.seen)
    assert not spy.training
