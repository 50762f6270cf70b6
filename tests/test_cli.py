"""The command line end to end: `ganforge train` writes a complete run folder, `ganforge sample` reads it,
and every bad input ends with exit code 2, one line on stderr, no traceback and no change to an existing run.

Runs are tiny (8-unit MLPs on ring8, 4-channel conv nets on 8x8 digits, 10-20 steps).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save

import ganforge
from ganforge.checkpoint import load_checkpoint
from ganforge.config import Config
from ganforge.errors import GanforgeError
from helpers import PYTHON, assert_clean_error, digits_args, read_metrics, ring8_args, subprocess_env, tree

METRIC_KEYS = {"step", "d_loss", "g_loss", "d_real", "d_fake", "seconds"}


# --- a finished run folder ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "steps", "width", "log_steps", "checkpoints", "pictures", "network"),
    [
        ("ring8_run", 20, 8, [5, 10, 15, 20], [10, 20], ["final.png", "step_00000010.png", "step_00000020.png"], "MLPGenerator"),
        ("digits_run", 10, 4, [5, 10], [5, 10], ["final.png", "step_00000005.png", "step_00000010.png"], "ConvGenerator"),
    ],
)
def test_train_writes_a_complete_run_folder(request, fixture, steps, width, log_steps, checkpoints, pictures, network):
    run: Path = request.getfixturevalue(fixture)

    config = json.loads((run / "config.json").read_text())
    derived = (config.pop("world_size"), config.pop("batch_per_process"), config.pop("precision_used"))
    assert derived == (1, 16, "fp32"), "derived values are recorded"
    Config(**config)  # every other key is a Config field
    assert config["steps"] == steps and config["out"] == str(run) and config["device"] == "cpu"
    assert config["batch_size"] == 16 and config["g_width"] == config["d_width"] == width
    assert config["lr_g"] is not None and config["latent_dim"] is not None, "auto values are resolved"

    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == log_steps
    for m in metrics:
        assert METRIC_KEYS <= m.keys()
        assert all(math.isfinite(m[k]) for k in METRIC_KEYS)
        assert 0 < m["d_real"] < 1 and 0 < m["d_fake"] < 1, "nonsaturating loss: scores are D's probabilities"
        assert 0.3 < m["d_loss"] < 3 and 0.1 < m["g_loss"] < 3, "an early GAN's losses are near 2 log 2 and log 2"
    assert [m["seconds"] for m in metrics] == sorted(m["seconds"] for m in metrics)

    assert sorted(p.name for p in (run / "samples").iterdir()) == pictures
    for picture in pictures:
        with Image.open(run / "samples" / picture) as image:
            assert image.format == "PNG" and min(image.size) >= 64

    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == [f"checkpoint-{s:08d}.pt" for s in checkpoints]
    last = load_checkpoint(run / "checkpoints" / names[-1])
    assert last["step"] == steps and last["config"] == config
    assert {"generator", "discriminator", "g_optimizer", "d_optimizer", "ema", "noise", "sampler", "torch_rng"} <= last.keys()

    spec = json.loads((run / "generator.json").read_text())
    assert spec["class"] == network and spec["step"] == steps
    assert spec["noise"] == {"latent_dim": config["latent_dim"], "distribution": "normal"}
    assert (run / "generator.safetensors").stat().st_size > 100


def test_load_generator_samples_in_data_space(ring8_run, digits_run):
    ring = ganforge.load_generator(ring8_run)
    points = ring.sample(300, seed=1)
    assert points.shape == (300, 2) and points.dtype == torch.float32 and torch.isfinite(points).all()
    assert torch.equal(points, ring.sample(300, seed=1)), "same seed, same samples"
    assert not torch.equal(points, ring.sample(300, seed=2))
    assert not ring.network.training, "loaded in eval mode"

    digits = ganforge.load_generator(digits_run)
    images = digits.sample(5)
    assert images.shape == (5, 1, 8, 8)
    assert images.min() >= 0 and images.max() <= 1
    # Sampling in chunks gives the same as one batch (eval-mode BatchNorm: samples are independent).
    assert torch.allclose(digits.sample(5, batch_size=2), images, atol=1e-6)


def test_load_generator_errors(tmp_path, copy_run, ring8_run):
    with pytest.raises(GanforgeError, match="generator.json does not exist"):
        ganforge.load_generator(tmp_path)
    run = copy_run(ring8_run)
    raw = bytearray((run / "generator.safetensors").read_bytes())
    raw[-3] ^= 0x10  # one bit of a weight
    (run / "generator.safetensors").write_bytes(bytes(raw))
    with pytest.raises(GanforgeError, match="generator.safetensors is corrupt: its checksum does not match"):
        ganforge.load_generator(run)


def _unsealed(run: Path) -> None:
    """Rewrites the export as before specs were sealed in the weights file: plain safetensors + generator.json."""
    (run / "generator.safetensors").write_bytes(save(load_file(run / "generator.safetensors")))


def test_an_export_without_a_sealed_spec_is_read_from_generator_json(tmp_path, copy_run, ring8_run):
    """Exports written before the checksum still load, on generator.json's field checks alone; a bad one is one error."""
    run = copy_run(ring8_run)
    _unsealed(run)
    assert ganforge.load_generator(run).sample(3).shape == (3, 2)
    spec = json.loads((run / "generator.json").read_text())
    (run / "generator.json").write_text("{not json")
    with pytest.raises(GanforgeError, match="generator.json is not a JSON generator spec"):
        ganforge.load_generator(run)
    spec["config"]["width"] = 9
    (run / "generator.json").write_text(json.dumps(spec))
    with pytest.raises(GanforgeError, match="generator.safetensors is corrupt or does not match"):
        ganforge.load_generator(run)


