"""Tables of mixed columns: reading and typing, the invertible transform, training-by-sampling,
conditional sampling with `--where`, and the one-line errors of bad input."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from ganforge.data import load_dataset
from ganforge.data.table import TableOptions, TableSampler, load_table, parse_where, read_table
from ganforge.data.table_transform import decode
from ganforge.errors import GanforgeError
from ganforge.export import load_generator
from ganforge.tabular import TEMPERATURE, TableGenerator, sample_rows
from helpers import tree

PENGUINS = Path(__file__).parents[2] / "shared" / "data" / "penguins" / "penguins.csv"
TINY_TABLE = ["--batch_size", "40", "--pack", "4", "--g_width", "16", "--d_width", "16", "--latent_dim", "8",
              "--device", "cpu", "--quiet", "--log_every", "10", "--checkpoint_every", "20"]


def make_table(path: Path, n: int = 240, seed: int = 0) -> Path:
    """A small table: a two-mode number, an integer, a category with a rare value and missing cells,
    a boolean, a date and a number with missing cells."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["height", "count", "colour", "member", "day", "score"])
        for i in range(n):
            colour = "red" if i % 3 == 0 else "blue" if i % 3 == 1 else "?" if i % 20 == 2 else "green"
            colour = "violet" if i % 40 == 5 else colour
            height = rng.normal(10 if colour == "red" else 50, 1.5)
            writer.writerow([f"{height:.2f}", int(rng.integers(0, 9)), colour, "yes" if i % 2 else "no",
                             f"2024-01-{1 + i % 28:02d}", "NA" if i % 10 == 0 else f"{rng.uniform(0, 1):.3f}"])
    return path


@pytest.fixture
def table_file(tmp_path) -> Path:
    return make_table(tmp_path / "small.csv")


def test_columns_are_typed_and_types_overridable(table_file):
    _, meta = read_table(table_file, TableOptions())
    assert {name: m["type"] for name, m in meta.items()} == {
        "height": "numeric", "count": "integer", "colour": "categorical", "member": "boolean", "day": "datetime", "score": "numeric",
    }
    assert meta["score"]["missing"] == "NA" and meta["colour"]["missing"] == "?" and meta["height"]["decimals"] == 2
    _, meta = read_table(table_file, TableOptions(column_types={"count": "categorical"}))
    assert meta["count"]["type"] == "categorical"


def test_transform_inverts_to_original_units(table_file):
    dataset = load_table(table_file, TableOptions())
    back = decode(dataset.samples.numpy(), dataset.transform)
    for name in ("colour", "member"):
        assert (back[name] == dataset.table[name]).all()
    assert np.array_equal(np.isnan(back["score"]), np.isnan(dataset.table["score"]))  # missing flags survive
    assert np.allclose(back["height"], dataset.table["height"], atol=0.011)
    assert np.array_equal(back["count"], dataset.table["count"]) and np.array_equal(back["day"], dataset.table["day"])
    height = dataset.transform["columns"][0]
    assert len(height["means"]) >= 2  # two modes found
    # Any network output decodes inside the observed range, integers as integers, categories from the observed set.
    noise = np.random.default_rng(0).normal(0, 3, (500, dataset.transform["row_dim"]))
    wild = decode(noise, dataset.transform)
    assert wild["height"].min() >= dataset.table["height"].min() and wild["height"].max() <= dataset.table["height"].max()
    assert np.all(wild["count"] == np.round(wild["count"]))
    assert set(wild["colour"]) <= set(dataset.table["colour"])


