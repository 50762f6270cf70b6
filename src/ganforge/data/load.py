"""Turns a data spec (`digits`, `mnist:PATH`, `stackedmnist:PATH`, a folder, a file) into a Dataset."""

from __future__ import annotations

from pathlib import Path

from ganforge.data.dataset import Dataset
from ganforge.data.images import load_digits, load_image_folder, load_mnist
from ganforge.data.stacked import load_stacked_mnist
from ganforge.data.table import TABLE_SUFFIXES, TableOptions, load_table, wants_table
from ganforge.data.toy import load_mixture
from ganforge.data.vectors import load_vectors
from ganforge.errors import GanforgeError

BUILTIN = ("ring8", "grid25", "digits")
SPEC_HELP = "ring8, grid25, digits, mnist:FOLDER, stackedmnist:FOLDER, an image folder, a .npy/.csv file or a table (.csv, .tsv, .data)"


def load_dataset(
    spec: str,
    image_size: int | None = None,
    channels: int | None = None,
    on_bad_image: str = "error",
    table: TableOptions | None = None,
) -> Dataset:
    """Loads the dataset named by `spec` (see the module docstring) onto the CPU; `table` says how to read a table file."""
    if spec in ("ring8", "grid25"):
        return load_mixture(spec)
    if spec == "digits":
        return load_digits(image_size)
    if spec.startswith("mnist:"):
        return load_mnist(Path(spec[len("mnist:") :]).expanduser(), image_size)
    if spec.startswith("stackedmnist:"):
        return load_stacked_mnist(Path(spec[len("stackedmnist:") :]).expanduser(), image_size)
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_image_folder(path, image_size, channels, on_bad_image)
    if path.suffix.lower() in (".npy", *TABLE_SUFFIXES):
        if not path.is_file():
            raise GanforgeError(f"data='{spec}': no such file")
        if path.suffix.lower() != ".npy" and wants_table(path, table or TableOptions()):
            return load_table(path, table or TableOptions())
        return load_vectors(path)
    if path.exists():
        raise GanforgeError(f"data='{spec}' is not a dataset this version reads: expected {SPEC_HELP}")
    raise GanforgeError(f"data='{spec}' is neither a built-in dataset nor an existing path: expected {SPEC_HELP}")