# --- ganforge sample ------------------------------------------------------------------------


def test_sample_images_to_npy(cli, digits_run, tmp_path):
    out = tmp_path / "s.npy"
    result = cli("sample", digits_run, "--n", "7", "--out", out, "--seed", "3")
    assert result.code == 0 and "wrote 7 samples" in result.err
    array = np.load(out)
    assert array.shape == (7, 1, 8, 8) and array.dtype == np.float32
    assert array.min() >= 0 and array.max() <= 1 and array.std() > 0
    expected = ganforge.load_generator(digits_run).sample(7, seed=3).numpy()
    np.testing.assert_array_equal(array, expected)


def test_sample_images_to_png_grid(cli, digits_run, tmp_path):
    out = tmp_path / "grid.png"
    assert cli("sample", digits_run, "--n", "16", "--out", out).code == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.mode == "L"
        # 4x4 grid of 8x8 images with 1 px gaps (37 px), scaled up by an integer factor
        assert image.size[0] == image.size[1] and image.size[0] % 37 == 0


def test_sample_images_to_a_folder(cli, digits_run, tmp_path):
    out = tmp_path / "pngs"
    assert cli("sample", digits_run, "--n", "5", "--out", out).code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    for name in names:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.mode == "L"


def test_sample_folder_pngs_are_the_samples_themselves(cli, digits_run, tmp_path):
    out = tmp_path / "pngs"
    assert cli("sample", digits_run, "--n", "2", "--out", out, "--seed", "4").code == 0
    expected = ganforge.load_generator(digits_run).sample(2, seed=4).numpy()
    for i in range(2):
        pixels = np.asarray(Image.open(out / f"{i:06d}.png"))
        assert pixels.shape == (8, 8)
        np.testing.assert_allclose(pixels, np.round(expected[i, 0] * 255), atol=1)


def test_sample_vectors_to_csv_npy_and_scatter_png(cli, ring8_run, tmp_path):
    assert cli("sample", ring8_run, "--n", "50", "--out", tmp_path / "v.csv", "--seed", "2").code == 0
    assert cli("sample", ring8_run, "--n", "50", "--out", tmp_path / "v.npy", "--seed", "2").code == 0
    table = np.loadtxt(tmp_path / "v.csv", delimiter=",")
    array = np.load(tmp_path / "v.npy")
    assert table.shape == array.shape == (50, 2)
    np.testing.assert_allclose(table, array, rtol=1e-6, atol=1e-7)
    assert cli("sample", ring8_run, "--n", "200", "--out", tmp_path / "v.png").code == 0
    with Image.open(tmp_path / "v.png") as image:
        assert image.mode == "RGB" and image.size == (512, 512)


@pytest.mark.parametrize(
    ("fixture", "target", "fragments"),
    [
        ("digits_run", "x.csv", ["CSV holds vectors"]),
        ("ring8_run", "folder", ["needs images"]),
        ("ring8_run", "x.txt", ["unknown output type '.txt'"]),
    ],
)
def test_sample_output_type_errors(cli, request, tmp_path, fixture, target, fragments):
    run = request.getfixturevalue(fixture)
    before = tree(run)
    assert_clean_error(cli("sample", run, "--n", "4", "--out", tmp_path / target), *fragments)
    assert tree(run) == before