def test_a_value_many_rows_hold_is_an_exact_mode(tmp_path):
    # gain: 0 in 85 % of the rows (a capital-gain column), else thousands; level: two values only, some missing.
    rng = np.random.default_rng(0)
    path = tmp_path / "spiky.csv"
    gains = np.where(rng.random(400) < 0.85, 0, rng.integers(2_000, 9_000, 400))
    levels = np.where(np.arange(400) % 25 == 0, "NA", np.where(rng.random(400) < 0.3, "1", "2")).astype(object)
    path.write_text("gain,level,kind\n" + "".join(f"{g},{v},{'ab'[i % 2]}\n" for i, (g, v) in enumerate(zip(gains, levels))))
    dataset = load_table(path, TableOptions())
    gain, level = dataset.transform["columns"][:2]
    assert gain["means"][0] == 0 and gain["stds"][0] == 0 and min(gain["stds"][1:]) > 0  # the zeros' mode, then Gaussians
    assert level["means"] == [1, 2] and level["stds"] == [0, 0]
    back = decode(dataset.samples.numpy(), dataset.transform)
    assert np.array_equal(back["gain"], dataset.table["gain"]) and np.array_equal(np.isnan(back["level"]), np.isnan(dataset.table["level"]))
    assert np.array_equal(back["level"][~np.isnan(back["level"])], dataset.table["level"][~np.isnan(dataset.table["level"])])
    # The zeros' rows encode with offset 0, and their mode decodes to exactly 0 whatever the offset a generator puts out.
    rows = dataset.samples.numpy().copy()
    zeros = dataset.table["gain"] == 0
    assert np.all(rows[zeros, gain["start"]] == 0)
    rows[:, gain["start"]] = np.random.default_rng(1).uniform(-1, 1, len(rows))
    assert np.all(decode(rows, dataset.transform)["gain"][zeros] == 0)


def test_numeric_csv_stays_vectors_unless_asked(tmp_path):
    path = tmp_path / "numbers.csv"
    path.write_text("a,b\n1,2\n3,4.5\n5,6\n")
    assert load_dataset(str(path)).kind == "vectors"
    assert load_dataset(str(path), table=TableOptions(table=True)).kind == "table"


def test_headerless_file_takes_column_names(tmp_path):
    path = tmp_path / "people.data"
    path.write_text("".join(f"{20 + i % 30}, {'F' if i % 3 else 'M'}, {'<=50K' if i % 4 else '>50K'}\n" for i in range(60)))
    dataset = load_dataset(str(path), table=TableOptions(columns=["age", "sex", "income"], header=False))
    assert list(dataset.table) == ["age", "sex", "income"] and set(dataset.table["income"]) == {"<=50K", ">50K"}


@pytest.mark.parametrize(
    "content, message",
    [("a,b\nx,1\ny,2,3\n", "line 3 has 3 cells"), ("a,b\nx,?\ny,NA\n", "missing in every row")],
)
def test_bad_tables_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(GanforgeError, match=message):
        load_dataset(str(path))


def test_where_parser_refuses_unknown_numeric_and_unseen(table_file):
    transform = load_table(table_file, TableOptions()).transform
    assert parse_where(["colour=red", "member = yes"], transform) == [("colour", "red"), ("member", "yes")]
    for condition, message in (("size=3", "no column 'size'"), ("height=10", "is numeric"), ("colour=pink", "not a category"), ("colour", "COLUMN=CATEGORY")):
        with pytest.raises(GanforgeError, match=message):
            parse_where([condition], transform)
    with pytest.raises(GanforgeError, match="contradict"):
        parse_where(["colour=red", "colour=blue"], transform)


def test_sampler_draws_rows_holding_their_condition(table_file):
    dataset = load_table(table_file, TableOptions())
    sampler = TableSampler(dataset, 2000, seed=3)
    pairs = sampler.next()
    n, conditions = len(dataset), dataset.transform["conditions"]
    condition, row = pairs // n, pairs % n
    column = torch.bucketize(condition, torch.tensor(conditions["offsets"]), right=True) - 1
    category = condition - torch.tensor(conditions["offsets"])[column]
    assert torch.equal(dataset.codes[row, column], category)
    # log-frequency sampling: the rare 'violet' (6 of 240 rows) is drawn far more often than its share.
    violet = conditions["offsets"][0] + dataset.transform["columns"][2]["categories"].index("violet")
    share = (condition == violet).float().mean().item()
    assert abs(share - conditions["training"][violet]) < 0.02 and share > 2 * 6 / 240 / 4
    real = dataset.real_batch(pairs[:5])
    assert real.shape == (5, dataset.sample_shape[0]) and torch.equal(real[:, dataset.transform["row_dim"]:].argmax(1), condition[:5])
    again = TableSampler(dataset, 2000, seed=3)
    assert torch.equal(again.next(), pairs)
    again.load_state_dict(sampler.state_dict())
    assert torch.equal(again.next(), sampler.next())


