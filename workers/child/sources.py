"""Reading each dataset source into arrays, and checking what it holds; no split, no resizing.

* ``digits`` - scikit-learn's bundled 8x8 handwritten digits (1797 real images, no download);
* ``dir:PATH`` - one sub-folder per class, images read with PIL;
* ``npz:PATH`` - arrays ``x``/``y`` or ``x_train``/``y_train``/``x_val``/``y_val``;
* ``tfds:NAME`` - TensorFlow Datasets, only when ``tensorflow-datasets`` is installed.

Splitting, limiting and resizing into an :class:`~workers.child.data.ImageData` is
:func:`workers.child.data.load_dataset`.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from sweep.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "check_images",
    "check_labels",
    "read_digits",
    "read_dir",
    "read_npz",
    "read_tfds",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def read_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no network

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[..., None]
    return images, digits.target.astype(np.int32), [str(i) for i in range(10)]


def read_dir(source: str, path: str, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not os.path.isdir(path):
        raise DataError(f"Dataset {source!r}: folder {path!r} does not exist")
    class_names = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    if not class_names:
        raise DataError(f"Dataset {source!r}: folder {path!r} has no class sub-folders (expected PATH/<class>/<image>)")
    images: list[np.ndarray] = []
    labels: list[int] = []
    empty = []
    for label, name in enumerate(class_names):
        files = sorted(
            f for f in os.listdir(os.path.join(path, name))
            if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
        )
        if not files:
            empty.append(name)
        for f in files:
            file_path = os.path.join(path, name, f)
            try:
                with Image.open(file_path) as img:
                    rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"Dataset {source!r}: cannot read image {file_path!r} ({exc})") from exc
            images.append(np.asarray(rgb, dtype=np.float32) / 255.0)
            labels.append(label)
    if not images:
        raise DataError(
            f"Dataset {source!r}: no images found in {path!r} "
            f"(extensions {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    if empty:
        raise DataError(f"Dataset {source!r}: class folder(s) {empty} contain no images")
    return np.stack(images), np.asarray(labels, dtype=np.int32), class_names


def check_images(source: str, key: str, x: np.ndarray) -> np.ndarray:
    """Validate an npz/tfds image array and bring it to float32 NHWC in [0, 1]."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise DataError(
            f"Dataset {source!r}: {key} must be (n, h, w), (n, h, w, 1) or (n, h, w, 3), received shape {x.shape}"
        )
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"Dataset {source!r}: integer {key} must be in [0, 255], received [{x.min()}, {x.max()}]")
        return x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"Dataset {source!r}: {key} must be numeric, received dtype {x.dtype}")
    if x.size and (not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0):
        raise DataError(
            f"Dataset {source!r}: float {key} must be finite and in [0, 1] (store uint8 for 0-255), "
            f"received [{np.nanmin(x)}, {np.nanmax(x)}]"
        )
    return x.astype(np.float32)


def check_labels(source: str, key: str, y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise DataError(
            f"Dataset {source!r}: {key} must be {n} non-negative integer labels, "
            f"received shape {y.shape} dtype {y.dtype}"
        )
    return y.astype(np.int32)


def read_npz(source: str, path: str) -> tuple[dict[str, np.ndarray], list[str] | None]:
    if not os.path.isfile(path):
        raise DataError(f"Dataset {source!r}: file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"Dataset {source!r}: cannot read {path!r} as .npz ({exc})") from exc
    for keys in (("x_train", "y_train", "x_val", "y_val"), ("x", "y")):
        if all(k in arrays for k in keys):
            names = arrays.get("class_names")
            return {k: arrays[k] for k in keys}, None if names is None else [str(n) for n in names]
    raise DataError(
        f"Dataset {source!r}: expected keys x, y or x_train, y_train, x_val, y_val, found {sorted(arrays)}"
    )


def read_tfds(source: str, name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise DataError(
            f"Dataset {source!r} needs TensorFlow Datasets: pip install tensorflow-datasets"
        ) from exc
    try:
        data, info = tfds.load(name, split="train", as_supervised=True, batch_size=-1, with_info=True)
    except Exception as exc:  # tfds raises many types (DatasetNotFoundError, network errors)
        raise DataError(f"Dataset {source!r}: tensorflow-datasets could not load {name!r} ({exc})") from exc
    x, y = tfds.as_numpy(data)
    label = info.features["label"]
    return x, y, list(getattr(label, "names", None) or [str(i) for i in range(int(label.num_classes))])
