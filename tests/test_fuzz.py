"""Fuzzing the parsers: every input is either accepted or answered with a GanforgeError.

Property, for the config parser (`make_config`, `parse_overrides`, `load_yaml`) and every
data loader (.npy, .csv, MNIST IDX raw and gzipped, image folders): given arbitrary input,
the call returns a valid result or raises `GanforgeError` (which the command line turns into
one line and exit code 2). Any other exception would reach the user as a traceback; a call
that runs longer than `HARD_LIMIT_S` counts as a hang.

The runs are derandomized and bounded (`max_examples`), so the suite stays deterministic and
fast. For a deeper search: `GANFORGE_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py` (random
seeds, more examples).

Crashes found by fuzzing are kept below as explicit examples, so they stay fixed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import os
import re
import shutil
import signal
import struct
import tempfile
import time
import typing
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from ganforge.config import MAXIMA, Config, field_names, load_yaml, make_config, parse_overrides
from ganforge.data import load_dataset
from ganforge.errors import GanforgeError

_EXAMPLES = int(os.environ.get("GANFORGE_FUZZ_EXAMPLES", "0"))
HARD_LIMIT_S = 20


def fuzz(max_examples: int):
    """Bounded, derandomized settings (random and larger with GANFORGE_FUZZ_EXAMPLES)."""
    return settings(
        max_examples=_EXAMPLES or max_examples,
        derandomize=not _EXAMPLES,
        database=None,
        deadline=None,  # timing on a shared 2-core machine is noisy; `hard_limit` catches hangs
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


class Hang(BaseException):
    """A call ran past HARD_LIMIT_S: a BaseException, so no `except Exception` in the code under test can swallow it."""


@contextlib.contextmanager
def hard_limit(seconds: float = HARD_LIMIT_S):
    def expire(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def answered(call, known: tuple[type[BaseException], ...] = ()):
    """Runs call(); returns its result, or None when it raised GanforgeError (or one of `known`)."""
    with hard_limit(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy/Pillow warnings are not failures
        try:
            return call()
        except GanforgeError as err:
            assert str(err).strip(), "an error must say what is wrong"
            return None
        except known:
            return None


# --- config ---------------------------------------------------------------------------------

_TYPES = typing.get_type_hints(Config)

scalar_strings = st.sampled_from([
    "", " ", "0", "1", "-1", "7", " 7 ", "1e3", "1e400", "-1e400", "nan", "inf", "-inf", "0x10", "1_000", "１２",
    "none", "None", "null", "auto", "true", "false", "yes", "on", "0.5", "-0.0", "1e-320", "9" * 40,
    "hinge", "normal", "cpu", "cuda:0", "cuda:x", "mlp", "conv", "batch", "rollback", "skip", "ring8",
])
any_value = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1),
    st.text(max_size=12), scalar_strings, st.binary(max_size=6),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
config_layers = st.dictionaries(st.sampled_from(field_names()), any_value, max_size=8)


def assert_well_typed(config: Config) -> None:
    """Every field holds a value of its declared type (bool is not accepted as an int)."""
    for name, kind in _TYPES.items():
        value = getattr(config, name)
        allowed = tuple(t for t in typing.get_args(kind) if t is not type(None)) or (kind,)
        if value is None:
            assert type(None) in typing.get_args(kind), (name, value)
        else:
            assert type(value) in allowed, (name, value, kind)
            if type(value) is float:
                assert np.isfinite(value), (name, value)


@fuzz(400)
@given(layers=st.lists(config_layers, max_size=3))
@example(layers=[{"steps": "1e400"}])
@example(layers=[{"seed": float("nan")}, {"lr_g": "inf"}])
@example(layers=[{"batch_size": 6, "pack": 0}])
def test_make_config_accepts_or_answers_any_values(layers):
    """Invariant: make_config of arbitrary values for known keys returns a well-typed, valid Config that a
    saved config.json reproduces, or raises GanforgeError naming the key."""
    config = answered(lambda: make_config(*layers))
    if config is not None:
        assert_well_typed(config)
        assert make_config(dataclasses.asdict(config)) == config, "a saved config.json must load back to the same config"


@fuzz(200)
@given(layer=st.dictionaries(st.one_of(st.text(max_size=12), st.integers(), st.none()), any_value, max_size=4))
def test_make_config_answers_unknown_keys(layer):
    """Invariant: a key that is not a config field is refused with GanforgeError, never a KeyError/TypeError."""
    config = answered(lambda: make_config(layer))
    if config is not None:
        assert set(layer) <= set(field_names())


override_strings = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda k, sep, v: f"{k}{sep}{v}",
        st.sampled_from(field_names()), st.sampled_from(["=", " = ", "==", ":"]), st.one_of(st.text(max_size=10), scalar_strings),
    ),
    st.builds(lambda k, v: f"--{k.replace('_', '-')}={v}", st.sampled_from(field_names()), scalar_strings),
)


@fuzz(300)
@given(pairs=st.lists(override_strings, max_size=5))
def test_parse_overrides_accepts_or_answers_any_strings(pairs):
    """Invariant: parse_overrides of arbitrary strings gives {known key: string} or GanforgeError; feeding the
    result to make_config gives a valid Config or GanforgeError."""
    parsed = answered(lambda: parse_overrides(pairs))
    if parsed is not None:
        assert set(parsed) <= set(field_names())
        assert all(isinstance(v, str) for v in parsed.values())
        config = answered(lambda: make_config(parsed))
        if config is not None:
            assert_well_typed(config)


CODE_RAN = Path(tempfile.gettempdir()) / "ganforge-fuzz-yaml-tag-ran-code"  # what the unsafe YAML example would create

yaml_scalars = st.one_of(
    scalar_strings, st.sampled_from(["[1, 2]", "{a: 1}", "~", ".nan", ".inf", "-.inf", "2001-01-01", "!!binary aGk=", "0o17",
                                     "!!python/object:os.system ls", "&a 3", "*a", "'quoted'", '"esc\\u0000"', "|\n  block"]),
    st.text(max_size=10),
)
yaml_texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.builds(lambda k, v: f"{k}: {v}", st.sampled_from([*field_names(), "stpes", "world_size", "1", "[x]"]), yaml_scalars),
             max_size=6).map("\n".join),
)


@fuzz(300)
@given(text=yaml_texts, encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]))
@example(text="? [a]\n: 1\n", encoding="utf-8")
@example(text=f"steps: !!python/object/apply:os.mkdir ['{CODE_RAN}']\n", encoding="utf-8")
@example(text="\x00\x01", encoding="utf-8")
def test_load_yaml_accepts_or_answers_any_text(text, encoding):
    """Invariant: a config file of arbitrary text gives a mapping of known keys (or GanforgeError), and
    make_config of that mapping a valid Config (or GanforgeError); YAML tags never run code."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        try:
            path.write_bytes(text.encode(encoding))
        except UnicodeEncodeError:
            assume(False)
        loaded = answered(lambda: load_yaml(path))
    assert not CODE_RAN.exists(), "a YAML tag ran code"
    if loaded is not None:
        assert isinstance(loaded, dict) and set(loaded) <= set(field_names())
        config = answered(lambda: make_config(loaded))
        if config is not None:
            assert_well_typed(config)