def test_sample_bad_n_and_missing_generator(cli, ring8_run, tmp_path):
    assert_clean_error(cli("sample", ring8_run, "--n", "0", "--out", tmp_path / "a.npy"), "--n 0 is invalid")
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "config.json").write_text("{}")
    assert_clean_error(cli("sample", tmp_path / "empty_run", "--out", tmp_path / "a.npy"), "generator.json does not exist")
    assert not (tmp_path / "a.npy").exists()


def test_sample_refuses_to_overwrite_without_force(cli, ring8_run, tmp_path):
    out = tmp_path / "existing.npy"
    out.write_bytes(b"precious")
    assert_clean_error(cli("sample", ring8_run, "--n", "4", "--out", out), "exists", "--force")
    assert out.read_bytes() == b"precious"
    folder = tmp_path / "full"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    assert_clean_error(cli("sample", ring8_run, "--n", "4", "--out", folder), "exists")
    assert cli("sample", ring8_run, "--n", "4", "--out", out, "--force").code == 0
    assert np.load(out).shape == (4, 2)


def test_sample_into_an_existing_empty_folder_is_allowed(cli, digits_run, tmp_path):
    (tmp_path / "empty").mkdir()
    assert cli("sample", digits_run, "--n", "2", "--out", tmp_path / "empty").code == 0
    assert len(list((tmp_path / "empty").iterdir())) == 2


def test_python_m_ganforge_sample_subprocess(digits_run, tmp_path):
    out = tmp_path / "sub.npy"
    proc = subprocess.run(
        [PYTHON, "-m", "ganforge", "sample", str(digits_run), "--n", "3", "--out", str(out)],
        capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert np.load(out).shape == (3, 1, 8, 8)


# --- train: error paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--data", "{tmp}/missing.csv"], ["missing.csv': no such file"]),
        (["--data", "{tmp}/no_such_folder"], ["neither a built-in dataset nor an existing path"]),
        (["--data", "ring9"], ["data='ring9'", "neither a built-in dataset"]),
        (["--data", "mnist:{tmp}/nowhere"], ["no such folder"]),
        (["--lr_gg", "0.1"], ["unknown config key 'lr_gg'", "did you mean 'lr_g'"]),
        (["--lr-gg=0.1"], ["unknown config key 'lr_gg'", "did you mean 'lr_g'"]),
        (["lr_gg=0.1"], ["unknown config key 'lr_gg'", "did you mean 'lr_g'"]),
        (["--steps", "-3"], ["steps=-3 is invalid"]),
        (["--steps", "ten"], ["steps='ten' is invalid"]),
        (["--lr_g", "0"], ["lr_g=0.0 is invalid"]),
        (["--batch_size", "0"], ["batch_size=0 is invalid"]),
        (["--loss", "hingee"], ["loss='hingee' is invalid"]),
        (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "tpu"], ["device="]),
        (["--lr_g", "0.01"], ["holds a run with a different config", "lr_g: 0.001 -> 0.01", "--new"]),
        (["--d_width", "9", "--loss", "hinge"], ["different config", "d_width: 8 -> 9", "loss: 'nonsaturating' -> 'hinge'"]),
        (["{tmp}/missing.yaml"], ["config file", "does not exist"]),
        (["{tmp}/a.yaml", "{tmp}/b.yaml"], ["at most one config file"]),
    ],
)
def test_train_errors_are_one_line_and_leave_the_run_unchanged(cli, copy_run, ring8_run, tmp_path, extra, fragments):
    run = copy_run(ring8_run)
    before = tree(run)
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    result = cli(*ring8_args(run, 20), *extra)
    assert_clean_error(result, *fragments)
    assert tree(run) == before


def test_train_error_from_a_subprocess_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [PYTHON, "-m", "ganforge", "train", "--data", str(tmp_path / "nope.npy"), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"ganforge: error: data='{tmp_path / 'nope.npy'}': no such file"]
    assert not (tmp_path / "run").exists()


