"""Evaluation during training: eval_every, metrics.jsonl, the best generator and its checkpoint."""

from __future__ import annotations

import json

import pytest

import ganforge
from ganforge.checkpoint import load_checkpoint
from helpers import assert_clean_error, ring8_args


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))


def evaluations(run) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "eval" in line]


def test_eval_every_logs_metrics_and_keeps_the_best_generator(cli, tmp_path):
    run = tmp_path / "run"
    assert cli(*ring8_args(run, 10), "eval_every=5", "eval_n=300").code == 0
    evals = evaluations(run)
    assert [e["step"] for e in evals] == [5, 10]
    assert all({"modes", "hq_percent", "reverse_kl"} <= set(e["eval"]) for e in evals)
    best = min(evals, key=lambda e: e["eval"]["reverse_kl"])
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    assert state["step"] == best["step"]
    assert state["best"] == {"metric": "reverse_kl", "value": best["eval"]["reverse_kl"], "step": best["step"]}
    assert json.loads((run / "best" / "generator.json").read_text())["step"] == best["step"]
    assert ganforge.load_generator(run / "best").sample(7).shape == (7, 2)
    # The final checkpoint carries the best too, so a resumed run knows it.
    assert load_checkpoint(run / "checkpoints" / "checkpoint-00000010.pt")["best"] == state["best"]


def test_evaluation_time_is_left_out_of_the_training_time(cli, tmp_path, monkeypatch):
    import time

    from ganforge.evaluate import TrainingEvaluation

    score = TrainingEvaluation.__call__

    def slow_score(self, generator):
        time.sleep(1.0)
        return score(self, generator)

    monkeypatch.setattr(TrainingEvaluation, "__call__", slow_score)
    run = tmp_path / "run"
    assert cli(*ring8_args(run, 10), "eval_every=5", "eval_n=300").code == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in lines if "eval" in e]
    assert [e["step"] for e in evals] == [5, 10] and all(e["eval_seconds"] >= 1.0 for e in evals)
    # 10 tiny steps take well under the 2 s spent evaluating, which is not counted.
    seconds = [e["seconds"] for e in lines]
    assert seconds == sorted(seconds) and seconds[-1] < 1.0
    assert load_checkpoint(run / "checkpoints" / "checkpoint-00000010.pt")["seconds"] < 1.0


def test_a_resumed_run_keeps_its_best_across_the_restart(cli, tmp_path):
    run = tmp_path / "run"
    common = ["eval_every=5", "eval_n=300", "best_metric=hq_percent"]
    assert cli(*ring8_args(run, 10), *common).code == 0
    assert cli(*ring8_args(run, 20), *common).code == 0
    evals = evaluations(run)
    assert [e["step"] for e in evals] == [5, 10, 15, 20]
    values = [e["eval"]["hq_percent"] for e in evals]
    top = max(values)
    best = load_checkpoint(run / "checkpoints" / "checkpoint-00000020.pt")["best"]
    assert best == {"metric": "hq_percent", "value": top, "step": evals[values.index(top)]["step"]}


def test_best_metric_the_data_does_not_measure_is_refused_before_anything_is_written(cli, tmp_path):
    run = tmp_path / "run"
    result = cli(*ring8_args(run, 10), "eval_every=5", "best_metric=fd")
    assert_clean_error(result, "best_metric='fd'", "reverse_kl")
    assert not run.exists()


def test_unknown_best_metric_is_a_config_error(cli, tmp_path):
    result = cli(*ring8_args(tmp_path / "run", 10), "best_metric=fid")
    assert_clean_error(result, "best_metric='fid' is invalid", "expected one of fd")


@pytest.mark.parametrize("metric", ["reverse_kl", "hq_percent"])
def test_the_trainer_restores_a_best_only_if_measured_by_its_best_metric(tmp_path, metric):
    import torch

    from ganforge.config import make_config, resolve
    from ganforge.data import load_dataset
    from ganforge.training.state import Trainer

    dataset = load_dataset("ring8")
    config = resolve(make_config({"data": "ring8", "out": str(tmp_path), "best_metric": metric, "g_width": 4, "d_width": 4}),
                     dataset.kind, dataset.sample_shape, "ring8")
    saved = Trainer(config, dataset, torch.device("cpu"), say=lambda *_: None)
    saved.best = {"metric": "reverse_kl", "value": 0.5, "step": 3}
    restored = Trainer(config, dataset, torch.device("cpu"), say=lambda *_: None)
    restored.load_state_dict(saved.state_dict(), say=lambda *_: None)
    assert restored.best == (saved.best if metric == "reverse_kl" else None)
