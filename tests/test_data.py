"""Datasets: the 2D mixtures, digits, MNIST IDX files, image folders, .npy/.csv vectors, and the batch sampler.

Every file-based loader is fed files this test writes itself (IDX headers by hand, images
with PIL, arrays with numpy), then checked for exact contents and for clean GanforgeErrors
on missing, corrupt or truncated input.
"""

from __future__ import annotations

import gzip
import json
import math
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.data import BatchSampler, load_dataset
from ganforge.data.dataset import to_data_space, to_model_space
from ganforge.data.images import load_digits, load_image_folder, load_mnist, read_idx
from ganforge.data.toy import load_mixture
from ganforge.data.vectors import load_vectors
from ganforge.errors import GanforgeError

# --- 2D mixtures ----------------------------------------------------------------------------


def test_ring8_is_eight_modes_on_the_unit_circle_with_std_001():
    data = load_mixture("ring8")
    assert data.kind == "vectors" and data.samples.shape == (100_000, 2) and data.samples.dtype == torch.float32
    angles = np.arange(8) * 2 * np.pi / 8
    np.testing.assert_allclose(data.modes.numpy(), np.stack([np.cos(angles), np.sin(angles)], 1), atol=1e-6)
    assert data.mode_std == 0.01
    residual = data.samples - data.modes[data.labels]
    assert residual.std().item() == pytest.approx(0.01, rel=0.02)
    assert residual.mean(0).abs().max() < 1e-3
    counts = torch.bincount(data.labels, minlength=8)
    assert (counts - 12_500).abs().max() < 500, "modes are equally likely"
    nearest = torch.cdist(data.samples, data.modes).argmin(1)
    assert torch.equal(nearest, data.labels), "modes are far apart relative to their std"


def test_grid25_is_a_5x5_grid_with_std_005():
    data = load_mixture("grid25")
    assert data.samples.shape == (100_000, 2)
    assert sorted(set(data.modes[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(m) for m in data.modes.tolist()}) == 25
    assert data.mode_std == 0.05
    assert (data.samples - data.modes[data.labels]).std().item() == pytest.approx(0.05, rel=0.02)
    assert torch.bincount(data.labels, minlength=25).min() > 3_500


def test_mixtures_are_deterministic_and_stored_in_data_space():
    a, b = load_dataset("ring8"), load_dataset("ring8")
    assert torch.equal(a.samples, b.samples)
    x = torch.randn(5, 2)
    assert torch.equal(to_model_space(x, a.transform), x) and torch.equal(to_data_space(x, a.transform), x)



def test_dataset_maps_batches_as_the_transform_says(tmp_path):
    """The cached affine map gives exactly what the plain function gives, identity or not."""
    ring = load_dataset("ring8")
    batch = ring.samples[:7]
    assert torch.equal(ring.to_model_space(batch), batch)
    path = tmp_path / "v.npy"
    np.save(path, np.random.default_rng(0).normal(3.0, 2.0, (50, 4)).astype(np.float32))
    vectors = load_dataset(str(path))
    for _ in range(2):  # the second call uses the cached tensors
        assert torch.equal(vectors.to_model_space(vectors.samples[:9]), to_model_space(vectors.samples[:9], vectors.transform))
    assert not torch.equal(vectors.to_model_space(vectors.samples[:9]), vectors.samples[:9])
    vectors.to(torch.device("cpu"))
    assert torch.equal(vectors.to_model_space(vectors.samples[:9]), to_model_space(vectors.samples[:9], vectors.transform))


# --- digits ---------------------------------------------------------------------------------


def test_digits_are_1797_grey_8x8_uint8_images_with_labels():
    from sklearn.datasets import load_digits as sklearn_digits

    data = load_dataset("digits")
    assert data.kind == "images"
    assert data.samples.shape == (1797, 1, 8, 8) and data.samples.dtype == torch.uint8
    assert data.samples.min() == 0 and data.samples.max() == 255
    reference = sklearn_digits()
    np.testing.assert_array_equal(data.samples[:, 0].numpy(), np.round(reference.images * 255 / 16))
    assert data.labels.tolist() == reference.target.tolist()
    assert sorted(set(data.labels.tolist())) == list(range(10))
    model = data.to_model_space(data.samples[:100])
    assert model.dtype == torch.float32 and model.min() == -1 and model.max() == 1


def test_digits_resized():
    data = load_digits(16)
    assert data.samples.shape == (1797, 1, 16, 16) and data.samples.dtype == torch.uint8
    # Area-preserving (antialiased) resize: mean brightness is kept.
    assert data.samples.float().mean().item() == pytest.approx(load_digits().samples.float().mean().item(), rel=0.02)


def test_image_model_space_round_trip():
    x = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8)
    back = to_data_space(to_model_space(x, {"kind": "image"}), {"kind": "image"})
    np.testing.assert_allclose(back.numpy() * 255, x.numpy(), atol=1e-4)
    assert to_data_space(torch.tensor([-3.0, 3.0]), {"kind": "image"}).tolist() == [0.0, 1.0], "clamped to [0, 1]"


