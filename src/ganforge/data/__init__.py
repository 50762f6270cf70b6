"""Training data: built-in datasets and real files, held in memory and batched on the device.

`load_dataset(spec)` understands:
- `ring8`, `grid25`: the standard 2D Gaussian mixtures;
- `digits`: scikit-learn's 8x8 handwritten digits (1,797 images, no download);
- `mnist:PATH`: MNIST-format IDX files (gzipped or not) in a folder;
- `stackedmnist:PATH`: Stacked MNIST built from those files (three digits as R, G, B);
- a folder of images, optionally one sub-folder per class;
- a `.npy` or `.csv` file of vectors, one row per sample;
- a table of mixed columns (`.csv` with a text column, `.tsv`, `.data`; see `data/table.py`).
"""

from ganforge.data.dataset import Dataset
from ganforge.data.load import load_dataset
from ganforge.data.sampler import BatchSampler

__all__ = ["BatchSampler", "Dataset", "load_dataset"]
