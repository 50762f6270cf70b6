"""The one parser of a data spec (`--data`): every place that asks what a spec names calls `parse_spec`.

    ring8 | grid25          the 2D Gaussian mixtures (source "mixture")
    digits                  scikit-learn's 8x8 digits
    mnist:FOLDER            MNIST IDX files in FOLDER
    stackedmnist:FOLDER     Stacked MNIST built from the MNIST files in FOLDER
    FOLDER                  a folder of images ("path")
    FILE.npy                a file of vectors or images ("path")
    FILE.csv | .tsv | .data | .parquet  a table of mixed columns, or of numbers only: vectors ("path")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIXTURES = ("ring8", "grid25")
BUILTIN = (*MIXTURES, "digits")
PREFIXES = ("mnist", "stackedmnist")  # sources written as PREFIX:FOLDER
SPEC_HELP = (
    "ring8, grid25, digits, mnist:FOLDER, stackedmnist:FOLDER, an image folder, a .npy file of vectors or images, "
    "or a table (.csv, .tsv, .data, .parquet; numbers only: vectors)"
)


@dataclass(frozen=True)
class DataSpec:
    source: str  # mixture | digits | mnist | stackedmnist | path (a folder or a file, told apart when loaded)
    name: str  # the default run folder's name: runs/<name>
    path: Path | None  # the folder or file, for every source but the built-in ones

    @property
    def builtin(self) -> bool:
        return self.path is None


def parse_spec(spec: str) -> DataSpec:
    """What a data spec names; paths are user-expanded, not checked (loading checks them)."""
    if spec in MIXTURES:
        return DataSpec("mixture", spec, None)
    if spec == "digits":
        return DataSpec("digits", spec, None)
    prefix, colon, rest = spec.partition(":")
    if colon and prefix in PREFIXES:
        return DataSpec(prefix, prefix, Path(rest).expanduser())
    path = Path(spec).expanduser()
    return DataSpec("path", path.stem if ("/" in spec or "." in spec) else spec, path)
