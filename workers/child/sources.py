"""Reading each dataset source into arrays, and checking what it holds; no split, no resizing.

* ``digits`` - scikit-learn's bundled 8x8 handwritten digits (1797 real images, no download);
* ``dir:PATH`` - one sub-folder per class, images read with PIL;
* ``npz:PATH`` - arrays ``x``/``y`` or ``x_train``/``y_train``/``x_val``/``y_val``;
* ``tfds:NAME`` - TensorFlow Datasets, only when ``tensorflow-datasets`` is installed.

Splitting, limiting and resizing into an :class:`~workers.child.data.ImageData` is
:func:`workers.child.data.load_dataset`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from sweep.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "SourceArrays",
    "check_images",
    "check_labels",
    "read_digits",
    "read_dir",
    "read_npz",
    "read_source",
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


@dataclasses.dataclass(frozen=True)
class SourceArrays:
    """What a source holds, checked but not yet split or resized.

    Attributes:
        x: float32 NHWC images in [0, 1], to be split (with ``given_split``: its training images).
        y: int32 labels, all of them (the classes are counted from it).
        class_names: The source's class names, or None when it does not name them.
        given_split: ``(x_train, y_train, x_val, y_val)`` when an npz file brings its own split.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: list[str] | None
    given_split: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None


def read_source(source: str, image_size: int) -> SourceArrays:
    """Read ``"digits"``, ``"dir:PATH"``, ``"npz:PATH"`` or ``"tfds:NAME"`` (``dir`` images at ``image_size``).

    Raises:
        DataError: If the source is unknown, missing, empty or malformed.
    """
    if not isinstance(source, str):
        raise DataError(f"Invalid dataset: expected a string, received dataset={source!r}")
    scheme, _, arg = source.partition(":")
    if scheme in ("dir", "npz", "tfds") and not arg:
        raise DataError(f"Dataset {source!r}: missing the part after '{scheme}:'")
    if source == "digits":
        return SourceArrays(*read_digits())
    if scheme == "dir":
        return SourceArrays(*read_dir(source, arg, image_size))
    if scheme == "npz":
        return _npz_arrays(source, arg)
    if scheme == "tfds":
        x, y, class_names = read_tfds(source, arg)
        x = check_images(source, "images", x)
        return SourceArrays(x, check_labels(source, "labels", y, len(x)), class_names)
    raise DataError(
        f"Invalid dataset: unknown source {source!r}, expected 'digits', 'dir:PATH', 'npz:PATH' or 'tfds:NAME'"
    )


def _npz_arrays(source: str, path: str) -> SourceArrays:
    arrays, class_names = read_npz(source, path)
    if "x" in arrays:
        x = check_images(source, "x", arrays["x"])
        return SourceArrays(x, check_labels(source, "y", arrays["y"], len(x)), class_names)
    x_tr = check_images(source, "x_train", arrays["x_train"])
    x_va = check_images(source, "x_val", arrays["x_val"])
    y_tr = check_labels(source, "y_train", arrays["y_train"], len(x_tr))
    y_va = check_labels(source, "y_val", arrays["y_val"], len(x_va))
    # The given split is used as it is; y (both halves) only counts the classes.
    return SourceArrays(x_tr, np.concatenate([y_tr, y_va]), class_names, (x_tr, y_tr, x_va, y_va))