def test_deeply_nested_yaml_is_a_clean_error(tmp_path):
    """Minimal reproduction: a 2,000-deep flow list in a config file."""
    (tmp_path / "deep.yaml").write_text("steps: " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(GanforgeError):
        load_yaml(tmp_path / "deep.yaml")


# --- vectors: .npy and .csv -----------------------------------------------------------------


def npy_bytes(header: str, body: bytes, version: int = 1) -> bytes:
    raw = header.encode("latin-1")
    raw += b" " * ((-(len(raw) + 10 + 1)) % 64) + b"\n"
    size = struct.pack("<H", len(raw)) if version == 1 else struct.pack("<I", len(raw))
    return b"\x93NUMPY" + bytes([version, 0]) + size + raw + body


descrs = st.sampled_from(["<f8", "<f4", ">f8", "<f2", "<i8", "|u1", "|b1", "<c8", "|V8", "<M8[D]", "<U3", "|S2", "|O", "[('a', '<f8')]", "<q", "bogus"])
shapes = st.one_of(
    st.lists(st.integers(0, 6), max_size=3).map(tuple),
    st.lists(st.one_of(st.integers(0, 2**20), st.integers(-5, 2**70)), min_size=1, max_size=3).map(tuple),
)
npy_files = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda d, f, s, body, v: npy_bytes(f"{{'descr': {d!r}, 'fortran_order': {f}, 'shape': {s!r}, }}", body, v),
        descrs, st.booleans(), shapes, st.binary(max_size=200), st.sampled_from([1, 2]),
    ),
    st.builds(lambda text, body: npy_bytes(text, body), st.text(st.characters(max_codepoint=255), max_size=80), st.binary(max_size=40)),
)


