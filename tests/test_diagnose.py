"""The failure-mode rules of diagnose.py on metrics records: built by hand for each failure mode,
and recorded from real default runs (tests/data/metrics), which must raise no alarm."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ganforge import diagnose
from ganforge.diagnose import FAILURE_MODES, LiveDiagnosis
from helpers import digits_args

RECORDED = Path(__file__).parent / "data" / "metrics"
CONFIG = {"loss": "nonsaturating", "best_metric": "fd", "arch": "conv", "lr_d": 2e-4, "d_steps_per_g_step": 1}


def log(step: int, d_real: float = 0.6, d_fake: float = 0.4, d_loss: float = 1.2, g_loss: float = 1.0, skipped: int = 0) -> dict:
    return {"step": step, "d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake,
            "seconds": step / 10, "steps_per_s": 10.0, "skipped_steps": skipped}


def evaluation(step: int, **scores) -> dict:
    return {"step": step, "seconds": step / 10, "eval_seconds": 1.0, "eval": scores}


def healthy(steps: int = 2000) -> list[dict]:
    """A run whose D stays unsure, whose FD falls and whose variety holds."""
    records = []
    for step in range(100, steps + 1, 100):
        records.append(log(step, d_real=0.6 + 0.02 * math.sin(step), d_fake=0.4, d_loss=1.2 + 0.03 * math.sin(step)))
        if step % 500 == 0:
            records.append(evaluation(step, fd=10 / step, precision=0.7, recall=0.6, coverage=0.5, classes_covered=10))
    return records


def findings(records: list[dict], config: dict = CONFIG) -> dict:
    return {f.mode: f for f in diagnose.diagnose(records, config)}


def test_a_healthy_run_has_no_finding():
    found = findings(healthy())
    assert set(found) == set(FAILURE_MODES)
    assert not any(f.present or f.episodes for f in found.values()), found
    assert all(f.unmeasured is None for f in found.values())


def test_the_discriminator_winning_is_found_since_the_step_it_began():
    records = healthy(1000) + [log(step, d_real=0.97, d_fake=0.02) for step in range(1100, 2001, 100)]
    found = findings(records)["discriminator_winning"]
    assert found.present and found.since == 1100
    assert "D(x) 0.970" in found.evidence and "D(G(z)) 0.020" in found.evidence
    assert "lr_d=5e-05" in found.advice


def test_a_short_spell_of_a_confident_discriminator_is_no_finding():
    short = diagnose.D_WINNING_RECORDS - 1
    records = [log(100 * i, d_real=0.97, d_fake=0.02) for i in range(1, short + 1)] + healthy(2000)[short:]
    assert not findings(records)["discriminator_winning"].episodes


def test_a_winning_spell_that_ended_is_reported_as_past():
    records = [log(100 * i, d_real=0.99, d_fake=0.01) for i in range(1, 8)] + [log(100 * i) for i in range(8, 12)]
    found = findings(records)["discriminator_winning"]
    assert not found.present and found.episodes == [(100, 700)]


def test_critic_scores_are_not_judged_as_probabilities():
    records = [log(100 * i, d_real=5.0, d_fake=-5.0) for i in range(1, 10)]
    found = findings(records, {**CONFIG, "loss": "wasserstein"})["discriminator_winning"]
    assert not found.present and "critic score" in found.unmeasured


def test_a_generator_collapsed_to_one_mode_of_a_mixture_is_found():
    records = [
        evaluation(1000, modes=8, hq_percent=90.0, reverse_kl=0.01),
        evaluation(2000, modes=1, hq_percent=30.0, reverse_kl=math.log(8)),
    ]
    assert not findings(records, {"best_metric": "reverse_kl"})["mode_collapse"].episodes  # one evaluation is not enough
    records.append(evaluation(3000, modes=1, hq_percent=30.0, reverse_kl=math.log(8)))
    found = findings(records, {"best_metric": "reverse_kl"})["mode_collapse"]
    assert found.present and found.since == 2000
    assert "modes 1, down from 8" in found.evidence


def test_sharp_samples_from_few_modes_are_collapse_from_the_first_evaluation():
    records = [evaluation(step, modes=1, hq_percent=100.0, reverse_kl=math.log(8)) for step in (1000, 2000)]
    assert findings(records, {"best_metric": "reverse_kl"})["mode_collapse"].since == 1000


def test_blurry_early_samples_on_no_mode_are_not_collapse():
    # ring8's default run scores no mode at all for its first thousands of steps
    records = [evaluation(step, modes=0, hq_percent=0.0, reverse_kl=math.log(8)) for step in (1000, 2000, 3000)]
    assert not findings(records, {"best_metric": "reverse_kl"})["mode_collapse"].episodes


def test_a_generator_collapsed_to_a_point_off_the_modes_is_found_but_a_growing_blob_is_not():
    # spread as `ganforge train --data ring8 --lr_g 0.1 --eval_every 500` measured it (0.000), and as the
    # default ring8 run's EMA generator grows from a blob (0.058, 0.28, 0.49 at steps 500-1500)
    point = [evaluation(step, modes=0, hq_percent=0.0, reverse_kl=math.log(8), spread=0.0) for step in (500, 1000)]
    found = findings(point, {"best_metric": "reverse_kl"})["mode_collapse"]
    assert found.present and found.since == 500 and "spread 0.000" in found.evidence
    growing = [evaluation(step, modes=0, hq_percent=0.0, reverse_kl=math.log(8), spread=s) for step, s in ((250, 0.01), (500, 0.058), (1000, 0.28))]
    assert not findings(growing, {"best_metric": "reverse_kl"})["mode_collapse"].episodes


def test_precision_without_recall_and_lost_classes_are_collapse():
    narrow = [evaluation(step, fd=5.0, precision=0.9, recall=0.02, coverage=0.1, classes_covered=1) for step in (500, 1000)]
    assert "recall 0.020" in findings(narrow)["mode_collapse"].evidence
    lost = [evaluation(500, fd=5.0, classes_covered=10), *(evaluation(step, fd=4.0, classes_covered=4) for step in (1000, 1500))]
    assert findings(lost)["mode_collapse"].evidence == "classes_covered 4, down from 10 at step 500"


def test_collapse_needs_an_evaluation():
    assert "eval_every" in findings([log(100)])["mode_collapse"].unmeasured


def stalled(d_losses) -> list[dict]:
    """Evaluations every 500 steps whose FD stops improving after step 1000; D's loss from `d_losses` (cycled)."""
    records = []
    for i, step in enumerate(range(100, 4001, 100)):
        records.append(log(step, d_loss=d_losses[i % len(d_losses)]))
        if step % 500 == 0:
            records.append(evaluation(step, fd=5.0 if step <= 1000 else 5.0 + 0.1 * (step % 1000 == 0)))
    return records


