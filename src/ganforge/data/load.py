"""Turns a data spec (`digits`, `mnist:PATH`, `stackedmnist:PATH`, a folder, a file) into a Dataset."""

from __future__ import annotations

from ganforge.data.dataset import Dataset
from ganforge.data.images import images_from_array, load_digits, load_image_folder, load_mnist
from ganforge.data.spec import SPEC_HELP, parse_spec
from ganforge.data.stacked import load_stacked_mnist
from ganforge.data.table import TABLE_SUFFIXES, TableOptions, load_table, wants_table
from ganforge.data.toy import load_mixture
from ganforge.data.vectors import load_npy, load_vectors
from ganforge.errors import GanforgeError


def load_dataset(
    spec: str,
    image_size: int | None = None,
    channels: int | None = None,
    on_bad_image: str = "error",
    table: TableOptions | None = None,
) -> Dataset:
    """Loads the dataset named by `spec` (see the module docstring) onto the CPU; `table` says how to read a table file."""
    parsed = parse_spec(spec)
    if parsed.source == "mixture":
        return load_mixture(spec)
    if parsed.source == "digits":
        return load_digits(image_size)
    if parsed.source == "mnist":
        return load_mnist(parsed.path, image_size)
    if parsed.source == "stackedmnist":
        return load_stacked_mnist(parsed.path, image_size)
    path = parsed.path
    if path.is_dir():
        return load_image_folder(path, image_size, channels, on_bad_image)
    if path.suffix.lower() in (".npy", *TABLE_SUFFIXES):
        if not path.is_file():
            raise GanforgeError(f"data='{spec}': no such file")
        if path.suffix.lower() != ".npy":
            return load_table(path, table or TableOptions()) if wants_table(path, table or TableOptions()) else load_vectors(path)
        array = load_npy(path)  # (n, dim) vectors; three or more dimensions are images
        return images_from_array(path, array, image_size, channels) if array.ndim >= 3 else load_vectors(path, array)
    if path.exists():
        raise GanforgeError(f"data='{spec}' is not a dataset this version reads: expected {SPEC_HELP}")
    raise GanforgeError(f"data='{spec}' is neither a built-in dataset nor an existing path: expected {SPEC_HELP}")