@fuzz(400)
@given(content=npy_files)
@example(content=b"")
@example(content=npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }", b"\0" * 48))
def test_npy_loader_accepts_or_answers_any_bytes(content):
    """Invariant: any bytes in a .npy file give a vector Dataset (n >= 2 rows of float32) or a GanforgeError."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.npy"
        path.write_bytes(content)
        data = answered(lambda: load_dataset(str(path)))
    if data is not None:
        assert data.kind == "vectors" and data.samples.dtype == torch.float32
        assert data.samples.dim() == 2 and data.samples.shape[0] >= 2


finite32 = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False)
cells = st.one_of(finite32, st.integers(-(10**6), 10**6), st.sampled_from([np.nan, np.inf, -np.inf]))


@fuzz(200)
@given(rows=st.integers(1, 6), columns=st.integers(1, 4), data=st.data(), dtype=st.sampled_from([np.float64, np.float32, np.int64]))
def test_npy_tables_load_exactly_or_name_the_bad_row(rows, columns, data, dtype):
    """Invariant: a numeric table within float32 range loads exactly (as float32), and a table holding NaN/Inf
    is refused with an error naming the first bad row; there is never a non-finite sample."""
    values = np.array(data.draw(st.lists(st.lists(cells, min_size=columns, max_size=columns), min_size=rows, max_size=rows)), dtype=np.float64)
    if dtype is np.int64:
        values = np.nan_to_num(values, nan=1, posinf=2, neginf=3).clip(-(2**40), 2**40).round()
    table = values.astype(dtype)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.npy"
        np.save(path, table)
        loaded = answered(lambda: load_dataset(str(path)))
    bad_rows = np.flatnonzero(~np.isfinite(table.astype(np.float64)).all(axis=1))
    if loaded is None:
        assert rows < 2 or len(bad_rows), "a finite table of >= 2 rows must load"
        return
    assert not len(bad_rows), "a table with NaN/Inf must be refused"
    assert torch.isfinite(loaded.samples).all()
    np.testing.assert_array_equal(loaded.samples.numpy(), table.astype(np.float32))


csv_cells = st.one_of(
    finite32.map(repr), st.integers(-999, 999).map(str),
    st.sampled_from(["", " ", "NA", "n/a", "nan", "inf", "-inf", "1e999", "abc", '"1"', '"a,b"', "1;2", "\t3", "0x1f", "1_0", "١"]),
    st.text(max_size=5),
)
csv_texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.lists(csv_cells, min_size=1, max_size=4).map(",".join), max_size=8).map("\n".join),
)


@fuzz(400)
@given(text=csv_texts, encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]), newline=st.sampled_from(["\n", "\r\n", "\r"]))
@example(text="a,b\n1,\n2,3\n", encoding="utf-8", newline="\n")
@example(text="x\x00y,1\n1,2\n", encoding="utf-8", newline="\n")
def test_csv_loader_accepts_or_answers_any_text(text, encoding, newline):
    """Invariant: any text in a .csv file gives a vector Dataset of finite float32 rows (n >= 2), a table (a column
    holds text) of finite float32 rows, or a GanforgeError (missing values, ragged rows, NaN/Inf, undecodable bytes)."""
    try:
        raw = text.replace("\n", newline).encode(encoding)
    except UnicodeEncodeError:
        assume(False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.csv"
        path.write_bytes(raw)
        data = answered(lambda: load_dataset(str(path)))
    if data is not None and data.kind == "table":
        assert data.samples.dtype == torch.float32 and len(data) >= 2 and torch.isfinite(data.samples).all()
    elif data is not None:
        assert data.kind == "vectors" and data.samples.dtype == torch.float32 and data.samples.shape[0] >= 2
        assert torch.isfinite(data.samples).all() or beyond_float32(text), "non-finite samples"


def beyond_float32(text: str) -> bool:
    """Whether the text holds a finite number too large for float32 (the known bug pinned below)."""
    numbers = []
    for token in re.split(r"[,\s\"]+", text):
        try:
            numbers.append(float(token))
        except ValueError:
            continue
    return any(np.isfinite(x) and abs(x) > np.finfo(np.float32).max for x in numbers)


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_values_beyond_float32_range_are_refused(tmp_path, suffix):
    """Minimal reproduction: a table with one value 1e39 loads, and its samples hold Inf (training then skips or diverges)."""
    table = np.ones((4, 2))
    table[1, 0] = 1e39
    path = tmp_path / f"table{suffix}"
    np.save(path, table) if suffix == ".npy" else np.savetxt(path, table, delimiter=",")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            data = load_dataset(str(path))
        except GanforgeError:
            return
    assert torch.isfinite(data.samples).all(), "samples hold Inf"


@pytest.mark.parametrize("header", [
    pytest.param("{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000000,), }", id="huge_shape"),
    pytest.param("{'descr': '<f8', 'fortran_order': False, 'shape': (18446744073709551616,), }", id="dimension_beyond_int64"),
    pytest.param("{'descr': '<f8', 'fortran_order': False, 'shape': (", id="unbalanced_bracket"),
])
def test_crafted_npy_header_is_a_clean_error(tmp_path, header):
    """Minimal reproductions: a few-byte .npy file whose header numpy cannot use must give GanforgeError."""
    path = tmp_path / "crafted.npy"
    path.write_bytes(npy_bytes(header, b"\0" * 64))
    with pytest.raises(GanforgeError):
        load_dataset(str(path))


# --- MNIST IDX ------------------------------------------------------------------------------


def idx_bytes(dims: list[int], body: bytes, dtype: int = 0x08) -> bytes:
    return bytes([0, 0, dtype, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + body


def exact_idx(dims: list[int], fill: int) -> bytes:
    return idx_bytes(dims, bytes([fill % 256]) * int(np.prod(dims, dtype=np.int64)))


idx_files = st.one_of(
    st.binary(max_size=200),
    st.builds(idx_bytes, st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=4), st.binary(max_size=100), st.sampled_from([0x08, 0x08, 0x09, 0x0D])),
    st.builds(exact_idx, st.lists(st.integers(0, 6), min_size=1, max_size=4), st.integers(0, 255)),
    st.builds(lambda dims, cut: exact_idx(dims, 7)[:cut], st.lists(st.integers(1, 5), min_size=3, max_size=3), st.integers(0, 120)),
)


@fuzz(300)
@given(images=idx_files, labels=st.one_of(st.none(), idx_files), compress=st.sampled_from(["raw", "gz", "gz_cut", "gz_flip"]))
@example(images=exact_idx([3, 4, 4], 9), labels=exact_idx([2], 1), compress="raw")
@example(images=exact_idx([0, 28, 28], 0), labels=None, compress="gz")
def test_mnist_loader_accepts_or_answers_any_bytes(images, labels, compress):
    """Invariant: any bytes in MNIST IDX files (raw, gzipped, cut or corrupted gzip) give an image Dataset of uint8
    (n, 1, h, w) or a GanforgeError."""
    def encode(raw: bytes) -> bytes:
        if compress == "raw":
            return raw
        packed = gzip.compress(raw, mtime=0)
        if compress == "gz_cut":
            return packed[: len(packed) // 2]
        if compress == "gz_flip":
            middle = len(packed) // 2
            return packed[:middle] + bytes([packed[middle] ^ 0x55]) + packed[middle + 1:]
        return packed

    suffix = "" if compress == "raw" else ".gz"
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / f"train-images-idx3-ubyte{suffix}").write_bytes(encode(images))
        if labels is not None:
            (Path(folder) / f"train-labels-idx1-ubyte{suffix}").write_bytes(encode(labels))
        data = answered(lambda: load_dataset(f"mnist:{folder}"))
    if data is not None:
        assert data.kind == "images" and data.samples.dtype == torch.uint8 and data.samples.dim() == 4
        assert data.samples.shape[1] == 1
        assert data.labels is None or data.labels.shape == (data.samples.shape[0],)


def test_idx_header_whose_size_overflows_is_a_clean_error(tmp_path):
    """Minimal reproduction: an image header (2**22, 2**21, 2**21) and no pixels: np.prod wraps to 0 bytes."""
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes([2**22, 2**21, 2**21], b""))
    with pytest.raises(GanforgeError):
        load_dataset(f"mnist:{tmp_path}")


# --- image folders --------------------------------------------------------------------------


def _seed_images() -> list[tuple[str, bytes]]:
    """Small valid files of many formats and modes, the starting points of the mutations."""
    pixels = (np.arange(8 * 8 * 3).reshape(8, 8, 3) * 7 % 256).astype(np.uint8)
    rgb = Image.fromarray(pixels, "RGB")
    images = {
        ("PNG", ".png"): [rgb, rgb.convert("L"), rgb.convert("P"), rgb.convert("LA"), rgb.convert("RGBA"),
                          Image.fromarray(pixels[..., 0].astype(np.uint16) * 257), rgb.convert("1")],
        ("JPEG", ".jpg"): [rgb, rgb.convert("L"), rgb.convert("CMYK")],
        ("GIF", ".gif"): [rgb.convert("P")],
        ("BMP", ".bmp"): [rgb, rgb.convert("1"), rgb.convert("P")],
        ("TIFF", ".tif"): [rgb, Image.fromarray(pixels[..., 0].astype(np.float32)), rgb.convert("CMYK"),
                           Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)],
        ("WEBP", ".webp"): [rgb],
        ("PPM", ".ppm"): [rgb],
        ("PPM", ".pgm"): [rgb.convert("L")],
    }
    seeds = []
    for (fmt, ext), variants in images.items():
        for image in variants:
            buffer = io.BytesIO()
            image.save(buffer, format=fmt)
            seeds.append((ext, buffer.getvalue()))
    return seeds


SEED_IMAGES = _seed_images()


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    """(extension, bytes): a valid image with up to 4 byte-level mutations, or random bytes behind a format's magic."""
    if draw(st.integers(0, 9)) == 0:
        ext = draw(st.sampled_from(sorted({e for e, _ in SEED_IMAGES})))
        magic = draw(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"P5\n", b"P6\n", b"II*\x00", b"MM\x00*", b"\xff\xd8\xff", b"RIFF", b""]))
        return ext, magic + draw(st.binary(max_size=200))
    ext, content = draw(st.sampled_from(SEED_IMAGES))
    data = bytearray(content)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "set", "word", "cut", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "word" and len(data) > 4:
            data[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x01\x00\x00", b"\x00\x00\x10\x00"]))
        elif kind == "cut":
            data = data[:at]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return ext, bytes(data)


@fuzz(250)
@given(file=image_files(), on_bad_image=st.sampled_from(["error", "skip"]), channels=st.sampled_from([None, 1, 3]))
def test_image_folder_loader_accepts_or_answers_any_file(file, on_bad_image, channels):
    """Invariant: a folder holding one good image and one fuzzed file loads both, or skips the fuzzed one (and
    lists it) with on_bad_image=skip, or raises GanforgeError; the samples are uint8 (n, c, 8, 8).

    Pillow's pixel limit is lowered for the test (as a memory bound), so a header that claims a huge
    size hits its DecompressionBombError check early, which must be answered like any bad file.
    """
    ext, content = file
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 200_000
    try:
        with tempfile.TemporaryDirectory() as folder:
            Image.fromarray(np.full((8, 8, 3), 90, np.uint8), "RGB").save(Path(folder) / "good.png")
            fuzzed = Path(folder) / f"fuzzed{ext}"
            fuzzed.write_bytes(content)
            data = answered(lambda: load_dataset(folder, image_size=8, channels=channels, on_bad_image=on_bad_image))
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if data is not None:
        assert data.kind == "images" and data.samples.dtype == torch.uint8
        assert data.samples.shape[1:] == ((channels or data.samples.shape[1]), 8, 8) and data.samples.shape[1] in (1, 3)
        skipped = data.info.get("skipped_files", [])
        assert len(data) + len(skipped) == 2
        assert skipped in ([], [str(fuzzed)])
        assert on_bad_image == "skip" or not skipped


@pytest.mark.parametrize("on_bad_image", ["error", "skip"])
def test_image_claiming_a_huge_size_is_a_clean_error(tmp_path, on_bad_image):
    """Minimal reproduction: a 30-byte PGM whose header claims 30000 x 30000 pixels, beside a good image."""
    Image.new("L", (8, 8), 5).save(tmp_path / "good.png")
    (tmp_path / "bomb.pgm").write_bytes(b"P5\n30000 30000\n255\n" + b"\0" * 16)
    try:
        data = load_dataset(str(tmp_path), on_bad_image=on_bad_image)
    except GanforgeError as err:
        assert on_bad_image == "error" and "bomb.pgm" in str(err)
        return
    assert on_bad_image == "skip" and data.info["skipped_files"] == [str(tmp_path / "bomb.pgm")]


def test_image_with_an_extreme_aspect_ratio_loads(tmp_path):
    """Minimal reproduction: a valid 1 x 20,000,000 grey PNG (about 40 kB) in a folder: `_square` resizes its short
    side to 64 px first, asking for a 64 x 1,280,000,000 image."""
    Image.new("L", (1, 20_000_000), 128).save(tmp_path / "tall.png")
    data = load_dataset(str(tmp_path), image_size=64)
    assert data.samples.shape == (1, 1, 64, 64)


# --- the exported generator: generator.json and the weights file ------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.integers(-3, 40), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=8), st.sampled_from(["normal", "uniform", "affine", "image", "MLPGenerator", "ConvGenerator", "batch", "none"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
SPEC_PATHS = [
    ("class",), ("config",), ("noise",), ("transform",), ("sample_shape",), ("step",),
    ("config", "latent_dim"), ("config", "data_shape"), ("config", "width"), ("config", "depth"), ("config", "norm"), ("config", "output"),
    ("noise", "latent_dim"), ("noise", "distribution"), ("transform", "kind"), ("transform", "shift"), ("transform", "scale"),
]


def _exported(folder: Path, sealed: bool) -> dict:
    """A small MLP generator for 2-D vectors exported into `folder` (sealed, or as older versions wrote it); its spec."""
    from safetensors.torch import load_file, save

    from ganforge.export import export_generator
    from ganforge.nets import MLPGenerator

    torch.manual_seed(0)
    network = MLPGenerator(2, [2], 8, 1, "none", "linear")
    spec = {"class": "MLPGenerator", "config": network.config, "noise": {"latent_dim": 2, "distribution": "normal"},
            "transform": {"kind": "affine", "shift": [0.0, 1.0], "scale": [1.0, 2.0]}, "sample_shape": [2], "step": 3}
    export_generator(folder, network, spec)
    if not sealed:
        (folder / "generator.safetensors").write_bytes(save(load_file(folder / "generator.safetensors")))
    return json.loads((folder / "generator.json").read_text())


def _set(spec: dict, path: tuple[str, ...], value) -> None:
    target = spec
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            return
        target = target[key]
    target[path[-1]] = value


@fuzz(300)
@given(changes=st.lists(st.tuples(st.sampled_from(SPEC_PATHS), json_values), min_size=1, max_size=3))
@example(changes=[(("sample_shape",), [-3])])
@example(changes=[(("noise", "latent_dim"), 5)])
@example(changes=[(("transform", "shift"), [0.0])])
@example(changes=[(("config", "width"), 2**40)])
def test_load_generator_accepts_or_answers_any_generator_json(changes):
    """Invariant: an export without a sealed spec (as older versions wrote) whose generator.json fields are
    arbitrary JSON either loads and samples finite values of sample_shape, or is answered by GanforgeError."""
    from ganforge.export import load_generator

    with tempfile.TemporaryDirectory() as folder:
        spec = _exported(Path(folder), sealed=False)
        for path, value in changes:
            _set(spec, path, value)
        (Path(folder) / "generator.json").write_text(json.dumps(spec))
        generator = answered(lambda: load_generator(folder))
        if generator is not None:
            samples = generator.sample(3)
            assert list(samples.shape[1:]) == spec["sample_shape"] and torch.isfinite(samples).all()


@fuzz(200)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=3), cut=st.integers(0, 10**6))
def test_a_changed_or_cut_weights_file_is_caught(flips, cut):
    """Invariant: any changed byte or truncation of a sealed generator.safetensors is a GanforgeError, or (a byte
    of the header's padding, which carries no value) loads the very same weights."""
    from ganforge.export import load_generator

    with tempfile.TemporaryDirectory() as folder:
        _exported(Path(folder), sealed=True)
        path = Path(folder) / "generator.safetensors"
        original = load_generator(folder).state_dict()
        raw = bytearray(path.read_bytes())
        for position, mask in flips:
            raw[position % len(raw)] ^= mask
        path.write_bytes(bytes(raw[: len(raw) - cut % 4] if cut % 3 == 0 else raw))
        generator = answered(lambda: load_generator(folder))
        if generator is not None:
            assert all(torch.equal(original[k], v) for k, v in generator.state_dict().items())