# --- MNIST IDX ------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000 0x08 ndim, big-endian dimensions, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def mnist_arrays():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (5, 8, 8), dtype=np.uint8), rng.integers(0, 10, 5, dtype=np.uint8)


def write_mnist(folder, images, labels, gz: bool, dotted: bool = False):
    folder.mkdir(exist_ok=True)
    for stem, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        name = stem.replace("-idx", ".idx") if dotted else stem
        data = idx_bytes(array)
        if gz:
            name, data = name + ".gz", gzip.compress(data)
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize(("gz", "dotted"), [(False, False), (True, False), (False, True), (True, True)])
def test_mnist_idx_files_load_exactly(tmp_path, mnist_arrays, gz, dotted):
    images, labels = mnist_arrays
    folder = write_mnist(tmp_path / "mnist", images, labels, gz, dotted)
    data = load_dataset(f"mnist:{folder}")
    assert data.kind == "images" and data.samples.dtype == torch.uint8
    assert data.samples.shape == (5, 1, 8, 8)
    np.testing.assert_array_equal(data.samples[:, 0].numpy(), images)
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == labels.tolist()


def test_mnist_without_labels_and_resized(tmp_path, mnist_arrays):
    images, _ = mnist_arrays
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    data = load_mnist(folder, image_size=16)
    assert data.labels is None
    assert data.samples.shape == (5, 1, 16, 16)


