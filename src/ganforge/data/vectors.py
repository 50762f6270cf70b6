"""Vector datasets: `.npy` arrays and `.csv` tables, one row per sample."""

from __future__ import annotations

import csv
import tokenize
from pathlib import Path

import numpy as np
import torch

from ganforge.data.dataset import Dataset
from ganforge.errors import GanforgeError


def load_npy(path: Path) -> np.ndarray:
    """The numeric array of a .npy file, or a clear error."""
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise GanforgeError(f"{path}: cannot read .npy file ({err}): expected a numeric array saved by numpy.save") from None
    except (OSError, EOFError) as err:
        raise GanforgeError(f"{path}: cannot read .npy file: truncated or corrupt ({err})") from None
    except (MemoryError, OverflowError, SyntaxError, tokenize.TokenError) as err:
        # A header that claims an impossible shape or does not parse.
        raise GanforgeError(f"{path}: .npy header is corrupt ({type(err).__name__})") from None
    if array.dtype.kind not in "biuf":
        raise GanforgeError(f"{path}: array of dtype {array.dtype} is not numeric: expected integers or floats")
    return array


def _load_csv(path: Path) -> tuple[np.ndarray, list[int]]:
    """Numeric rows of a CSV file and the file line of each; a first line with no numeric cell is a header.

    Errors give file line numbers.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise GanforgeError(f"{path}: cannot read CSV file ({err})") from None
    if rows and not any(_is_number(cell) for cell in rows[0][1]):
        rows = rows[1:]  # a header line
    if not rows:
        raise GanforgeError(f"{path}: no data rows: expected one numeric row per sample")
    width = len(rows[0][1])
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise GanforgeError(f"{path}: line {line} has {len(row)} columns: expected {width} like the first data row")
        for j, cell in enumerate(row):
            if not _is_number(cell):
                raise GanforgeError(f"{path}: line {line}, column {j + 1} is {cell.strip()!r}: expected a number")
            values[i, j] = float(cell)
    return values, [line for line, _ in rows]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def load_vectors(path: Path, array: np.ndarray | None = None) -> Dataset:
    """Rows of a .npy (n, dim) or (n,) array (or `array`, read from it) or a .csv table, standardised per column."""
    lines = None
    if array is None:
        array, lines = (load_npy(path), None) if path.suffix.lower() == ".npy" else _load_csv(path)
    line = (lambda row: "") if lines is None else (lambda row: f" (line {lines[row]} of the file)")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise GanforgeError(f"{path}: array of shape {array.shape} is not a table of vectors: expected (samples, features) with at least 2 samples")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        row = int(np.argwhere(~np.isfinite(array))[0][0])
        raise GanforgeError(f"{path}: row {row + 1} holds NaN or Inf{line(row)}: expected finite numbers")
    if np.abs(array).max() > np.finfo(np.float32).max:
        row = int(np.argwhere(np.abs(array) > np.finfo(np.float32).max)[0][0])
        raise GanforgeError(f"{path}: row {row + 1} holds a value beyond float32's range (3.4e38){line(row)}: expected smaller numbers")
    shift = array.mean(axis=0)
    scale = array.std(axis=0)
    scale[scale == 0] = 1.0
    return Dataset(
        name=str(path),
        kind="vectors",
        samples=torch.from_numpy(array.astype(np.float32)),
        transform={"kind": "affine", "shift": shift.tolist(), "scale": scale.tolist()},
    )