# --- the resume path: config.json, metrics.jsonl, checkpoints -------------------------------


@pytest.fixture(scope="module")
def resumable(tmp_path_factory):
    """A finished 20-step ring8 run (checkpoints at 10 and 20), its resolved config and a Trainer of that config."""
    from ganforge.cli import main
    from ganforge.config import resolve
    from ganforge.training.state import Trainer
    from helpers import ring8_args

    run = tmp_path_factory.mktemp("fuzz") / "run"
    assert main(ring8_args(run, 20)) == 0
    config = make_config(load_yaml(run / "config.json"))  # a saved config.json is a valid config file
    dataset = load_dataset("ring8")
    config = resolve(config, dataset.kind, dataset.sample_shape, "ring8")
    return run, config, Trainer(config, dataset, torch.device("cpu"), say=lambda m: None)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _checkpoint_damage(draw, path: Path) -> None:
    from ganforge.checkpoint import load_checkpoint
    from helpers import write_sealed

    kind = draw(st.sampled_from(["flip", "cut", "forge"]))
    raw = bytearray(path.read_bytes())
    if kind == "flip":
        position = draw(st.integers(0, len(raw) - 1))
        raw[position] ^= draw(st.integers(1, 255))
        path.write_bytes(bytes(raw))
    elif kind == "cut":
        path.write_bytes(bytes(raw[: draw(st.integers(0, len(raw) - 1))]))
    else:
        state = load_checkpoint(path)
        key = draw(st.sampled_from(["step", "config", "generator", "discriminator", "ema", "g_optimizer", "sampler", "seconds", "noise"]))
        state[key] = draw(st.one_of(json_values, st.just({}), st.builds(torch.zeros, st.integers(0, 3))))
        write_sealed(path, state)


