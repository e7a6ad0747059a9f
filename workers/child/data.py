"""Load a training set as numpy arrays, whatever the Keras backend.

Sources (``spec.training.dataset``):

* ``digits`` - scikit-learn's bundled 8x8 handwritten digits (1797 real images, no download);
* ``dir:PATH`` - one sub-folder per class, images read with PIL;
* ``npz:PATH`` - arrays ``x``/``y`` (split here) or ``x_train``/``y_train``/``x_val``/``y_val``;
* ``tfds:NAME`` - TensorFlow Datasets, only when ``tensorflow-datasets`` is installed.

Each source is read by :mod:`workers.child.sources`; here it is split, limited and resized.
Everything is numpy + PIL so the loader runs under ``KERAS_BACKEND=jax`` without TensorFlow.
Images come back float32 NHWC, 3 channels, in [0, 1], resized to ``image_size`` squares.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from PIL import Image

from sweep.errors import DataError
from workers.child.sources import (
    IMAGE_EXTENSIONS,
    check_images,
    check_labels,
    read_digits,
    read_dir,
    read_npz,
    read_tfds,
)

__all__ = ["ImageData", "load_dataset", "IMAGE_EXTENSIONS"]

logger = logging.getLogger(__name__)

@dataclasses.dataclass
class ImageData:
    """A train/validation split ready for ``model.fit``.

    Attributes:
        x_train: float32 ``(n, size, size, 3)`` in [0, 1].
        y_train: int32 ``(n,)`` class indices.
        x_val: float32 ``(m, size, size, 3)`` in [0, 1].
        y_val: int32 ``(m,)`` class indices.
        num_classes: Number of classes (``len(class_names)``).
        class_names: Name of each class index.
        source: The source string it was loaded from.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    class_names: list[str]
    source: str


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize float [0, 1] NHWC images to ``size`` x ``size`` (bilinear, per channel in PIL 'F' mode)."""
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[3]), dtype=np.float32)
    for i, image in enumerate(images):
        for c in range(images.shape[3]):
            out[i, :, :, c] = np.asarray(
                Image.fromarray(image[:, :, c], mode="F").resize((size, size), Image.Resampling.BILINEAR)
            )
    return np.clip(out, 0.0, 1.0)


def _to_rgb(images: np.ndarray) -> np.ndarray:
    return np.repeat(images, 3, axis=3) if images.shape[3] == 1 else images


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class so every class keeps its share on both sides.

    Args:
        y: Integer labels.
        val_fraction: Fraction of each class that goes to validation (rounded; at least one
            validation image per class with two or more images, never the last training image).
        seed: Seed of the shuffle; the same seed gives the same split.

    Returns:
        ``(train_indices, val_indices)``, each shuffled.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_val = min(len(idx) - 1, max(1 if len(idx) > 1 else 0, int(len(idx) * val_fraction + 0.5)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def load_dataset(
    source: str = "digits",
    *,
    image_size: int,
    val_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
) -> ImageData:
    """Load ``source`` as a stratified train/validation split of float32 RGB images.

    Args:
        source: ``"digits"``, ``"dir:PATH"``, ``"npz:PATH"`` or ``"tfds:NAME"``.
        image_size: Side of the square images returned.
        val_fraction: Share of each class held out for validation, in (0, 1). Ignored when an
            npz file brings its own ``x_val``/``y_val``.
        seed: Seed of the split; the same seed gives the same split.
        limit: Keep at most this many training images (validation is left whole so scores
            stay comparable); ``None`` keeps all.

    Returns:
        The :class:`ImageData`.

    Raises:
        DataError: If the source is unknown, missing, empty or malformed.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"Invalid image_size: expected a positive int, received image_size={image_size!r}")
    if not isinstance(val_fraction, (int, float)) or not 0.0 < val_fraction < 1.0:
        raise DataError(f"Invalid val_fraction: expected a float in (0, 1), received val_fraction={val_fraction!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"Invalid limit: expected a positive int or None, received limit={limit!r}")
    if not isinstance(source, str):
        raise DataError(f"Invalid dataset: expected a string, received dataset={source!r}")
    scheme, _, arg = source.partition(":")
    if scheme in ("dir", "npz", "tfds") and not arg:
        raise DataError(f"Dataset {source!r}: missing the part after '{scheme}:'")

    given_split: tuple[np.ndarray, ...] | None = None
    class_names: list[str] | None  # dir and npz sources may not name their classes
    if source == "digits":
        x, y, class_names = read_digits()
    elif scheme == "dir":
        x, y, class_names = read_dir(source, arg, image_size)
    elif scheme == "npz":
        arrays, class_names = read_npz(source, arg)
        if "x" in arrays:
            x = check_images(source, "x", arrays["x"])
            y = check_labels(source, "y", arrays["y"], len(x))
        else:
            x_tr = check_images(source, "x_train", arrays["x_train"])
            x_va = check_images(source, "x_val", arrays["x_val"])
            given_split = (
                x_tr, check_labels(source, "y_train", arrays["y_train"], len(x_tr)),
                x_va, check_labels(source, "y_val", arrays["y_val"], len(x_va)),
            )
            y = np.concatenate([given_split[1], given_split[3]])
    elif scheme == "tfds":
        x, y, class_names = read_tfds(source, arg)
        x = check_images(source, "images", x)
        y = check_labels(source, "labels", y, len(x))
    else:
        raise DataError(
            f"Invalid dataset: unknown source {source!r}, expected 'digits', 'dir:PATH', 'npz:PATH' or 'tfds:NAME'"
        )

    num_classes = int(y.max()) + 1 if y.size else 0
    if num_classes < 2:
        raise DataError(f"Dataset {source!r}: needs at least 2 classes, found {num_classes}")
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    elif len(class_names) < num_classes:
        raise DataError(f"Dataset {source!r}: {len(class_names)} class_names for labels up to {num_classes - 1}")
    if given_split is not None:
        x_train, y_train, x_val, y_val = given_split
    else:
        if len(x) < 2:
            raise DataError(f"Dataset {source!r}: needs at least 2 images, found {len(x)}")
        train_idx, val_idx = stratified_split(y, val_fraction, seed)
        x_train, y_train, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    if not len(x_train) or not len(x_val):
        raise DataError(
            f"Dataset {source!r}: empty split ({len(x_train)} train, {len(x_val)} validation images)"
        )
    if limit is not None and limit < len(x_train):
        keep = np.sort(np.random.default_rng(seed).permutation(len(x_train))[:limit])
        x_train, y_train = x_train[keep], y_train[keep]
    data = ImageData(
        x_train=_to_rgb(_resize(x_train, image_size)),
        y_train=y_train,
        x_val=_to_rgb(_resize(x_val, image_size)),
        y_val=y_val,
        num_classes=len(class_names),
        class_names=list(class_names),
        source=source,
    )
    logger.info("Loaded %s: %d train / %d validation images, %d classes, %dx%d",
                source, len(data.x_train), len(data.x_val), data.num_classes, image_size, image_size)
    return data