def test_oscillating_losses_without_progress_are_failure_to_converge():
    found = findings(stalled([0.3, 1.3]))["failure_to_converge"]
    # FD 5 at step 500, then no better for STALL_EVALS evaluations: 1000, 1500, 2000
    assert found.present and found.since == 2000
    assert found.evidence.startswith("fd 5.1, not better than 5 (step 500) for 3 evaluations; d_loss swings by 0.77 of its size")


def test_a_settled_run_or_an_improving_one_is_no_failure_to_converge():
    assert not findings(stalled([1.2, 1.21]))["failure_to_converge"].episodes
    improving = [r if "eval" not in r else evaluation(r["step"], fd=100 / r["step"]) for r in stalled([0.3, 1.3])]
    assert not findings(improving)["failure_to_converge"].episodes


def test_skipped_steps_and_nan_losses_are_divergence():
    records = [log(100), log(200, skipped=3), log(300, skipped=3), log(400, d_loss=float("nan"), skipped=3)]
    found = findings(records)["divergence"]
    assert found.episodes == [(200, 200), (400, 400)]
    assert found.present and found.since == 400 and "d_loss not finite" in found.evidence
    records = [log(100), log(200, skipped=3), {**log(300, skipped=20), "d_loss": None, "g_loss": None}]
    assert findings(records)["divergence"].evidence == "17 step(s) skipped for NaN/Inf; d_loss, g_loss not finite"