def test_read_idx_rejects_truncated_and_padded_files(tmp_path, mnist_arrays):
    images, _ = mnist_arrays
    raw = idx_bytes(images)
    for name, data in (("short", raw[:-7]), ("long", raw + b"\0"), ("short.gz", gzip.compress(raw[:-1]))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(GanforgeError, match=r"truncated or corrupt: header says \(5, 8, 8\) = 320 bytes"):
            read_idx(tmp_path / name)


def test_read_idx_rejects_bad_magic_numbers(tmp_path, mnist_arrays):
    images, _ = mnist_arrays
    raw = idx_bytes(images)
    for i, data in enumerate([b"\x00\x00\x0d\x03" + raw[4:], b"PK\x03\x04" + raw[4:], b"\x00\x00"]):
        (tmp_path / f"f{i}").write_bytes(data)
        with pytest.raises(GanforgeError, match="not an IDX file of unsigned bytes"):
            read_idx(tmp_path / f"f{i}")


def test_read_idx_rejects_a_cut_gzip_stream(tmp_path, mnist_arrays):
    data = gzip.compress(idx_bytes(mnist_arrays[0]))
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(GanforgeError, match="cut.gz: cannot read IDX file"):
        read_idx(tmp_path / "cut.gz")


def test_read_idx_rejects_a_corrupt_gzip_stream(tmp_path, mnist_arrays):
    data = gzip.compress(idx_bytes(mnist_arrays[0]))
    # Keep the 10-byte gzip header; 0xff starts a deflate block of the reserved type 3 ("invalid block type").
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(data[:10] + b"\xff" * (len(data) - 10))
    with pytest.raises(GanforgeError, match="train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)


def test_mnist_label_count_must_match(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    folder = write_mnist(tmp_path / "m", images, labels[:4], gz=False)
    with pytest.raises(GanforgeError, match="4 labels for 5 images"):
        load_mnist(folder)


def test_mnist_images_must_be_three_dimensional(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((4, 64), np.uint8)))
    with pytest.raises(GanforgeError, match="3 dimensions"):
        load_mnist(folder)


def test_mnist_missing_folder_or_files(tmp_path):
    with pytest.raises(GanforgeError, match="no such folder"):
        load_dataset(f"mnist:{tmp_path / 'nope'}")
    with pytest.raises(GanforgeError, match="no train-images-idx3-ubyte"):
        load_dataset(f"mnist:{tmp_path}")


# --- image folders --------------------------------------------------------------------------


def solid(mode: str, size: tuple[int, int], colour) -> Image.Image:
    return Image.new(mode, size, colour)


def test_image_folder_class_subfolders_give_labels(tmp_path):
    for cls, values in (("cat", (10, 20)), ("dog", (30,))):
        (tmp_path / cls).mkdir()
        for i, v in enumerate(values):
            solid("L", (8, 8), v).save(tmp_path / cls / f"{i}.png")
    data = load_dataset(str(tmp_path))
    assert data.kind == "images" and data.samples.shape == (3, 1, 8, 8) and data.samples.dtype == torch.uint8
    assert data.samples.flatten(1).float().mean(1).tolist() == [10, 20, 30]
    assert data.labels.tolist() == [0, 0, 1]
    assert data.info["classes"] == ["cat", "dog"]


def test_image_folder_flat_has_no_labels_and_ignores_hidden_and_other_files(tmp_path):
    solid("L", (8, 8), 5).save(tmp_path / "a.png")
    solid("L", (8, 8), 6).save(tmp_path / ".hidden.png")
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_image_folder(tmp_path)
    assert len(data) == 1 and data.labels is None


def test_image_folder_grey_only_is_one_channel_any_colour_makes_three(tmp_path):
    solid("L", (8, 8), 100).save(tmp_path / "a_grey.png")
    assert load_image_folder(tmp_path).samples.shape == (1, 1, 8, 8)
    solid("RGB", (8, 8), (200, 50, 10)).save(tmp_path / "b_rgb.png")
    data = load_image_folder(tmp_path)
    assert data.samples.shape == (2, 3, 8, 8)
    assert data.samples[0, :, 0, 0].tolist() == [100, 100, 100], "grey replicated to RGB"
    assert data.samples[1, :, 3, 3].tolist() == [200, 50, 10]
    forced = load_image_folder(tmp_path, channels=1)
    assert forced.samples.shape == (2, 1, 8, 8)
    luma = 0.299 * 200 + 0.587 * 50 + 0.114 * 10
    assert abs(int(forced.samples[1, 0, 0, 0]) - luma) <= 1


def test_image_folder_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    data = load_image_folder(tmp_path)
    assert data.samples.shape == (1, 3, 8, 8)
    assert data.samples.unique().tolist() == [255]


def test_image_folder_resizes_and_centre_crops(tmp_path):
    solid("RGB", (12, 12), (40, 80, 120)).save(tmp_path / "square.png")
    wide = np.zeros((8, 16), np.uint8)
    wide[:, 4:12] = 200  # only the centre 8 columns are bright
    Image.fromarray(wide, "L").save(tmp_path / "wide.png")
    data = load_image_folder(tmp_path, image_size=8)
    assert data.samples.shape == (2, 3, 8, 8)
    square, centre = data.samples[0].int(), data.samples[1].int()
    assert (square - torch.tensor([40, 80, 120]).view(3, 1, 1)).abs().max() <= 1
    assert (centre - 200).abs().max() <= 2, "centre crop of the wide image keeps only the bright columns"


def test_image_folder_of_mixed_sizes_defaults_to_64(tmp_path):
    solid("L", (8, 8), 1).save(tmp_path / "a.png")
    solid("L", (12, 12), 1).save(tmp_path / "b.png")
    assert load_image_folder(tmp_path).samples.shape == (2, 1, 64, 64)


@pytest.mark.parametrize("damage", ["junk", "truncated"])
def test_image_folder_bad_file_is_an_error_naming_it_or_skipped(tmp_path, damage):
    solid("L", (8, 8), 1).save(tmp_path / "good.png")
    solid("L", (8, 8), 2).save(tmp_path / "bad.png")
    raw = (tmp_path / "bad.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(b"definitely not a png" if damage == "junk" else raw[: len(raw) // 2])
    with pytest.raises(GanforgeError, match=r"bad\.png: cannot read image.*on_bad_image=skip"):
        load_image_folder(tmp_path)
    data = load_dataset(str(tmp_path), on_bad_image="skip")
    assert len(data) == 1 and data.samples.unique().tolist() == [1]
    assert data.info["skipped_files"] == [str(tmp_path / "bad.png")]


def test_image_folder_with_only_bad_files_or_no_images(tmp_path):
    with pytest.raises(GanforgeError, match="no image files found"):
        load_dataset(str(tmp_path))
    (tmp_path / "x.jpg").write_bytes(b"nope")
    with pytest.raises(GanforgeError, match="none of the 1 image files could be read"):
        load_image_folder(tmp_path, on_bad_image="skip")


# --- vectors --------------------------------------------------------------------------------


@pytest.fixture
def table():
    rng = np.random.default_rng(1)
    return rng.normal([5.0, -2.0, 100.0], [1.0, 3.0, 0.5], size=(50, 3))


def test_npy_vectors_are_standardised_and_invertible(tmp_path, table):
    np.save(tmp_path / "x.npy", table)
    data = load_dataset(str(tmp_path / "x.npy"))
    assert data.kind == "vectors" and data.samples.shape == (50, 3) and data.samples.dtype == torch.float32
    np.testing.assert_allclose(data.samples.numpy(), table, rtol=1e-6)
    np.testing.assert_allclose(data.transform["shift"], table.mean(0), rtol=1e-12)
    np.testing.assert_allclose(data.transform["scale"], table.std(0), rtol=1e-12)
    model = data.to_model_space(data.samples)
    np.testing.assert_allclose(model.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(model.std(0, unbiased=False).numpy(), 1, atol=1e-5)
    back = to_data_space(model, data.transform)
    np.testing.assert_allclose(back.numpy(), table, rtol=1e-5, atol=1e-5)


def test_npy_edge_shapes_and_constant_columns(tmp_path):
    np.save(tmp_path / "one_d.npy", np.arange(6, dtype=np.int32))
    data = load_vectors(tmp_path / "one_d.npy")
    assert data.samples.shape == (6, 1) and data.samples.dtype == torch.float32
    np.save(tmp_path / "const.npy", np.array([[1.0, 7.0], [2.0, 7.0], [3.0, 7.0]]))
    data = load_vectors(tmp_path / "const.npy")
    assert data.transform["scale"][1] == 1.0, "constant column: no division by zero"
    assert torch.isfinite(data.to_model_space(data.samples)).all()


def test_csv_with_and_without_header(tmp_path, table):
    np.savetxt(tmp_path / "plain.csv", table, delimiter=",")
    np.savetxt(tmp_path / "header.csv", table, delimiter=",", header="a,b,c", comments="")
    (tmp_path / "gaps.csv").write_text("x,y,z\n\n" + "\n\n".join(",".join(repr(float(v)) for v in row) for row in table) + "\n")
    for name in ("plain.csv", "header.csv", "gaps.csv"):
        data = load_dataset(str(tmp_path / name))
        assert data.samples.shape == (50, 3), name
        np.testing.assert_allclose(data.samples.numpy(), table, rtol=1e-6)
        np.testing.assert_allclose(data.transform["shift"], table.mean(0), rtol=1e-9)


def test_csv_text_in_a_numeric_column_names_line_and_column(tmp_path):
    (tmp_path / "bad.csv").write_text("1,2,3\n4,5,abc\n7,8,9\n")
    with pytest.raises(GanforgeError, match=r"bad\.csv: line 2, column 3 is 'abc': expected a number"):
        load_vectors(tmp_path / "bad.csv")


def test_csv_ragged_rows(tmp_path):
    (tmp_path / "ragged.csv").write_text("1,2\n3,4\n5\n")
    with pytest.raises(GanforgeError, match="line 3 has 1 columns: expected 2"):
        load_vectors(tmp_path / "ragged.csv")


def test_csv_ragged_row_after_a_header_names_the_file_line(tmp_path):
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")  # file line 3 is short
    with pytest.raises(GanforgeError, match="line 3 has 1 columns"):
        load_vectors(tmp_path / "ragged.csv")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_an_error_naming_the_row(tmp_path, bad):
    array = np.ones((4, 2))
    array[2, 1] = bad
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(GanforgeError, match="row 3 holds NaN or Inf"):
        load_vectors(tmp_path / "x.npy")
    np.savetxt(tmp_path / "x.csv", array, delimiter=",")
    with pytest.raises(GanforgeError, match="row 3 holds NaN or Inf"):
        load_vectors(tmp_path / "x.csv")


def test_corrupt_and_truncated_npy_files(tmp_path, table):
    np.save(tmp_path / "good.npy", table)
    raw = (tmp_path / "good.npy").read_bytes()
    cases = {
        "junk.npy": b"this is not numpy data at all",
        "cut_data.npy": raw[:-40],
        "cut_header.npy": raw[:30],
        "empty.npy": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(GanforgeError, match=rf"{name}: cannot read \.npy file"):
            load_dataset(str(tmp_path / name))


def test_npy_must_be_a_numeric_table(tmp_path):
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    with pytest.raises(GanforgeError, match="not numeric"):
        load_vectors(tmp_path / "text.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(GanforgeError, match="objects.npy: cannot read"):
        load_vectors(tmp_path / "objects.npy")
    np.save(tmp_path / "cube.npy", np.zeros((3, 2, 2)))
    with pytest.raises(GanforgeError, match=r"shape \(3, 2, 2\) is not a table of vectors"):
        load_vectors(tmp_path / "cube.npy")
    np.save(tmp_path / "single.npy", np.zeros((1, 4)))
    with pytest.raises(GanforgeError, match="at least 2 samples"):
        load_vectors(tmp_path / "single.npy")


def test_csv_without_data_rows(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("a,b\n")
    for name in ("empty.csv", "header.csv"):
        with pytest.raises(GanforgeError, match="no data rows"):
            load_vectors(tmp_path / name)


def test_missing_and_unknown_data_specs(tmp_path):
    with pytest.raises(GanforgeError, match=r"data='.*missing\.npy': no such file"):
        load_dataset(str(tmp_path / "missing.npy"))
    with pytest.raises(GanforgeError, match="neither a built-in dataset nor an existing path"):
        load_dataset("ring9")
    (tmp_path / "data.h5").write_bytes(b"HDF5")
    with pytest.raises(GanforgeError, match="not a dataset this version reads"):
        load_dataset(str(tmp_path / "data.h5"))


# --- batch sampler --------------------------------------------------------------------------


def test_batches_cover_each_epoch_without_repeats():
    sampler = BatchSampler(10, 3, seed=4)
    epochs = []
    for _ in range(4):
        batches = [sampler.next() for _ in range(3)]  # 3 full batches per epoch, the 10th sample is dropped
        assert all(b.shape == (3,) and b.dtype == torch.int64 for b in batches)
        seen = torch.cat(batches).tolist()
        assert len(set(seen)) == 9 and set(seen) <= set(range(10))
        epochs.append(seen)
    assert len({tuple(e) for e in epochs}) == 4, "each epoch is reshuffled"


def test_full_batch_is_a_permutation_every_time():
    sampler = BatchSampler(6, 6, seed=0)
    orders = [sampler.next().tolist() for _ in range(5)]
    assert all(sorted(o) == list(range(6)) for o in orders)
    assert len({tuple(o) for o in orders}) > 1


def test_sampler_seeding():
    a, b, c = BatchSampler(50, 7, seed=1), BatchSampler(50, 7, seed=1), BatchSampler(50, 7, seed=2)
    first = [a.next().tolist() for _ in range(10)]
    assert first == [b.next().tolist() for _ in range(10)]
    assert first != [c.next().tolist() for _ in range(10)]


@pytest.mark.parametrize("drawn", [0, 1, 3, 4, 9])
def test_sampler_state_dict_resumes_identically(drawn):
    """Resuming mid-epoch, at an epoch boundary or later gives exactly the uninterrupted batches."""
    original = BatchSampler(10, 3, seed=7)
    for _ in range(drawn):
        original.next()
    state = dict(original.state_dict())
    expected = [original.next().tolist() for _ in range(8)]
    resumed = BatchSampler(10, 3, seed=123)  # the state's seed wins
    resumed.load_state_dict(state)
    assert [resumed.next().tolist() for _ in range(8)] == expected


def test_sampler_state_dict_rewinds_a_used_sampler():
    """Loading an earlier state into a sampler that has moved on (other epoch) rewinds it exactly."""
    sampler = BatchSampler(10, 3, seed=2)
    sampler.next()
    state = dict(sampler.state_dict())
    expected = [sampler.next().tolist() for _ in range(6)]  # crosses into epochs 1 and 2
    sampler.load_state_dict(state)
    assert [sampler.next().tolist() for _ in range(6)] == expected


def test_sampler_rejects_batches_larger_than_the_dataset():
    with pytest.raises(GanforgeError, match=r"batch_size=11 is larger than the dataset \(10 samples\)"):
        BatchSampler(10, 11)


def test_epoch_count_matches_drawn_samples():
    sampler = BatchSampler(10, 3)
    for _ in range(7):
        sampler.next()
    assert sampler.state_dict()["epoch"] == math.ceil(7 / 3) - 1


@pytest.mark.parametrize(
    ("spec", "source", "path"),
    [("ring8", "mixture", None), ("grid25", "mixture", None), ("digits", "digits", None), ("mnist:data/m", "mnist", "data/m"),
     ("stackedmnist:/x/y", "stackedmnist", "/x/y"), ("photos", "path", "photos"), ("a/b.csv", "path", "a/b.csv"),
     ("other:thing", "path", "other:thing"), ("mnist", "path", "mnist")],
)
def test_one_parser_tells_what_a_data_spec_names(spec, source, path):
    from ganforge.data.spec import parse_spec

    parsed = parse_spec(spec)
    assert parsed.source == source
    assert parsed.path == (None if path is None else pathlib.Path(path))


# --- .npy arrays of images ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "channels"),
    [("nhw", 1), ("nchw", 1), ("nchw", 3), ("nhwc", 3), ("nhwc", 1)],
)
def test_npy_images_load_in_every_layout_as_uint8_channels_first(tmp_path, layout, channels):
    images = np.random.default_rng(0).integers(0, 256, (5, channels, 12, 12), dtype=np.uint8)  # (n, c, h, w)
    array = {"nhw": images[:, 0], "nchw": images, "nhwc": images.transpose(0, 2, 3, 1)}[layout]
    np.save(tmp_path / "x.npy", array)
    data = load_dataset(str(tmp_path / "x.npy"))
    assert data.kind == "images" and data.samples.dtype == torch.uint8
    assert torch.equal(data.samples, torch.from_numpy(images))


@pytest.mark.parametrize(("scale", "shift"), [(1 / 255, 0.0), (2 / 255, -1.0), (1.0, 0.0)], ids=["unit", "signed", "bytes"])
def test_npy_float_images_are_read_by_their_range(tmp_path, scale, shift):
    pixels = np.array([0, 1, 127, 128, 254, 255] * 8, dtype=np.float64).reshape(3, 4, 4)
    np.save(tmp_path / "x.npy", (pixels * scale + shift).astype(np.float32))
    data = load_dataset(str(tmp_path / "x.npy"))
    assert torch.equal(data.samples, torch.from_numpy(pixels.astype(np.uint8)).unsqueeze(1))


def test_npy_images_resize_crop_and_convert_channels(tmp_path):
    grey = np.full((4, 10, 16), 200, dtype=np.uint8)
    np.save(tmp_path / "wide.npy", grey)
    data = load_dataset(str(tmp_path / "wide.npy"), image_size=8, channels=3)
    assert data.sample_shape == (3, 8, 8) and (data.samples == 200).all()
    rgb = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    rgb[:, 1] = 255  # pure green
    np.save(tmp_path / "green.npy", rgb)
    assert (load_dataset(str(tmp_path / "green.npy"), channels=1).samples == 150).all()  # 0.587 * 255


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((4, 2, 8, 8), np.uint8, r"shape \(4, 2, 8, 8\) cannot be images: expected 2 or more images as \(n, h, w\)"),
        ((4, 5, 8, 7), np.uint8, r"shape \(4, 5, 8, 7\) cannot be images"),
        ((4, 3, 2, 2), np.uint8, r"shape \(4, 3, 2, 2\) cannot be images"),
        ((1, 8, 8), np.uint8, r"shape \(1, 8, 8\) cannot be images"),
        ((2, 1, 3, 8, 8), np.uint8, r"shape \(2, 1, 3, 8, 8\) cannot be images"),
        ((3, 8, 8), np.int32, r"pixel values span \[-3, 300\]: expected uint8, or numbers in \[0, 1\], \[-1, 1\] or \[0, 255\]"),
    ],
)
def test_npy_shapes_and_values_that_cannot_be_images_are_one_line_errors(tmp_path, shape, dtype, message):
    array = np.zeros(shape, dtype=dtype)
    if dtype is np.int32:
        array.flat[0], array.flat[1] = -3, 300
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(GanforgeError, match=message) as caught:
        load_dataset(str(tmp_path / "bad.npy"))
    assert "\n" not in str(caught.value)


def test_npy_images_with_nan_are_an_error(tmp_path):
    array = np.zeros((3, 8, 8), dtype=np.float32)
    array[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", array)
    with pytest.raises(GanforgeError, match="nan.npy: the images hold NaN or Inf"):
        load_dataset(str(tmp_path / "nan.npy"))


def test_training_on_npy_images_end_to_end(cli, tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (32, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "tiny.npy", images)
    run = tmp_path / "run"
    result = cli("train", "--data", str(tmp_path / "tiny.npy"), "--steps", "3", "--out", str(run), "--batch_size", "8",
                 "--g_width", "4", "--d_width", "4", "--device", "cpu", "--quiet")
    assert result.code == 0, result.err
    assert json.loads((run / "config.json").read_text())["image_size"] == 8