def test_generator_sets_the_conditioned_column(table_file):
    dataset = load_table(table_file, TableOptions())
    transform = dataset.transform
    generator = TableGenerator(6, transform["spans"], transform["conditions"], width=8, depth=1).eval()
    condition = torch.arange(transform["conditions"]["dim"])
    rows = generator.generate(torch.randn(len(condition), 5), condition)
    assert rows.shape == (len(condition), dataset.sample_shape[0])
    table = decode(rows[:, : transform["row_dim"]].detach().numpy(), transform)
    colour = transform["columns"][2]["categories"]
    assert list(table["colour"][: len(colour)]) == colour  # the first conditions are colour's categories, in order


@pytest.mark.parametrize("draw", ["argmax", "gumbel"])
def test_the_argmax_draw_makes_every_pick_of_a_row_a_function_of_the_noise(table_file, draw):
    """argmax: the same noise gives the same row in training (soft) and sampling (one-hot); gumbel draws afresh."""
    transform = load_table(table_file, TableOptions()).transform
    generator = TableGenerator(6, transform["spans"], transform["conditions"], width=8, depth=1, draw=draw)
    noise, condition = torch.randn(64, 5), torch.zeros(64, dtype=torch.long)
    for mode in (generator.train, generator.eval):
        mode()
        torch.manual_seed(1)
        first = generator.generate(noise, condition).detach()
        torch.manual_seed(2)
        assert torch.equal(first, generator.generate(noise, condition).detach()) == (draw == "argmax")
    picks = first[:, : transform["row_dim"]][:, ~generator.is_tanh]
    assert set(picks.unique().tolist()) == {0.0, 1.0}  # sampling gives one-hots with either draw
    scores = []  # the output layer's scores, as the generator computes them
    generator.out.register_forward_hook(lambda module, inputs, output: scores.append(output))
    soft = generator.train().generate(noise, condition)
    conditioned = transform["conditions"]["columns"][0]  # set to the condition, not generated
    column = next(c for c in transform["columns"] if "categories" in c and c["name"] != conditioned)
    start, width = column["start"], len(column["categories"])
    expected = (scores[-1][:, start : start + width] / TEMPERATURE).softmax(1)
    assert torch.allclose(soft[:, start : start + width], expected) == (draw == "argmax")


def test_train_then_sample_where_and_unconditionally(table_file, tmp_path, cli, monkeypatch):
    run = tmp_path / "run"
    result = cli("train", "--data", table_file, "--steps", "40", "--out", run, *TINY_TABLE)
    assert result.code == 0, result.err
    rows = tmp_path / "rows.csv"
    result = cli("sample", run, "--n", "200", "--out", rows, "--where", "colour=violet", "--where", "member=yes")
    assert result.code == 0 and "acceptance rate" in result.err
    written = list(csv.DictReader(open(rows)))
    assert len(written) == 200 and all(r["colour"] == "violet" and r["member"] == "yes" for r in written)
    assert all(r["count"].isdigit() for r in written)  # integers as integers
    assert all(len(r["day"]) == 10 and r["day"].startswith("2024-01-") for r in written)  # dates as dates, in range
    generator = load_generator(run)
    with monkeypatch.context() as patch:  # rejection gives up, with one line, below the least acceptance rate
        patch.setattr("ganforge.tabular.MIN_ACCEPTANCE", 1.0)
        result = cli("sample", run, "--n", "5000", "--out", tmp_path / "y.csv", "--where", "colour=blue", "--where", "member=no")
        assert result.code == 2 and "acceptance rate" in result.err and not (tmp_path / "y.csv").exists()
    first, _ = sample_rows(generator, 300, seed=5)
    second, _ = sample_rows(generator, 300, seed=5)
    assert all(np.array_equal(first[k], second[k], equal_nan=first[k].dtype != object) for k in first)
    assert set(first["colour"]) <= {"red", "blue", "green", "violet", "?"}
    for bad in (["--where", "colour=pink"], ["--where", "height=3"], ["--where", "nope=1"]):
        result = cli("sample", run, "--n", "5", "--out", tmp_path / "x.csv", *bad)
        assert result.code == 2 and result.err.count("\n") == 1 and not (tmp_path / "x.csv").exists()


