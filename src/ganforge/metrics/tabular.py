"""Metrics of synthetic tables against real ones: quality, ML efficacy and a privacy check.

Tables are dicts of columns (see `ganforge.data.table.Table`); `columns` is the transform's list
of column descriptions (name, type, categories). Scores are in [0, 1], higher is better:

- column shapes: 1 - Kolmogorov-Smirnov statistic for a number, 1 - total variation distance of
  the category frequencies for a discrete column;
- column-pair trends: 1 - |difference of Pearson correlations| / 2 for two numbers, else 1 - TVD of
  their contingency tables (numbers cut into deciles of the real column);
- quality: the mean of the two. It is easy to game (columns drawn independently score high on
  shapes), so `table_report` always puts ML efficacy beside it:
- ML efficacy: classifiers trained on synthetic rows predict `target` on held-out real rows; the F1
  of the positive class (the rarer one of a two-class target, else macro F1), mean of four models;
- privacy: each row's distance to the closest real training row (DCR), synthetic against held-out real.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np

DISCRETE = ("categorical", "boolean")
BINS = 10  # deciles of the real column, for numbers in contingency tables
DCR_ROWS = 2_000  # rows whose distance to the training rows is measured, at most


def _present(values: np.ndarray) -> np.ndarray:
    return values[~np.isnan(values)]


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    gap = np.searchsorted(a, grid, side="right") / len(a) - np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(gap).max())


def tvd(real_codes: np.ndarray, synthetic_codes: np.ndarray, size: int) -> float:
    """Total variation distance between the frequencies of codes 0..size-1 in two samples."""
    p = np.bincount(real_codes, minlength=size) / len(real_codes)
    q = np.bincount(synthetic_codes, minlength=size) / len(synthetic_codes)
    return float(0.5 * np.abs(p - q).sum())


def _codes(values: np.ndarray, column: dict, real: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer codes: categories by their index in the transform, numbers by the real column's deciles (missing: own code)."""
    if column["type"] in DISCRETE:
        index = {c: i for i, c in enumerate(column["categories"])}
        return np.array([index.get(v, len(index)) for v in values.tolist()]), len(index) + 1
    edges = np.unique(np.quantile(_present(real), np.linspace(0, 1, BINS + 1)[1:-1]))
    codes = np.searchsorted(edges, values, side="right")
    return np.where(np.isnan(values), len(edges) + 1, codes), len(edges) + 2


def column_shapes(real: dict, synthetic: dict, columns: list[dict]) -> dict[str, float]:
    """Per column: 1 - KS (numbers, present values) or 1 - TVD (categories)."""
    scores = {}
    for column in columns:
        name = column["name"]
        if column["type"] in DISCRETE:
            (r, size), (s, _) = _codes(real[name], column, real[name]), _codes(synthetic[name], column, real[name])
            scores[name] = 1 - tvd(r, s, size)
        else:
            present = _present(synthetic[name])
            scores[name] = 1 - ks_statistic(_present(real[name]), present) if len(present) else 0.0
    return scores


def column_pairs(real: dict, synthetic: dict, columns: list[dict]) -> dict[str, float]:
    """Per pair of columns: 1 - |correlation difference| / 2 for two numbers, else 1 - TVD of the contingency tables."""
    scores = {}
    for a, b in itertools.combinations(columns, 2):
        key = f"{a['name']}|{b['name']}"
        if a["type"] not in DISCRETE and b["type"] not in DISCRETE:
            scores[key] = 1 - abs(_correlation(real, a["name"], b["name"]) - _correlation(synthetic, a["name"], b["name"])) / 2
            continue
        (ra, na), (rb, nb) = _codes(real[a["name"]], a, real[a["name"]]), _codes(real[b["name"]], b, real[b["name"]])
        sa, sb = _codes(synthetic[a["name"]], a, real[a["name"]])[0], _codes(synthetic[b["name"]], b, real[b["name"]])[0]
        scores[key] = 1 - tvd(ra * nb + rb, sa * nb + sb, na * nb)
    return scores


def _correlation(table: dict, a: str, b: str) -> float:
    x, y = table[a], table[b]
    both = ~(np.isnan(x) | np.isnan(y))
    if both.sum() < 2 or x[both].std() == 0 or y[both].std() == 0:
        return 0.0
    return float(np.corrcoef(x[both], y[both])[0, 1])


def quality(real: dict, synthetic: dict, columns: list[dict]) -> dict[str, float]:
    """{"column_shapes", "column_pairs", "quality"}: the two means and their mean."""
    shapes = float(np.mean(list(column_shapes(real, synthetic, columns).values())))
    pairs = column_pairs(real, synthetic, columns)
    trend = float(np.mean(list(pairs.values()))) if pairs else shapes
    return {"column_shapes": shapes, "column_pairs": trend, "quality": (shapes + trend) / 2}


