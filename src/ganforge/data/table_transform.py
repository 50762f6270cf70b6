"""The invertible map between a table's rows and the networks' space (see `ganforge.data.table`).

`fit_transform` learns it (JSON: one entry per column, the spans of a row and the conditions),
`encode` turns typed columns into rows of floats, `decode` turns network rows back into typed
columns in the original units.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from ganforge.data.table import ALPHA_SCALE, DISCRETE, MIXTURE_MODES, MIXTURE_SUBSAMPLE, MODE_WEIGHT, SPIKE_SHARE, Table

FIT_SEED = 0  # the subsample, the mixtures and the mode draws: one table, one transform


def _fit_modes(values: np.ndarray, rng: np.random.Generator) -> tuple[list[float], list[float]]:
    """Means and standard deviations of the modes of a numeric column's present `values`.

    A value that at least SPIKE_SHARE of them hold (the zeros of a capital-gain column, the 40 of
    hours per week) is a mode of its own with standard deviation 0: it encodes exactly and decodes
    exactly, whatever the generator's offset. The other values get a Gaussian mixture.
    """
    numbers, counts = np.unique(values, return_counts=True)
    spikes = numbers[counts >= SPIKE_SHARE * len(values)]
    rest = values[~np.isin(values, spikes)]
    means, stds = _fit_mixture(rest, rng) if len(rest) else ([], [])
    return spikes.tolist() + means, [0.0] * len(spikes) + stds


def _fit_mixture(values: np.ndarray, rng: np.random.Generator) -> tuple[list[float], list[float]]:
    """Means and standard deviations of the Gaussian modes of `values` (a subsample when large)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    sample = values if len(values) <= MIXTURE_SUBSAMPLE else rng.choice(values, MIXTURE_SUBSAMPLE, replace=False)
    spread = float(values.max() - values.min())
    floor = max(spread * 1e-6, 1e-9)  # keeps every Gaussian mode's width above 0 (0 marks an exact value)
    if len(np.unique(sample)) < 2:
        return [float(sample[0])], [floor]
    mixture = BayesianGaussianMixture(
        n_components=min(MIXTURE_MODES, len(np.unique(sample))), weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=0.001, max_iter=100, n_init=1, random_state=FIT_SEED,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture.fit(sample.reshape(-1, 1))
    keep = mixture.weights_ > MODE_WEIGHT
    means = mixture.means_[keep, 0]
    stds = np.maximum(np.sqrt(mixture.covariances_[keep].reshape(-1)), floor)
    return means.tolist(), stds.tolist()


def fit_transform(table: Table, meta: dict[str, dict]) -> dict:
    """The transform of a table: per-column parameters, the row's spans and the condition tables (JSON)."""
    start = time.perf_counter()
    rng = np.random.default_rng(FIT_SEED)
    columns, spans = [], []
    for name, values in table.items():
        column = {"name": name, **meta[name], "start": sum(width for _, width in spans)}  # its first unit in a row
        if column["type"] in DISCRETE:
            column["categories"] = sorted(set(values.tolist()))
            spans.append(["softmax", len(column["categories"])])
        else:
            present = values[~np.isnan(values)]
            column["min"], column["max"] = float(present.min()), float(present.max())
            column["means"], column["stds"] = _fit_modes(present, rng)
            spans += [["tanh", 1], ["softmax", len(column["means"])]] + ([["softmax", 2]] if column["missing"] is not None else [])
        columns.append(column)
    transform = {"kind": "table", "columns": columns, "spans": spans, "row_dim": sum(width for _, width in spans)}
    transform["conditions"] = _conditions(table, columns)
    transform["fit_seconds"] = round(time.perf_counter() - start, 3)
    return transform


def _conditions(table: Table, columns: list[dict]) -> dict:
    """The (discrete column, category) pairs a row can be drawn for, with two distributions over them.

    `training`: a column uniformly, then a category in proportion to log(1 + count) (training-by-sampling,
    so rare categories are seen often enough to learn); `real`: a column uniformly, then a category by
    its real frequency, so rows generated for these conditions follow the real table.
    """
    discrete = [c for c in columns if c["type"] in DISCRETE]
    counts = [[int((table[c["name"]] == category).sum()) for category in c["categories"]] for c in discrete]
    training, real = [], []
    for column_counts in counts:
        logs = np.log1p(column_counts)
        training += (logs / logs.sum() / len(discrete)).tolist()
        real += (np.asarray(column_counts) / sum(column_counts) / len(discrete)).tolist()
    return {
        "columns": [c["name"] for c in discrete],
        "offsets": np.cumsum([0] + [len(c["categories"]) for c in discrete]).tolist()[:-1],
        "starts": [c["start"] for c in discrete],
        "counts": counts,
        "training": training,
        "real": real,
        "dim": sum(len(c["categories"]) for c in discrete),
    }


def encode(table: Table, transform: dict) -> tuple[np.ndarray, np.ndarray]:
    """Rows in network space, float32 (n, row_dim), and each row's category index per discrete column, int64 (n, d)."""
    rng = np.random.default_rng(FIT_SEED)
    parts, codes = [], []
    for column in transform["columns"]:
        values = table[column["name"]]
        if column["type"] in DISCRETE:
            index = {category: i for i, category in enumerate(column["categories"])}
            code = np.array([index.get(v, -1) for v in values.tolist()])
            codes.append(code)
            parts.append(np.eye(len(column["categories"]), dtype=np.float32)[code])
        else:
            parts += _encode_number(values, column, rng)
    rows = np.concatenate(parts, axis=1).astype(np.float32)
    return rows, np.stack(codes, axis=1) if codes else np.zeros((len(rows), 0), dtype=np.int64)


def _encode_number(values: np.ndarray, column: dict, rng: np.random.Generator) -> list[np.ndarray]:
    """[alpha (n, 1), mode one-hot (n, k)] and, for a column with missing values, its flag one-hot (n, 2)."""
    missing = np.isnan(values)
    x = np.where(missing, np.nanmean(values), values)
    means, stds = np.asarray(column["means"]), np.asarray(column["stds"])
    exact = stds == 0  # modes of one exact value (a spike); the others are Gaussian
    width = np.where(exact, 1.0, stds)
    gaussian = np.where(exact, -np.inf, -0.5 * ((x[:, None] - means) / width) ** 2 - np.log(width))
    spike = np.where(exact & (x[:, None] == means), 0.0, -np.inf)
    nearest = np.where(np.arange(len(means)) == np.abs(x[:, None] - means).argmin(axis=1, keepdims=True), 0.0, -np.inf)
    # A value on a spike takes the spike's mode; any other value a Gaussian mode drawn from its posterior
    # over them (equal weights: the mixture's weights are folded into which modes were kept); a value
    # with neither (a column of spikes only: a missing cell's stand-in) the nearest mode.
    has = [np.isfinite(spike).any(axis=1, keepdims=True), np.isfinite(gaussian).any(axis=1, keepdims=True)]
    log_density = np.select(has, [spike, gaussian], nearest)
    posterior = np.exp(log_density - log_density.max(axis=1, keepdims=True))
    posterior /= posterior.sum(axis=1, keepdims=True)
    mode = (posterior.cumsum(axis=1) < rng.random((len(x), 1))).sum(axis=1).clip(max=len(means) - 1)
    alpha = np.where(exact[mode], 0.0, np.clip((x - means[mode]) / (ALPHA_SCALE * width[mode]), -0.99, 0.99))
    parts = [alpha[:, None], np.eye(len(means))[mode]]
    if column["missing"] is not None:
        parts.append(np.eye(2)[missing.astype(int)])
    return parts


def decode(rows: np.ndarray, transform: dict) -> Table:
    """Network rows (n, row_dim) -> typed columns in the original units (see `Table`).

    Soft outputs are read by their largest entry; numbers are clipped to the observed range,
    integers and times rounded, other numbers rounded to the decimals the data shows.
    """
    table, at = {}, 0
    for column in transform["columns"]:
        if column["type"] in DISCRETE:
            width = len(column["categories"])
            table[column["name"]] = np.array(column["categories"], dtype=object)[rows[:, at : at + width].argmax(axis=1)]
            at += width
            continue
        k = len(column["means"])
        mode = rows[:, at + 1 : at + 1 + k].argmax(axis=1)
        value = np.clip(rows[:, at], -1, 1) * ALPHA_SCALE * np.asarray(column["stds"])[mode] + np.asarray(column["means"])[mode]
        value = np.clip(value, column["min"], column["max"])
        value = np.round(value, 0 if column["type"] != "numeric" else column["decimals"])
        at += 1 + k
        if column["missing"] is not None:
            value[rows[:, at : at + 2].argmax(axis=1) == 1] = np.nan
            at += 2
        table[column["name"]] = value
    return table