def test_penguins_trains_and_samples(tmp_path, cli):
    if not PENGUINS.is_file():
        pytest.skip(f"{PENGUINS} is absent (the shared data folder)")
    run = tmp_path / "penguins"
    assert cli("train", "--data", PENGUINS, "--steps", "20", "--out", run, *TINY_TABLE).code == 0
    assert cli("sample", run, "--n", "50", "--out", tmp_path / "p.csv", "--where", "species=Gentoo").code == 0
    assert {r["species"] for r in csv.DictReader(open(tmp_path / "p.csv"))} == {"Gentoo"}


def test_resumed_run_matches_an_uninterrupted_one(table_file, tmp_path, cli):
    from safetensors.torch import load_file

    args = ("--data", table_file, *TINY_TABLE, "--checkpoint_every", "10")  # both runs save at the same steps
    assert cli("train", "--steps", "20", "--out", tmp_path / "straight", *args).code == 0
    assert cli("train", "--steps", "10", "--out", tmp_path / "resumed", *args).code == 0
    assert cli("train", "--steps", "20", "--out", tmp_path / "resumed", *args).code == 0
    straight, resumed = (load_file(tmp_path / name / "generator.safetensors") for name in ("straight", "resumed"))
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_run_does_not_resume_on_another_encoding_of_its_table(table_file, tmp_path, cli, monkeypatch):
    """Same shapes, other numbers: a checkpoint's rows must decode with the transform they were trained on."""
    from ganforge.data import table_transform

    run = tmp_path / "run"
    assert cli("train", "--data", table_file, "--steps", "10", "--out", run, *TINY_TABLE, "--checkpoint_every", "10").code == 0
    fit = table_transform.fit_transform

    def shifted(table, meta):
        transform = fit(table, meta)
        transform["columns"][0]["means"][0] += 1.0  # height's first mode moves; every width stays
        return transform

    monkeypatch.setattr(table_transform, "fit_transform", shifted)
    before = tree(run)
    result = cli("train", "--data", table_file, "--steps", "20", "--out", run, *TINY_TABLE, "--checkpoint_every", "10")
    assert result.code == 2 and "encodes the table's columns otherwise" in result.err and result.err.count("\n") == 1
    assert tree(run) == before  # the run folder, byte for byte


def test_a_table_run_from_before_the_argmax_draw_resumes_with_gumbel_draws(table_file, tmp_path, cli):
    """A config.json and generator.json without the draw are an older run's: it goes on drawing as it began."""
    run = tmp_path / "old"
    assert cli("train", "--data", table_file, "--steps", "10", "--out", run, *TINY_TABLE, "--category_draw", "gumbel").code == 0
    config, exported = (json.loads((run / name).read_text()) for name in ("config.json", "generator.json"))
    assert config.pop("category_draw") == exported["config"].pop("draw") == "gumbel"
    (run / "config.json").write_text(json.dumps(config))
    (run / "generator.json").write_text(json.dumps(exported))
    assert load_generator(run).network.draw == "gumbel"
    result = cli("train", "--data", table_file, "--steps", "20", "--out", run, *TINY_TABLE)
    assert result.code == 0 and "from step 10" in result.err, result.err
    assert json.loads((run / "generator.json").read_text())["config"]["draw"] == "gumbel"
    assert cli("train", "--data", table_file, "--steps", "10", "--out", tmp_path / "new", *TINY_TABLE).code == 0
    assert json.loads((tmp_path / "new" / "generator.json").read_text())["config"]["draw"] == "argmax"


