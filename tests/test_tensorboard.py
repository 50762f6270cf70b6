"""tensorboard=true: event files with the run's scalars and sample grids, or one clear line without the package."""

from __future__ import annotations

import pytest

from ganforge import tensorboard_events
from helpers import assert_clean_error, read_metrics, ring8_args


def test_without_the_package_tensorboard_true_is_refused_before_the_run_folder_changes(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(tensorboard_events, "installed", lambda: False)
    run = tmp_path / "run"
    assert_clean_error(cli(*ring8_args(run, 10), "tensorboard=true"), "tensorboard=true needs the tensorboard package", "pip install tensorboard")
    assert not run.exists()
    assert cli(*ring8_args(run, 10), "tensorboard=false").code == 0


def test_tensorboard_true_writes_the_runs_scalars_and_pictures(cli, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="tensorboard=true needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert cli(*ring8_args(run, 20), "tensorboard=true", "eval_every=10", "eval_n=300").code == 0
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    records = read_metrics(run)
    logs = [r for r in records if "d_loss" in r]
    for key, tag in tensorboard_events.LOG_TAGS.items():
        assert [(e.step, pytest.approx(e.value)) for e in events.Scalars(tag)] == [(r["step"], r[key]) for r in logs]
    evals = [r for r in records if "eval" in r]
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("eval/hq_percent")] == [(r["step"], r["eval"]["hq_percent"]) for r in evals]
    assert [e.step for e in events.Images("samples")] == [10, 20]  # sample_every=10


def test_a_run_resumes_with_tensorboard_switched_on(cli, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard=true needs the tensorboard package")
    run = tmp_path / "run"
    assert cli(*ring8_args(run, 10)).code == 0
    assert cli(*ring8_args(run, 20), "tensorboard=true").code == 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
