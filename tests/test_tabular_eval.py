"""Table metrics: each score on tables with a known answer, the report's parts, and `ganforge eval` on a table run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import ks_2samp

from ganforge.data.table import TableOptions, load_table
from ganforge.metrics.tabular import column_pairs, column_shapes, ks_statistic, ml_efficacy, privacy, quality, table_report
from test_table import TINY_TABLE, make_table

COLUMNS = [
    {"name": "x", "type": "numeric", "missing": None},
    {"name": "y", "type": "numeric", "missing": None},
    {"name": "c", "type": "categorical", "categories": ["a", "b"]},
]


def correlated(n: int, seed: int, linked: bool = True) -> dict:
    """x ~ N(0, 1); y = x + noise; c = 'a' when x > 0 (when `linked`, else a coin flip): strong pair trends."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = x + 0.3 * rng.normal(size=n)
    c = np.where((x > 0) if linked else (rng.random(n) < 0.5), "a", "b").astype(object)
    return {"x": x, "y": y, "c": c}


def test_ks_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(0.3, 1.2, size=200)
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic)


def test_shapes_and_pairs_score_one_for_the_same_table_and_less_for_broken_trends():
    real = correlated(4_000, 0)
    assert quality(real, real, COLUMNS)["quality"] == pytest.approx(1.0)
    shuffled = dict(real, y=np.random.default_rng(1).permutation(real["y"]), c=np.random.default_rng(2).permutation(real["c"]))
    shapes, pairs = column_shapes(real, shuffled, COLUMNS), column_pairs(real, shuffled, COLUMNS)
    assert all(s == pytest.approx(1.0) for s in shapes.values())  # shapes cannot see independent columns...
    assert pairs["x|y"] < 0.6 and pairs["x|c"] < 0.6  # ...pair trends can: corr ~0.96 -> ~0, and c no longer follows x


def test_categories_tvd():
    real = correlated(1_000, 0)
    all_a = dict(real, c=np.full(1_000, "a", dtype=object))
    share_a = (real["c"] == "a").mean()
    assert column_shapes(real, all_a, COLUMNS)["c"] == pytest.approx(share_a)  # 1 - TVD = 1 - (1 - share of a)


def test_ml_efficacy_learns_from_informative_rows_and_not_from_noise():
    train, test = correlated(2_000, 0), correlated(1_000, 1)
    informative = ml_efficacy(train, test, COLUMNS, "c")
    noise = ml_efficacy(correlated(2_000, 2, linked=False), test, COLUMNS, "c")
    assert set(informative) == {"f1_decision_tree", "f1_adaboost", "f1_logistic_regression", "f1_mlp", "ml_efficacy"}
    assert informative["ml_efficacy"] > 0.9 and noise["ml_efficacy"] < 0.7


def test_privacy_flags_copied_rows():
    train, holdout = correlated(1_000, 0), correlated(1_000, 1)
    copied = privacy(train, holdout, train, COLUMNS)
    fresh = privacy(train, holdout, correlated(1_000, 2), COLUMNS)
    assert copied["dcr_synthetic"] == 0 and copied["dcr_closer_share"] == 1.0
    assert 0.3 < fresh["dcr_closer_share"] < 0.7


def test_report_always_names_what_is_missing():
    real = correlated(500, 0)
    metrics, notes = table_report(real, real, COLUMNS, None, None)
    assert "quality" in metrics and "ml_efficacy" not in metrics and "target=" in notes[0]
    metrics, notes = table_report(real, real, COLUMNS, "c", correlated(500, 1))
    assert {"quality", "ml_efficacy", "dcr_closer_share"} <= set(metrics) and not notes


def test_eval_of_a_table_run(tmp_path, cli):
    data, test = make_table(tmp_path / "train.csv"), make_table(tmp_path / "test.csv", n=120, seed=1)
    run = tmp_path / "run"
    args = ("train", "--data", data, "--steps", "20", "--out", run, "target=colour", f"test_data={test}", "eval_every=20", *TINY_TABLE)
    assert cli(*args).code == 0
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "eval" in line]
    assert logged and {"quality", "ml_efficacy", "dcr_closer_share"} <= set(logged[-1]["eval"])
    result = cli("eval", run)
    assert result.code == 0
    record = json.loads(result.out)
    assert record["n"] == 240 and 0 < record["metrics"]["quality"] <= 1 and 0 <= record["metrics"]["ml_efficacy"] <= 1
    assert (run / "best" / "generator.json").is_file()


def test_bad_target_is_refused(tmp_path, cli):
    data = make_table(tmp_path / "train.csv")
    result = cli("train", "--data", data, "--steps", "2", "--out", tmp_path / "run", "target=height", "eval_every=2", *TINY_TABLE)
    assert result.code == 2 and "target='height'" in result.err and not (tmp_path / "run").exists()


def test_reference_rows_decode_as_read(tmp_path):
    dataset = load_table(make_table(tmp_path / "t.csv"), TableOptions())
    assert quality(dataset.table, dataset.table, dataset.transform["columns"])["quality"] == pytest.approx(1.0)


def test_eval_takes_a_target_and_held_out_rows_the_run_was_trained_without(tmp_path, cli):
    data, test = make_table(tmp_path / "train.csv"), make_table(tmp_path / "test.csv", n=120, seed=1)
    run = tmp_path / "run"
    assert cli("train", "--data", data, "--steps", "4", "--out", run, *TINY_TABLE).code == 0
    plain = json.loads(cli("eval", run).out)
    assert "ml_efficacy" not in plain["metrics"]
    record = json.loads(cli("eval", run, "--target", "colour", "--test-data", test).out)
    assert 0 <= record["metrics"]["ml_efficacy"] <= 1 and "dcr_closer_share" in record["metrics"]
    bad = cli("eval", run, "--target", "height")
    assert bad.code == 2 and "target='height' is not a categorical column" in bad.err
    digits = tmp_path / "digits"
    assert cli("train", "--steps", "2", "--out", digits, "--quiet", "--checkpoint_every", "2", "--device", "cpu").code == 0
    wrong = cli("eval", digits, "--target", "colour")
    assert wrong.code == 2 and "--target colour applies to table runs" in wrong.err
