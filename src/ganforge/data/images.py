"""Image datasets: scikit-learn's digits, MNIST IDX files, folders of image files and .npy arrays of images."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ganforge.data.dataset import Dataset
from ganforge.errors import GanforgeError
from ganforge.limits import check_images_fit

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
IMAGE_TRANSFORM = {"kind": "image"}


def resize_tensor(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 (n, c, h, w) -> uint8 (n, c, size, size), antialiased; unchanged if already that size."""
    if size is None or images.shape[-2:] == (size, size):
        return images
    check_images_fit(images.shape[0], images.shape[1], size)
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def load_digits(image_size: int | None = None) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (grey levels 0..16), as uint8 (1797, 1, 8, 8)."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    return Dataset(
        name="digits",
        kind="images",
        samples=resize_tensor(images, image_size),
        transform=IMAGE_TRANSFORM,
        labels=torch.from_numpy(digits.target).long(),
    )


def read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (MNIST's format), gzipped or not, into a numpy array."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise GanforgeError(f"{path}: cannot read IDX file: corrupt or truncated ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise GanforgeError(f"{path}: not an IDX file of unsigned bytes (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)  # Python ints: no overflow for absurd headers
    if len(raw) != header + expected:
        raise GanforgeError(f"{path}: IDX file is truncated or corrupt: header says {shape} = {expected} bytes, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_mnist(folder: Path, image_size: int | None = None, split: str = "train") -> Dataset:
    """MNIST-format IDX files from `folder`: `{train,t10k}-images-idx3-ubyte[.gz]` and labels."""
    if not folder.is_dir():
        raise GanforgeError(f"data='mnist:{folder}': no such folder: expected a folder with MNIST IDX files")
    prefix = "train" if split == "train" else "t10k"
    images_path = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    if images_path is None:
        raise GanforgeError(f"{folder}: no {prefix}-images-idx3-ubyte[.gz] file: expected MNIST IDX files in this folder")
    images = read_idx(images_path)
    if images.ndim != 3:
        raise GanforgeError(f"{images_path}: expected an IDX file of images (3 dimensions), found {images.ndim}")
    labels = None
    labels_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    if labels_path is not None:
        labels_array = read_idx(labels_path)
        if labels_array.shape != (images.shape[0],):
            raise GanforgeError(f"{labels_path}: {labels_array.shape[0]} labels for {images.shape[0]} images")
        labels = torch.from_numpy(labels_array.astype(np.int64))
    tensor = torch.from_numpy(images.copy()).unsqueeze(1)
    return Dataset(
        name=f"mnist:{folder}",
        kind="images",
        samples=resize_tensor(tensor, image_size),
        transform=IMAGE_TRANSFORM,
        labels=labels,
        info={"files": str(images_path)},
    )


def _list_images(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs.sort()
        files += [Path(root) / n for n in sorted(names) if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not n.startswith(".")]
    return files


def _square(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square of the shorter side, then resize to size x size."""
    w, h = image.size
    side = min(w, h)
    if w != h:
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


def _is_grey(image: Image.Image) -> bool:
    return image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit grey is scaled from [0, 65535]; 32-bit int grey too when it exceeds 8 bits (16-bit
        # PNGs open as "I" in some Pillow versions); float grey is taken as 8-bit values.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or (image.mode == "I" and array.max() > 255) else 255.0
        image = Image.fromarray(np.clip(np.round(array * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparent pixels onto white rather than whatever colour they hide.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("L" if channels == 1 else "RGB")


def load_image_folder(
    folder: Path, image_size: int | None = None, channels: int | None = None, on_bad_image: str = "error"
) -> Dataset:
    """Every image under `folder` as uint8 (n, channels, size, size).

    Sub-folders one level down name classes (ImageFolder layout). `image_size` defaults to
    the images' own size when they are all square and the same size; `channels` defaults
    to 1 when every image is grey, else 3. Unreadable files raise an error naming the file,
    or are skipped with a warning count when `on_bad_image="skip"`.
    """
    files = _list_images(folder)
    if not files:
        raise GanforgeError(f"data='{folder}': no image files found: expected {', '.join(sorted(IMAGE_EXTENSIONS))} files")
    opened: list[tuple[Path, Image.Image]] = []
    bad: list[str] = []
    for path in files:
        try:
            with Image.open(path) as image:
                image.load()
                opened.append((path, image.copy() if image.mode != "P" else image.convert("RGBA")))
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, MemoryError, Image.DecompressionBombError) as err:
            if on_bad_image != "skip":
                raise GanforgeError(f"{path}: cannot read image ({type(err).__name__}: {err}); set on_bad_image=skip to skip bad files") from None
            bad.append(str(path))
    if not opened:
        raise GanforgeError(f"data='{folder}': none of the {len(files)} image files could be read")
    if channels is None:
        channels = 1 if all(_is_grey(image) for _, image in opened) else 3
    if image_size is None:
        sizes = {image.size for _, image in opened}
        w, h = next(iter(sizes))
        image_size = w if len(sizes) == 1 and w == h else 64
    check_images_fit(len(opened), channels, image_size)
    arrays = np.empty((len(opened), image_size, image_size, channels), dtype=np.uint8)
    for i, (_, image) in enumerate(opened):
        arrays[i] = np.asarray(_square(_to_mode(image, channels), image_size)).reshape(image_size, image_size, channels)
    classes = sorted({path.parent.relative_to(folder).parts[0] for path, _ in opened if path.parent != folder})
    labels = None
    if classes and all(path.parent != folder for path, _ in opened):
        index = {name: i for i, name in enumerate(classes)}
        labels = torch.tensor([index[path.parent.relative_to(folder).parts[0]] for path, _ in opened])
    return Dataset(
        name=str(folder),
        kind="images",
        samples=torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous(),
        transform=IMAGE_TRANSFORM,
        labels=labels,
        info={"classes": classes, "skipped_files": bad},
    )


def _channels_first(path: Path, array: np.ndarray) -> np.ndarray:
    """(n, h, w), (n, c, h, w) or (n, h, w, c) with c in 1 or 3 -> (n, c, h, w); any other shape is a clear error."""
    shape = tuple(array.shape)
    expected = "expected 2 or more images as (n, h, w), (n, c, h, w) or (n, h, w, c) with c = 1 or 3 and sides of 4 pixels or more"
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[1] not in (1, 3) and array.shape[-1] in (1, 3):
        array = array.transpose(0, 3, 1, 2)  # channels last -> channels first
    if array.ndim != 4 or array.shape[1] not in (1, 3) or min(array.shape[2:]) < 4 or array.shape[0] < 2:
        raise GanforgeError(f"{path}: array of shape {shape} cannot be images: {expected}")
    return array


def _as_uint8(path: Path, array: np.ndarray) -> np.ndarray:
    """Pixel values as uint8 [0, 255]: uint8 as is; other numbers read by their range ([0, 1], [-1, 1] or [0, 255])."""
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise GanforgeError(f"{path}: the images hold NaN or Inf: expected finite pixel values")
    low, high = values.min(), values.max()
    if low >= 0 and high <= 1 and array.dtype.kind == "f":
        values = values * 255.0
    elif low >= -1 and high <= 1 and array.dtype.kind == "f":
        values = (values + 1.0) * 127.5
    elif low < 0 or high > 255:
        raise GanforgeError(
            f"{path}: pixel values span [{low:g}, {high:g}]: expected uint8, or numbers in [0, 1], [-1, 1] or [0, 255]"
        )
    return np.round(values).astype(np.uint8)


def images_from_array(path: Path, array: np.ndarray, image_size: int | None = None, channels: int | None = None) -> Dataset:
    """A .npy array of images (see `_channels_first` for the shapes) as uint8 (n, channels, size, size).

    Non-square images are centre-cropped to a square; grey becomes RGB for channels=3 and
    RGB grey (ITU-R 601 luma, as Pillow) for channels=1.
    """
    images = _as_uint8(path, _channels_first(path, array))
    h, w = images.shape[2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    tensor = torch.from_numpy(np.ascontiguousarray(images[:, :, top : top + side, left : left + side]))
    if channels == 3 and tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1).contiguous()
    elif channels == 1 and tensor.shape[1] == 3:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        tensor = (tensor.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    return Dataset(name=str(path), kind="images", samples=resize_tensor(tensor, image_size), transform=IMAGE_TRANSFORM,
                   info={"files": str(path)})
