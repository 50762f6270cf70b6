"""Tables of mixed columns: reading, typing each column, and the invertible map to the networks' space.

A table is read from a delimited text file (`.csv`, `.tsv`, or headerless files like UCI's
`adult.data` with `columns=` names and `header=false`), or from `.parquet` with pyarrow (its
cells are typed by the same rules). Each column gets a type:

- `numeric`, `integer`: numbers; `datetime`: ISO dates or times, handled as seconds;
- `categorical`, `boolean`: a set of observed values.

Cells such as `?`, `NA` or empty are missing: a category of their own in a discrete column, a
flag (present / missing) beside a numeric one. The transform (`fit_transform`) is JSON, so it
ships with the exported generator, and it is inverted exactly: decoded rows hold integers as
integers, numbers inside the observed range, categories only from the observed set.

A numeric column is encoded the mode-specific way (Xu et al. 2019): a Bayesian Gaussian mixture
fitted to at most `MIXTURE_SUBSAMPLE` of its values; each value becomes a one-hot of its mode and
its offset from that mode's mean in units of 4 standard deviations, in [-1, 1].

Network space, one row: for each column its spans, in order: `tanh` (1 unit) then `softmax` over the
modes for a number, `softmax` over the categories for a discrete column, and a `softmax` of 2 for a
missing flag. After the row comes the condition: a one-hot over every (discrete column, category)
pair, the one the row was drawn for (training-by-sampling, `TableSampler`).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ganforge.data.dataset import Dataset
from ganforge.errors import GanforgeError, first_line

TYPES = ("numeric", "integer", "categorical", "boolean", "datetime")
DISCRETE = ("categorical", "boolean")
MISSING = frozenset({"", "?", "na", "nan", "n/a", "null", "none"})  # compared stripped and lower-cased
BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "t", "f", "y", "n"})
TABLE_SUFFIXES = (".csv", ".tsv", ".data", ".test", ".txt", ".parquet")
MIXTURE_MODES = 10  # at most this many modes per numeric column
MIXTURE_SUBSAMPLE = 5_000  # values a column's mixture is fitted on, at most
MODE_WEIGHT = 0.005  # modes lighter than this are dropped
SPIKE_SHARE = 0.05  # a number held by at least this share of a column's present values is a mode of its own, exact
ALPHA_SCALE = 4.0  # a value's offset from its mode's mean is measured in 4 standard deviations

Table = dict  # column name -> numpy array: float64 (NaN missing) for numbers, object (str) for discrete


@dataclass
class TableOptions:
    """How to read a table file: `table` forces table mode for a numeric .csv (auto: when a column holds text)."""

    table: bool | None = None
    columns: list[str] | None = None
    header: bool | None = None
    column_types: dict[str, str] | None = None


def table_options(config: dict) -> TableOptions:
    """The table keys of a config (as a dict, e.g. a run's config.json); absent keys are auto."""
    columns = config.get("columns")
    types = config.get("column_types")
    return TableOptions(
        table=config.get("table"),
        columns=[c.strip() for c in columns.split(",")] if columns else None,
        header=config.get("header"),
        column_types=parse_column_types(types) if types else None,
    )


def parse_column_types(text: str) -> dict[str, str]:
    """'age:integer,sex:categorical' -> {'age': 'integer', 'sex': 'categorical'}."""
    result = {}
    for item in text.split(","):
        name, sep, kind = item.partition(":")
        if not sep or not name.strip() or kind.strip() not in TYPES:
            raise GanforgeError(f"column_types={text!r}: {item.strip()!r} is not NAME:TYPE with TYPE one of {', '.join(TYPES)}")
        result[name.strip()] = kind.strip()
    return result


def is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING


def read_cells(path: Path, options: TableOptions) -> tuple[list[str], list[list[str]]]:
    """Column names and rows of stripped cells; a ragged row is an error naming its line."""
    if path.suffix.lower() == ".parquet":
        return _parquet_cells(path, options)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter, skipinitialspace=True)
            rows = [(reader.line_num, [c.strip() for c in row]) for row in reader if row and any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise GanforgeError(f"{path}: cannot read table ({err})") from None
    header = options.header if options.header is not None else not options.columns
    names = rows.pop(0)[1] if header and rows else None
    if options.columns:
        if names is not None and len(names) != len(options.columns):
            raise GanforgeError(f"columns= names {len(options.columns)} columns but {path} has {len(names)}: expected one name per column")
        names = options.columns
    if not rows:
        raise GanforgeError(f"{path}: no data rows: expected one row per record")
    width = len(rows[0][1])
    names = names or [f"column{j + 1}" for j in range(width)]
    if len(names) != width:
        raise GanforgeError(f"{path}: {len(names)} column names for rows of {width} cells: expected as many names as cells")
    _require_unique_names(path, names)
    for line, row in rows:
        if len(row) != width:
            raise GanforgeError(f"{path}: line {line} has {len(row)} cells: expected {width} like the first data row")
    return names, [row for _, row in rows]


def _parquet_cells(path: Path, options: TableOptions) -> tuple[list[str], list[list[str]]]:
    """A .parquet file's column names and its cells as text (nulls empty), typed by the same rules as a CSV's:
    its integers read as integers, floats as numbers, booleans, timestamps as ISO dates."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise GanforgeError(f"{path}: reading .parquet needs pyarrow: pip install 'ganforge[parquet]'") from None
    try:
        data = pq.read_table(path)
    except Exception as err:  # pyarrow's ArrowInvalid and OSError alike: not a readable parquet file
        raise GanforgeError(f"{path}: cannot read table ({first_line(err)})") from None
    names = options.columns or data.column_names
    if len(names) != data.num_columns:
        raise GanforgeError(f"columns= names {len(names)} columns but {path} has {data.num_columns}: expected one name per column")
    if not data.num_rows:
        raise GanforgeError(f"{path}: no data rows: expected one row per record")
    _require_unique_names(path, names)
    columns = [[_parquet_text(value) for value in column.to_pylist()] for column in data.columns]
    return list(names), [list(row) for row in zip(*columns)]


def _require_unique_names(path: Path, names: list[str]) -> None:
    if len(set(names)) != len(names):
        raise GanforgeError(f"{path}: column names repeat ({', '.join(sorted({n for n in names if names.count(n) > 1}))}): expected unique names")


def _parquet_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value).strip()


def _numbers(cells: list[str]) -> np.ndarray | None:
    """The cells as float64 (one C-level conversion), or None when one of them is not a finite number."""
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        return None
    return values if np.isfinite(values).all() else None


def _timestamp(cell: str) -> float | None:
    try:
        moment = datetime.fromisoformat(cell)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def infer_type(present: list[str]) -> str:
    """The type of a column from its present (non-missing) cells."""
    numbers = _numbers(present)
    if numbers is not None:
        return "integer" if np.all(numbers == np.round(numbers)) and not any("." in c for c in present) else "numeric"
    if {c.lower() for c in set(present)} <= BOOLEAN_WORDS:
        return "boolean"
    if all(_timestamp(c) is not None for c in set(present)) and any("-" in c for c in present):
        return "datetime"
    return "categorical"


def is_numeric_table(rows: list[list[str]]) -> bool:
    """Whether every present cell is a number: such a .csv stays a table of vectors unless `table=true`."""
    return all(_numbers([c for c in column if not is_missing(c)]) is not None for column in zip(*rows))


def parse_columns(path: Path, names: list[str], rows: list[list[str]], types: dict[str, str] | None) -> tuple[Table, dict[str, dict]]:
    """Typed columns (see `Table`) and what each column is: {"type", "missing": its marker or None, "decimals"}.

    `types` overrides the inferred types; `decimals` is the most digits seen after a decimal point (numbers).
    """
    types = dict(types or {})
    unknown = sorted(set(types) - set(names))
    if unknown:
        raise GanforgeError(f"column_types names {', '.join(unknown)}, not a column of {path}: expected one of {', '.join(names)}")
    table, meta = {}, {}
    for name, cells in zip(names, zip(*rows)):
        missing = np.array([is_missing(c) for c in cells])
        if missing.all():
            raise GanforgeError(f"{path}: column {name!r} is missing in every row: expected some values (drop the column)")
        present = [c for c, gone in zip(cells, missing) if not gone]
        kind = types.get(name) or infer_type(present)
        table[name] = _typed(path, name, cells, present, missing, kind)
        tokens = [c for c, gone in zip(cells, missing) if gone]
        decimals = max((len(c.partition(".")[2]) for c in set(present)), default=0) if kind == "numeric" else 0
        meta[name] = {"type": kind, "missing": max(set(tokens), key=tokens.count) if tokens else None, "decimals": min(decimals, 8)}
        if kind == "datetime":
            meta[name]["dates"] = not any(":" in c for c in set(present))  # dates without times are written as dates
    return table, meta


def _typed(path: Path, name: str, cells: tuple[str, ...], present: list[str], missing: np.ndarray, kind: str) -> np.ndarray:
    if kind in DISCRETE:
        return np.array(cells, dtype=object)
    values = np.full(len(cells), np.nan)
    parsed = _numbers(present) if kind != "datetime" else np.array([_timestamp(c) for c in present], dtype=float)
    if parsed is None or np.isnan(parsed).any():
        bad = next(c for c in present if (_numbers([c]) if kind != "datetime" else _timestamp(c)) is None)
        raise GanforgeError(f"{path}: column {name!r} holds {bad!r}: expected a {kind} value (or set column_types={name}:categorical)")
    values[~missing] = parsed
    return values


class TableDataset(Dataset):
    """A table in memory: `samples` are its rows in network space, float32 (n, row_dim).

    The networks see a row followed by its condition (`sample_shape` = row_dim + conditions):
    `real_batch` builds those from the pair indices `TableSampler` draws. `table` keeps the typed
    columns, for evaluation; `codes` (n, discrete columns) each row's category per discrete column.
    """

    def __init__(self, name: str, samples: Tensor, transform: dict, table: Table, codes: Tensor, info: dict | None = None) -> None:
        super().__init__(name=name, kind="table", samples=samples, transform=transform, info=info or {})
        self.table, self.codes = table, codes
        self._conditions: tuple | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.transform["row_dim"] + self.transform["conditions"]["dim"],)

    def to(self, device: torch.device) -> TableDataset:
        self.samples, self.codes, self._conditions = self.samples.to(device), self.codes.to(device), None
        return self

    def to_model_space(self, batch: Tensor) -> Tensor:
        return batch.float()  # rows are stored in network space

    def batch_sampler(self, batch_size: int, seed: int, device: torch.device) -> TableSampler:
        return TableSampler(self, batch_size, seed, device)

    def real_batch(self, index: Tensor) -> Tensor:
        """Pair indices (condition * n + row) -> [row, one-hot condition], float32 (batch, row_dim + conditions)."""
        n, dim = len(self), self.transform["conditions"]["dim"]
        rows = self.samples[index % n]
        if not dim:
            return rows
        return torch.cat([rows, torch.nn.functional.one_hot(index // n, dim).to(rows.dtype)], dim=1)


class TableSampler:
    """Training-by-sampling: each real row is drawn for a condition (a discrete column's category).

    A condition is drawn from the log-frequency distribution (`transform["conditions"]["training"]`),
    then a row uniformly among those holding it. `next()` returns pair indices, condition * n + row,
    int64 (batch_size,) on the device (`TableDataset.real_batch` reads them). Batch b comes from a
    generator seeded with (seed, b), so the state is the count of batches drawn and a resumed run
    draws the batches the uninterrupted run would have.
    """

    def __init__(self, dataset: TableDataset, batch_size: int, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.n, self.batch_size, self.seed, self.device = len(dataset), batch_size, seed, torch.device(device)
        self.batches = 0
        conditions = dataset.transform["conditions"]
        self.probabilities = torch.tensor(conditions["training"], dtype=torch.float64)
        codes = dataset.codes.cpu()
        # Rows grouped by condition: condition c's rows are rows[starts[c] : starts[c] + counts[c]].
        offsets = torch.tensor(conditions["offsets"], dtype=torch.long)
        flat = (codes + offsets).T.reshape(-1)  # (discrete columns * n,): each row's condition, column by column
        order = torch.argsort(flat, stable=True)
        self.rows = (order % self.n).to(self.device)
        self.counts = torch.bincount(flat, minlength=conditions["dim"]).to(self.device)
        self.starts = (torch.cumsum(self.counts, 0) - self.counts).to(self.device)

    def next(self) -> Tensor:
        """Pair indices of the next batch, int64 (batch_size,) on the device."""
        rng = torch.Generator().manual_seed(self.seed * 1_000_003 + self.batches)
        self.batches += 1
        if not len(self.probabilities):
            return torch.randint(self.n, (self.batch_size,), generator=rng).to(self.device)
        condition = torch.multinomial(self.probabilities, self.batch_size, replacement=True, generator=rng).to(self.device)
        position = (torch.rand(self.batch_size, generator=rng, dtype=torch.float64).to(self.device) * self.counts[condition]).long()
        return condition * self.n + self.rows[self.starts[condition] + position]

    def state_dict(self) -> dict:
        return {"batches": self.batches, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.batches, self.seed = state["batches"], state["seed"]


def read_table(path: Path, options: TableOptions) -> tuple[Table, dict[str, dict]]:
    """Typed columns of a table file and what each column is (see `parse_columns`)."""
    names, rows = read_cells(path, options)
    return parse_columns(path, names, rows, options.column_types)


def wants_table(path: Path, options: TableOptions) -> bool:
    """Whether a delimited file is read as a table: asked for (`table`, `columns`, `column_types`), a
    suffix other than .csv, or a .csv with a column of text. A numeric .csv stays vectors."""
    if options.table is not None:
        return options.table
    if options.columns or options.column_types or path.suffix.lower() != ".csv":
        return True
    return not is_numeric_table(read_cells(path, options)[1])


def load_table(path: Path, options: TableOptions) -> TableDataset:
    """Reads, types and encodes a table file (see the module docstring); set-up seconds in `info`."""
    from ganforge.data.table_transform import encode, fit_transform

    start = time.perf_counter()
    table, meta = read_table(path, options)
    if len(next(iter(table.values()))) < 2:
        raise GanforgeError(f"{path}: a table needs at least 2 rows")
    transform = fit_transform(table, meta)
    rows, codes = encode(table, transform)
    info = {"setup_seconds": round(time.perf_counter() - start, 3)}
    return TableDataset(str(path), torch.from_numpy(rows), transform, table, torch.from_numpy(codes), info)


def parse_where(conditions: list[str], transform: dict) -> list[tuple[str, str]]:
    """['sex=Female', 'race=Black'] -> [(column, category)], checked against the table's discrete columns.

    The one parser of `--where`: an unknown column, a numeric column or an unseen category is an error.
    """
    columns = {c["name"]: c for c in transform["columns"]}
    result = []
    for condition in conditions:
        name, sep, value = condition.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise GanforgeError(f"--where {condition!r} is not COLUMN=CATEGORY: expected e.g. --where sex=Female")
        if name not in columns:
            raise GanforgeError(f"--where {condition!r}: no column {name!r}: expected one of {', '.join(columns)}")
        column = columns[name]
        if column["type"] not in DISCRETE:
            raise GanforgeError(f"--where {condition!r}: column {name!r} is {column['type']}: conditions take categorical or boolean columns")
        if value not in column["categories"]:
            shown = ", ".join(column["categories"][:12]) + (", ..." if len(column["categories"]) > 12 else "")
            raise GanforgeError(f"--where {condition!r}: {value!r} is not a category of {name!r}: expected one of {shown}")
        earlier = next((v for c, v in result if c == name and v != value), None)
        if earlier is not None:
            raise GanforgeError(f"--where {name}={earlier} and --where {condition!r} contradict: expected one category per column")
        result.append((name, value))
    return result


def format_cell(value, column: dict) -> str:
    """One decoded value as the data file would write it: its missing marker, an integer, an ISO time or a number."""
    if column["type"] in DISCRETE:
        return str(value)
    if value != value:  # NaN: missing
        return column["missing"] or ""
    if column["type"] == "integer":
        return str(int(value))
    if column["type"] == "datetime":
        moment = datetime.fromtimestamp(value, tz=timezone.utc).replace(tzinfo=None)
        return moment.date().isoformat() if column.get("dates") else moment.isoformat()
    return f"{value:.{column['decimals']}f}"


def write_table(path: Path, table: Table, transform: dict) -> None:
    """Writes decoded columns as a .csv with a header, in the file's own formats."""
    columns = transform["columns"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([c["name"] for c in columns])
        for i in range(len(table[columns[0]["name"]])):
            writer.writerow([format_cell(table[c["name"]][i], c) for c in columns])


def read_held_out(path: Path, options: TableOptions, transform: dict) -> Table:
    """Held-out real rows (`test_data`) read like the training file, each column with the training table's type."""
    if not path.is_file():
        raise GanforgeError(f"test_data='{path}': no such file: expected held-out rows with the training table's columns")
    types = {c["name"]: c["type"] for c in transform["columns"]}
    names, rows = read_cells(path, options)
    if names != list(types):
        raise GanforgeError(f"test_data='{path}' has columns {', '.join(names)}: expected the training table's {', '.join(types)}")
    return parse_columns(path, names, rows, types)[0]


def check_target(target: str, transform: dict) -> None:
    """`target` must name a discrete column with at least two categories."""
    columns = {c["name"]: c for c in transform["columns"]}
    discrete = [name for name, c in columns.items() if c["type"] in DISCRETE]
    if target not in columns or columns[target]["type"] not in DISCRETE or len(columns[target]["categories"]) < 2:
        raise GanforgeError(f"target={target!r} is not a categorical column with two or more categories: expected one of {', '.join(discrete)}")