def features(table: dict, columns: list[dict], reference: dict) -> np.ndarray:
    """Rows as model features: categories one-hot, numbers standardised by `reference`'s columns, missing as 0 plus a flag."""
    parts = []
    for column in columns:
        values = table[column["name"]]
        if column["type"] in DISCRETE:
            index = {c: i for i, c in enumerate(column["categories"])}
            parts.append(np.eye(len(index) + 1)[[index.get(v, len(index)) for v in values.tolist()]][:, :-1])
            continue
        present = _present(reference[column["name"]])
        scale = present.std() or 1.0
        parts.append(np.nan_to_num((values - present.mean()) / scale)[:, None])
        if column["missing"] is not None:
            parts.append(np.isnan(values)[:, None].astype(float))
    return np.concatenate(parts, axis=1)


def ml_efficacy(train: dict, test: dict, columns: list[dict], target: str, seed: int = 0) -> dict[str, float]:
    """F1 on the `test` rows of four classifiers fitted on the `train` rows (synthetic ones, or real for a baseline).

    Returns each model's F1 and their mean, `ml_efficacy`; a model whose training rows hold one class scores 0.
    """
    from sklearn.ensemble import AdaBoostClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.tree import DecisionTreeClassifier

    inputs = [c for c in columns if c["name"] != target]
    target_column = next(c for c in columns if c["name"] == target)
    x_train, x_test = features(train, inputs, train), features(test, inputs, train)
    y_train, y_test = np.asarray(train[target]).astype(str), np.asarray(test[target]).astype(str)
    categories = target_column["categories"]
    binary = len(categories) == 2
    positive = min(categories, key=lambda c: (np.asarray(test[target]) == c).sum()) if binary else None
    models = {
        "decision_tree": DecisionTreeClassifier(max_depth=15, random_state=seed),
        "adaboost": AdaBoostClassifier(random_state=seed),
        "logistic_regression": LogisticRegression(max_iter=1_000),
        "mlp": MLPClassifier(hidden_layer_sizes=(50,), max_iter=200, random_state=seed),
    }
    scores = {}
    for name, model in models.items():
        if len(np.unique(y_train)) < 2:
            scores[f"f1_{name}"] = 0.0
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings of the linear and MLP models
            predicted = model.fit(x_train, y_train).predict(x_test)
        f1 = f1_score(y_test, predicted, pos_label=positive, average="binary") if binary else f1_score(y_test, predicted, average="macro")
        scores[f"f1_{name}"] = float(f1)
    scores["ml_efficacy"] = float(np.mean(list(scores.values())))
    return scores


def privacy(train: dict, holdout: dict, synthetic: dict, columns: list[dict], seed: int = 0) -> dict[str, float]:
    """Distance to the closest real training row (DCR), in `features` space, of synthetic and of held-out real rows.

    `dcr_synthetic`, `dcr_holdout`: their medians; `dcr_closer_share`: the share of synthetic rows nearer to the
    training rows than the median held-out row is (about 0.5 when synthetic rows are as new as fresh real ones;
    near 1 when they copy training rows).
    """
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)

    def some(table: dict) -> np.ndarray:
        x = features(table, columns, train)
        return x[rng.choice(len(x), min(DCR_ROWS, len(x)), replace=False)]

    index = NearestNeighbors(n_neighbors=1).fit(features(train, columns, train))
    synthetic_dcr = index.kneighbors(some(synthetic))[0][:, 0]
    holdout_dcr = index.kneighbors(some(holdout))[0][:, 0]
    median = float(np.median(holdout_dcr))
    return {
        "dcr_synthetic": float(np.median(synthetic_dcr)),
        "dcr_holdout": median,
        "dcr_closer_share": float((synthetic_dcr < median).mean()),
    }


def table_report(real: dict, synthetic: dict, columns: list[dict], target: str | None, test: dict | None, seed: int = 0) -> tuple[dict, list[str]]:
    """Quality, and beside it ML efficacy and privacy where a target and held-out rows allow; returns (metrics, notes)."""
    metrics, notes = quality(real, synthetic, columns), []
    if target is None:
        notes.append("no ML efficacy: set target=COLUMN (a categorical column) to measure it")
    elif test is None:
        notes.append("no ML efficacy or privacy check: set test_data=FILE (held-out real rows with the same columns)")
    else:
        metrics.update(ml_efficacy(synthetic, test, columns, target, seed))
    if test is not None:
        metrics.update(privacy(real, test, synthetic, columns, seed))
    return metrics, notes