@st.composite
def run_damage(draw):
    """A function that damages a copy of a run folder in one of the ways a resume must survive or refuse."""
    target = draw(st.sampled_from(["config", "metrics", "checkpoint", "checkpoint_name"]))

    def damage(run: Path) -> None:
        if target == "config":
            text = draw(st.one_of(st.text(max_size=40), json_values.map(json.dumps)))
            (run / "config.json").write_text(text)
        elif target == "metrics":
            lines = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
            index = draw(st.integers(0, len(lines) - 1))
            lines[index] = draw(st.one_of(st.binary(max_size=20), json_values.map(lambda v: json.dumps(v).encode() + b"\n")))
            (run / "metrics.jsonl").write_bytes(b"".join(lines))
        elif target == "checkpoint":
            _checkpoint_damage(draw, run / "checkpoints" / draw(st.sampled_from(["checkpoint-00000010.pt", "checkpoint-00000020.pt"])))
        else:
            step = draw(st.integers(0, 99_999_999))
            (run / "checkpoints" / "checkpoint-00000020.pt").rename(run / "checkpoints" / f"checkpoint-{step:08d}.pt")

    return damage


@fuzz(60)
@given(damage=run_damage(), steps=st.sampled_from([20, 40]))
def test_a_resume_of_a_damaged_run_goes_on_or_changes_nothing(resumable, damage, steps):
    """Invariant (validate, then commit): `rundir.prepare` on a run folder with a damaged config.json,
    metrics.jsonl or checkpoint either returns a checkpoint the trainer loads, or raises GanforgeError with
    every file of the folder byte-identical."""
    from ganforge import rundir

    base, config, trainer = resumable
    config = dataclasses.replace(config, steps=steps)
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        shutil.copytree(base, run)
        damage(run)
        before = _tree(run)
        try:
            with hard_limit(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = rundir.prepare(run, config, False, lambda m: None, {}, trainer)
        except GanforgeError:
            assert _tree(run) == before, "a refused resume changed the run folder"
            return
    assert state is not None, "a run with metrics past its first checkpoint restarted in place"
    trainer.load_state_dict(state, say=lambda m: None)
    assert trainer.step == state["step"]


# --- the command line's numeric flags ---------------------------------------------------------

INTEGER_KEYS = [k for k in MAXIMA if k != "d_mbstd"]
numeric_text = st.one_of(
    st.integers(-(10**30), 10**30).map(str), st.integers(-3, 2000).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text("0123456789e.-+", max_size=400), scalar_strings,
)


@fuzz(300)
@given(key=st.sampled_from(INTEGER_KEYS), value=numeric_text)
def test_every_integer_flag_is_bounded_or_answered(key, value):
    """Invariant: any text for an integer key gives a value within [0 or 1, MAXIMA[key]] or a GanforgeError of one
    line that names the key and never echoes more than a bounded part of the input."""
    config = answered(lambda: make_config({key: value}))
    if config is not None:
        assert getattr(config, key) is None or 0 <= getattr(config, key) <= MAXIMA[key]
        return
    try:
        make_config({key: value})
    except GanforgeError as err:
        message = str(err)
        assert message.startswith(f"{key}=") and len(message) < 300 and "\n" not in message, message


@fuzz(60)
@given(command=st.sampled_from(["sample", "eval"]), flag=st.sampled_from(["--n", "--seed"]),
       value=st.one_of(st.integers(-(10**20), -1), st.integers(10**7 + 1, 10**30), st.integers(0, 2)).map(str))
def test_sample_and_eval_numeric_flags_are_bounded_or_answered(resumable, command, flag, value):
    """Invariant: `sample` and `eval` with any --n or --seed either run (small counts) or exit 2 with one line."""
    from ganforge.cli import main

    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        shutil.copytree(resumable[0], run)
        out = ["--out", str(Path(folder) / "x.npy")] if command == "sample" else ["--no-cache", "--metrics", "modes"]
        extra = [] if flag == "--n" else ["--n", "8"]
        stderr = io.StringIO()
        with hard_limit(), contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main([command, str(run), flag, value, *extra, *out])
    err = stderr.getvalue().strip().splitlines()
    assert code in (0, 2), err
    if code == 2:
        assert len(err) == 1 and err[0].startswith("ganforge: error: ") and len(err[0]) < 300, err


def test_fuzz_harness_catches_crashes_and_hangs():
    """The harness itself can fail: an exception other than GanforgeError escapes `answered`, and a hang is stopped."""
    with pytest.raises(ZeroDivisionError):
        answered(lambda: 1 / 0)
    with pytest.raises(Hang), hard_limit(0.05):
        time.sleep(1)