@pytest.mark.parametrize("draw", ["argmax", "gumbel"])
def test_how_often_a_table_run_saves_does_not_change_what_it_learns(table_file, tmp_path, cli, draw):
    """Exporting recalibrates BatchNorm through the generator, which draws noise: from a fork of the RNG."""
    from safetensors.torch import load_file

    for name, every in (("rare", "20"), ("often", "5")):
        args = ("--data", table_file, "--steps", "20", "--out", tmp_path / name, *TINY_TABLE, "--checkpoint_every", every)
        assert cli("train", *args, "--category_draw", draw).code == 0
    rare, often = (load_file(tmp_path / name / "generator.safetensors") for name in ("rare", "often"))
    assert rare.keys() == often.keys() and all(torch.equal(rare[k], often[k]) for k in rare)


def test_a_parquet_table_reads_as_the_same_table_in_csv(tmp_path):
    """Parquet's own types map onto the CSV rules: int64 integers, float numbers, bool, timestamps, nulls missing."""
    pa = pytest.importorskip("pyarrow")
    import datetime as dt

    import pyarrow.parquet as pq

    rows = 60
    data = {
        "height": [10.5 + i % 7 if i % 11 else None for i in range(rows)],
        "count": [i % 9 for i in range(rows)],
        "colour": ["red" if i % 3 else "blue" for i in range(rows)],
        "member": [bool(i % 2) for i in range(rows)],
        "day": [dt.datetime(2024, 1, 1 + i % 28) for i in range(rows)],
    }
    pq.write_table(pa.table(data), tmp_path / "t.parquet")
    table, meta = read_table(tmp_path / "t.parquet", TableOptions())
    assert {name: meta[name]["type"] for name in data} == {
        "height": "numeric", "count": "integer", "colour": "categorical", "member": "boolean", "day": "datetime"}
    assert np.isnan(table["height"][0]) and table["height"][1] == 11.5 and table["count"][5] == 5
    assert set(table["colour"]) == {"red", "blue"}
    assert load_dataset(str(tmp_path / "t.parquet")).kind == "table"
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(GanforgeError, match=r"bad.parquet: cannot read table \("):
        read_table(tmp_path / "bad.parquet", TableOptions())


def test_the_adult_benchmark_counts_contradictory_rows_and_rows_of_rare_capital(monkeypatch):
    from helpers import load_benchmark

    bench = load_benchmark("tabular", monkeypatch)
    rows = {
        "relationship": ["Husband", "Husband", "Wife", "Wife", "Own-child", "Unmarried"],
        "sex": ["Male", "Female", "Female", "Female", "Female", "Male"],
        "marital-status": ["Married-civ-spouse", "Married-civ-spouse", "Never-married", "Married-AF-spouse", "Never-married", "Divorced"],
    }
    assert bench.contradictory_share(rows) == pytest.approx(2 / 6)  # a female husband, an unmarried wife
    money = {"capital-gain": [0, 7000, 15024, 6999, 0], "capital-loss": [0, 0, 1902, 0, 0],
             "income": ["<=50K", ">50K", "<=50K", ">50K", "<=50K"]}
    assert bench.capital_figures(money) == {"high_gain_rows": 2 / 5, "high_gain_income": 1 / 2, "capital_loss_rows": 1 / 5}


def test_the_adult_benchmark_fails_when_its_training_run_fails(monkeypatch, tmp_path):
    """The run is started through benchmarks/_common.training_run (stopped with the script); its exit status still counts."""
    from helpers import load_benchmark

    bench = load_benchmark("tabular", monkeypatch)
    with pytest.raises(subprocess.CalledProcessError):
        bench.fit_ganforge(0, tmp_path / "run", tmp_path / "test.csv", 10, ["loss=not-a-loss"])