def test_bad_yaml_on_the_command_line(cli, tmp_path):
    (tmp_path / "bad.yaml").write_text("steps: [1\n")
    assert_clean_error(cli("train", tmp_path / "bad.yaml", "--out", tmp_path / "run"), "is not valid YAML")
    (tmp_path / "typo.yaml").write_text("stepz: 3\n")
    assert_clean_error(cli("train", tmp_path / "typo.yaml", "--out", tmp_path / "run"), "did you mean 'steps'")
    assert not (tmp_path / "run").exists()


def test_yaml_file_with_flags_and_overrides(cli, tmp_path):
    """Precedence: the YAML file < flags < key=value overrides."""
    (tmp_path / "cfg.yaml").write_text("data: ring8\nsteps: 50\nlr_g: 0.5\nlr_d: 0.005\n")
    args = [a for a in ring8_args(tmp_path / "run", 4)[1:] if a not in ("--data", "ring8")]
    result = cli("train", tmp_path / "cfg.yaml", "lr_g=0.003", *args, "--lr_g", "0.002")
    assert result.code == 0, result.err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["data"], config["steps"], config["lr_g"], config["lr_d"]) == ("ring8", 4, 0.003, 0.005)


def test_out_must_be_a_run_folder(cli, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_clean_error(cli(*ring8_args(tmp_path / "file", 4)), "is a file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("important")
    before = tree(tmp_path / "other")
    assert_clean_error(cli(*ring8_args(tmp_path / "other", 4)), "not a ganforge run folder")
    assert tree(tmp_path / "other") == before


def test_new_moves_the_old_run_aside(cli, copy_run, ring8_run):
    run = copy_run(ring8_run)
    before = tree(run)
    result = cli(*ring8_args(run, 10), "--lr_g", "0.01", "--new")
    assert result.code == 0, result.err
    archived = run.with_name("run.old-1")
    assert f"moved the previous run to {archived}" in result.err
    assert tree(archived) == before, "the old run is kept byte for byte"
    assert json.loads((run / "config.json").read_text())["lr_g"] == 0.01
    assert [m["step"] for m in read_metrics(run)] == [5, 10]
    assert cli(*ring8_args(run, 10), "--new").code == 0
    assert run.with_name("run.old-2").is_dir() and tree(archived) == before


def test_rerun_of_a_finished_run_changes_nothing(cli, tmp_path):
    run = tmp_path / "run"
    assert cli(*ring8_args(run, 10)).code == 0
    before = tree(run)
    result = cli(*ring8_args(run, 10))
    assert result.code == 0
    assert f"{run} is already trained to step 10" in result.err
    assert tree(run) == before


def test_corrupt_newest_checkpoint_falls_back_to_the_older_one(cli, copy_run, ring8_run):
    run = copy_run(ring8_run)
    newest = run / "checkpoints" / "checkpoint-00000020.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    result = cli(*ring8_args(run, 30))
    assert result.code == 0, result.err
    assert "warning: checkpoint" in result.err and "checkpoint-00000020.pt is corrupt" in result.err
    assert f"resuming {run} from step 10" in result.err
    assert [m["step"] for m in read_metrics(run)] == [5, 10, 15, 20, 25, 30], "lines after step 10 were logged again"
    assert load_checkpoint(run / "checkpoints" / "checkpoint-00000030.pt")["step"] == 30


def test_every_checkpoint_corrupt_is_an_error(cli, copy_run, ring8_run):
    run = copy_run(ring8_run)
    for path in (run / "checkpoints").iterdir():
        path.write_bytes(b"garbage")
    before = tree(run)
    result = cli(*ring8_args(run, 30))
    assert result.code == 2 and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1, "one line, no warnings before the error"
    error = result.err.strip()
    assert error.startswith("ganforge: error: every checkpoint in") and "is corrupt; use --new" in error
    assert tree(run) == before


def test_batch_size_larger_than_the_dataset_is_a_clean_error(cli, tmp_path):
    np.savetxt(tmp_path / "small.csv", np.random.default_rng(0).normal(size=(10, 3)), delimiter=",")
    result = cli("train", "--data", tmp_path / "small.csv", "--batch_size", "32", "--out", tmp_path / "run", "--quiet")
    assert_clean_error(result, "batch_size=32 is larger than the dataset (10 samples)")


def test_a_rejected_run_leaves_no_run_folder_behind(cli, tmp_path):
    np.savetxt(tmp_path / "small.csv", np.random.default_rng(0).normal(size=(10, 3)), delimiter=",")
    base = ["train", "--data", tmp_path / "small.csv", "--out", tmp_path / "run", "--steps", "2", "--quiet",
            "--g_width", "4", "--d_width", "4", "--device", "cpu"]
    assert cli(*base, "--batch_size", "32").code == 2
    assert not (tmp_path / "run").exists()
    assert cli(*base, "--batch_size", "8").code == 0


def test_debug_before_the_command_shows_the_traceback(tmp_path):
    with pytest.raises(GanforgeError):
        ganforge.cli.main(["--debug", "train", "--data", str(tmp_path / "nope.npy"), "--out", str(tmp_path / "run")])


def test_debug_after_the_command_shows_the_traceback(tmp_path):
    with pytest.raises(GanforgeError, match="no such file"):
        ganforge.cli.main(["train", "--debug", "--data", str(tmp_path / "nope.npy"), "--out", str(tmp_path / "run")])


def test_overrides_may_follow_flags(cli, tmp_path):
    result = cli("train", "steps=2", *ring8_args(tmp_path / "run", 2)[1:], "loss=hinge")
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["loss"] == "hinge"


def test_unsupported_image_size_fails_cleanly_and_writes_nothing(cli, tmp_path):
    result = cli(*digits_args(tmp_path / "run", 2), "--image_size", "5", "--g_extra_layers", "0", "--d_extra_layers", "0")
    assert_clean_error(result, "image_size=5")
    assert not (tmp_path / "run").exists()


def test_exported_generator_is_the_weight_average(ring8_run, digits_run):
    """The export holds the EMA weights (not the last iterate); conv BatchNorm statistics are recalibrated for them."""

    for run in (ring8_run, digits_run):
        exported = load_file(run / "generator.safetensors")
        last = load_checkpoint(sorted((run / "checkpoints").iterdir())[-1])
        params = [k for k in last["ema"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        assert params and exported.keys() == last["ema"].keys()
        for key in params:
            assert torch.equal(exported[key], last["ema"][key]), key
        assert any(not torch.equal(exported[k], last["generator"][k]) for k in params), "EMA differs from the live weights"


def test_ema_off_exports_the_live_generator(cli, tmp_path):

    run = tmp_path / "run"
    assert cli(*ring8_args(run, 10), "--ema_decay", "0").code == 0
    last = load_checkpoint(run / "checkpoints" / "checkpoint-00000010.pt")
    assert last["ema"] is None
    exported = load_file(run / "generator.safetensors")
    assert exported.keys() == last["generator"].keys()
    assert all(torch.equal(exported[k], v) for k, v in last["generator"].items())


def test_mlp_on_images_with_explicit_depths(cli, tmp_path):
    run = tmp_path / "run"
    result = cli(*digits_args(run, 4), "--arch", "mlp", "--g_depth", "1", "--d_depth", "1")
    assert result.code == 0, result.err
    spec = json.loads((run / "generator.json").read_text())
    assert spec["class"] == "MLPGenerator" and spec["config"]["data_shape"] == [1, 8, 8]
    images = ganforge.load_generator(run).sample(3)
    assert images.shape == (3, 1, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_mlp_on_images_with_default_depths(cli, tmp_path):
    result = cli(*digits_args(tmp_path / "run", 4), "--arch", "mlp")
    assert result.code == 0, result.err


def test_sample_output_in_a_missing_folder_is_a_clean_error(cli, ring8_run, tmp_path):
    assert_clean_error(cli("sample", ring8_run, "--n", "2", "--out", tmp_path / "nodir" / "x.npy"), "cannot read or write", "nodir")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_is_a_clean_error(cli, ring8_run, tmp_path):
    assert_clean_error(cli("sample", ring8_run, "--out", tmp_path / "x.npy", "--device", "cuda"), "device='cuda' is not available")
    assert_clean_error(cli(*ring8_args(tmp_path / "run", 2), "--device", "cuda"), "device='cuda' is not available")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
@pytest.mark.parametrize("command", ["train", "sample_mps", "sample_bogus"])
def test_unavailable_or_unknown_device_is_a_clean_error(cli, ring8_run, tmp_path, command):
    if command == "train":
        result = cli(*ring8_args(tmp_path / "run", 2), "--device", "mps")
    else:
        result = cli("sample", ring8_run, "--out", tmp_path / "x.npy", "--device", "mps" if command == "sample_mps" else "gpu0")
    assert_clean_error(result, "device")


def test_no_command_prints_help_and_exits_2(cli):
    result = cli()
    assert result.code == 2 and "train" in result.out and "sample" in result.out
