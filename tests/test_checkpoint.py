"""Checkpoints, atomic writes, the exported generator, the weight EMA and image grids."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from torch import nn

from ganforge.checkpoint import (
    FORMAT_VERSION,
    atomic_write,
    checkpoint_path,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from ganforge.ema import EMA, recalibrate_batchnorm
from ganforge.errors import GanforgeError
from ganforge.export import SampleableGenerator, export_generator, load_generator
from ganforge.nets import ConvGenerator, MLPGenerator
from ganforge.noise import NoiseSampler
from ganforge.plots import image_grid
from helpers import write_sealed


def minimal_state(step: int) -> dict:
    return {
        "step": step, "config": {"steps": 10}, "generator": {"w": torch.full((2,), float(step))},
        "discriminator": {}, "g_optimizer": {}, "d_optimizer": {},
    }


def test_save_keeps_the_newest_checkpoints_and_loads_them_back(tmp_path):
    for step in (5, 10, 15, 20):
        save_checkpoint(tmp_path, minimal_state(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000015.pt", "checkpoint-00000020.pt"]
    state, warnings = latest_checkpoint(tmp_path)
    assert warnings == [] and state["step"] == 20 and state["format_version"] == FORMAT_VERSION
    assert torch.equal(state["generator"]["w"], torch.full((2,), 20.0))
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")], "no temporary files left"


def test_list_checkpoints_ignores_other_files(tmp_path):
    save_checkpoint(tmp_path, minimal_state(3), keep=5)
    for name in ("notes.txt", "checkpoint-3.pt", ".checkpoint-00000009.pt.x.tmp"):
        (tmp_path / "checkpoints" / name).write_text("x")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000003.pt"]
    assert list_checkpoints(tmp_path / "nowhere") == []


def test_checkpoint_step_reads_back_the_step_a_checkpoint_path_names(tmp_path):
    for step in (0, 7, 12_345_678):
        assert checkpoint_step(checkpoint_path(tmp_path, step)) == step
    for name in ("checkpoint-3.pt", "checkpoint-0000000x.pt", "averages-00000010.pt"):
        with pytest.raises(ValueError, match=name):
            checkpoint_step(tmp_path / name)


def test_latest_checkpoint_skips_corrupt_newer_files_with_a_warning(tmp_path):
    save_checkpoint(tmp_path, minimal_state(1), keep=3)
    save_checkpoint(tmp_path, minimal_state(2), keep=3)
    (tmp_path / "checkpoints" / "checkpoint-00000002.pt").write_bytes(b"\x80\x02 not a zip")
    state, warnings = latest_checkpoint(tmp_path)
    assert state["step"] == 1
    assert len(warnings) == 1 and "checkpoint-00000002.pt is not a ganforge checkpoint" in warnings[0]


def test_load_checkpoint_validates_content(tmp_path):
    path = tmp_path / "c.pt"
    torch.save(minimal_state(1), path)  # no checksum header
    with pytest.raises(GanforgeError, match="is not a ganforge checkpoint"):
        load_checkpoint(path)
    write_sealed(path, {"step": 1})
    with pytest.raises(GanforgeError, match="is not a ganforge checkpoint"):
        load_checkpoint(path)
    write_sealed(path, {**minimal_state(1), "format_version": 99})
    with pytest.raises(GanforgeError, match="format version 99"):
        load_checkpoint(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch exploited-by-checkpoint",))


def test_load_checkpoint_never_runs_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_sealed(tmp_path / "evil.pt", {**minimal_state(1), "format_version": FORMAT_VERSION, "payload": _Exploit()})
    with pytest.raises(GanforgeError, match="unsafe to load"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "exploited-by-checkpoint").exists()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"], "the temporary file is removed"


def test_atomic_write_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "config.json", lambda f: f.write(b"{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o644


def test_export_and_load_generator_round_trip(tmp_path):
    torch.manual_seed(0)
    net = ConvGenerator(6, 1, 8, width=4).eval()
    transform = {"kind": "image"}
    spec = {"class": "ConvGenerator", "config": net.config, "noise": {"latent_dim": 6, "distribution": "uniform"},
            "transform": transform, "sample_shape": [1, 8, 8], "step": 3}
    export_generator(tmp_path, net, spec)
    loaded = load_generator(tmp_path)
    assert isinstance(loaded, SampleableGenerator) and loaded.spec == spec
    z = torch.rand(4, 6) * 2 - 1
    assert torch.equal(loaded(z), net(z))
    samples = loaded.sample(4, seed=5)
    expected = (net(NoiseSampler(6, "uniform", seed=5)(4)) + 1) / 2
    torch.testing.assert_close(samples, expected.clamp(0, 1))


def test_ema_update_is_an_exponential_moving_average():
    torch.manual_seed(0)
    net = MLPGenerator(2, [3], width=4, depth=1, norm="batch")
    ema = EMA(net, decay=0.75)
    start = {k: v.clone() for k, v in ema.average.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net(torch.randn(8, 2))  # moves BatchNorm running statistics
    ema.update()
    averaged = ema.average.state_dict()
    for name, p in net.named_parameters():
        torch.testing.assert_close(averaged[name], 0.75 * start[name] + 0.25 * p.detach())
    for name, b in net.named_buffers():
        assert torch.equal(averaged[name], b), f"buffer {name} is copied, not averaged"
    assert not any(p.requires_grad for p in ema.average.parameters())


def test_recalibrate_batchnorm_estimates_population_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    sampler, drawn = NoiseSampler(2, seed=1), []

    def noise(n):
        drawn.append(sampler(n))
        return drawn[-1]

    recalibrate_batchnorm(net, noise, batches=4, batch_size=500)
    assert not net.training
    assert [len(z) for z in drawn] == [500] * 4
    z = torch.cat(drawn)
    with torch.no_grad():
        features = net[0](z)
    # momentum=None during calibration: a cumulative average over the batches, i.e. the population mean
    torch.testing.assert_close(net[1].running_mean, features.mean(0), atol=1e-5, rtol=1e-5)
    batch_vars = torch.stack([f.var(0) for f in features.split(500)])
    torch.testing.assert_close(net[1].running_var, batch_vars.mean(0), atol=1e-5, rtol=1e-5)
    assert net[1].momentum == 0.1, "momentum is restored"


def test_image_grid_layout():
    images = torch.zeros(5, 3, 8, 8)
    images[:, 0] = 1.0  # red
    grid = image_grid(images, columns=3, min_side=1)
    # 3 columns x 2 rows of 8 px with 1 px white gaps and border
    assert grid.size == (3 * 9 + 1, 2 * 9 + 1) and grid.mode == "RGB"
    assert grid.getpixel((1, 1)) == (255, 0, 0) and grid.getpixel((0, 0)) == (255, 255, 255)
    assert image_grid(images, columns=3, min_side=112).size == (28 * 4, 19 * 4)