def test_live_diagnosis_warns_once_per_mode_as_the_report_would():
    live = LiveDiagnosis(CONFIG)
    lines = []
    records = healthy(1000) + [log(step, d_real=0.98, d_fake=0.01) for step in range(1100, 3001, 100)]
    for record in records:
        lines += live.update(record)
    # the episode begins at its first record, though the warning waits for D_WINNING_RECORDS of them
    assert len(lines) == 1
    assert lines[0].startswith(f"{FAILURE_MODES['discriminator_winning'].title} since step 1100: D(x) 0.980")
    assert "lr_d=" in lines[0]
    assert findings(records)["discriminator_winning"].since == 1100


def test_live_diagnosis_leaves_divergence_to_the_loop_when_the_guard_is_off():
    nan = {**log(100), "d_loss": float("nan")}
    assert LiveDiagnosis({**CONFIG, "max_nonfinite_steps": 3}).update(nan)[0].startswith("divergence")
    assert LiveDiagnosis({**CONFIG, "max_nonfinite_steps": 0}).update(nan) == []


def test_live_diagnosis_forgets_records_a_rollback_replaced():
    live = LiveDiagnosis(CONFIG)
    for step in range(100, 500, 100):
        assert live.update(log(step, d_real=0.99, d_fake=0.01)) == []
    assert live.update(log(200)) == []  # rolled back to step 100: the confident spell is gone
    assert [r["step"] for r in live.logs] == [100, 200]
    warned = [live.update(log(step, d_real=0.99, d_fake=0.01)) for step in range(300, 800, 100)]
    assert [bool(w) for w in warned] == [False, False, False, False, True]


def recorded_runs(kind: str) -> list[str]:
    """Recorded runs named healthy-DATA or failing-MODE-DATA-WHAT (MODE: the failure mode the run was built to show)."""
    return sorted(p.stem for p in RECORDED.glob(f"{kind}-*.jsonl"))


def read_recorded(name: str) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in (RECORDED / f"{name}.jsonl").read_text().splitlines()]
    return records, json.loads((RECORDED / f"{name}.config.json").read_text())


@pytest.mark.parametrize("name", recorded_runs("healthy"))
def test_real_default_runs_raise_no_alarm(name):
    records, config = read_recorded(name)
    assert any("eval" in r for r in records)
    found = findings(records, config)
    assert not [(f.mode, f.episodes, f.evidence) for f in found.values() if f.episodes]
    live = LiveDiagnosis(config)
    assert [line for r in records for line in live.update(r)] == []


@pytest.mark.parametrize("name", recorded_runs("failing"))
def test_real_failing_runs_get_their_diagnosis(name):
    records, config = read_recorded(name)
    mode = name.split("-")[1]
    found = findings(records, config)
    assert found[mode].present, found[mode]
    live = LiveDiagnosis(config)
    assert any(line.startswith(FAILURE_MODES[mode].title) for r in records for line in live.update(r))


def test_training_warns_once_when_a_far_faster_discriminator_wins(cli, tmp_path):
    healthy_run = cli(*digits_args(tmp_path / "healthy", 60))
    assert healthy_run.code == 0 and "warning" not in healthy_run.err
    failing = cli(*digits_args(tmp_path / "failing", 60), "lr_d=0.02")  # 100 times the preset's
    warnings = [line for line in failing.err.splitlines() if line.startswith("warning:")]
    assert failing.code == 0 and len(warnings) == 1, failing.err
    assert warnings[0].startswith("warning: discriminator winning (vanishing generator gradient) since step ")
    records = [json.loads(line) for line in (tmp_path / "failing" / "metrics.jsonl").read_text().splitlines()]
    assert findings(records, json.loads((tmp_path / "failing" / "config.json").read_text()))["discriminator_winning"].present
