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
from workers.child.sources import IMAGE_EXTENSIONS, SourceArrays, read_source

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
    _check_arguments(image_size, val_fraction, limit)
    read = read_source(source, image_size)
    class_names = _class_names(source, read.y, read.class_names)
    x_train, y_train, x_val, y_val = _split(source, read, val_fraction, seed)
    x_train, y_train = _limit(x_train, y_train, limit, seed)
    data = ImageData(
        x_train=_to_rgb(_resize(x_train, image_size)),
        y_train=y_train,
        x_val=_to_rgb(_resize(x_val, image_size)),
        y_val=y_val,
        num_classes=len(class_names),
        class_names=class_names,
        source=source,
    )
    logger.info("Loaded %s: %d train / %d validation images, %d classes, %dx%d",
                source, len(data.x_train), len(data.x_val), data.num_classes, image_size, image_size)
    return data


def _check_arguments(image_size: object, val_fraction: object, limit: object) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"Invalid image_size: expected a positive int, received image_size={image_size!r}")
    if not isinstance(val_fraction, (int, float)) or not 0.0 < val_fraction < 1.0:
        raise DataError(f"Invalid val_fraction: expected a float in (0, 1), received val_fraction={val_fraction!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"Invalid limit: expected a positive int or None, received limit={limit!r}")


def _class_names(source: str, y: np.ndarray, names: list[str] | None) -> list[str]:
    """The name of each class index: the source's own, or the index as a string."""
    num_classes = int(y.max()) + 1 if y.size else 0
    if num_classes < 2:
        raise DataError(f"Dataset {source!r}: needs at least 2 classes, found {num_classes}")
    if names is None:
        return [str(i) for i in range(num_classes)]
    if len(names) < num_classes:
        raise DataError(f"Dataset {source!r}: {len(names)} class_names for labels up to {num_classes - 1}")
    return list(names)


def _split(source: str, read: SourceArrays, val_fraction: float,
           seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_val, y_val)``: the source's own split, else a stratified one."""
    if read.given_split is not None:
        x_train, y_train, x_val, y_val = read.given_split
    else:
        if len(read.x) < 2:
            raise DataError(f"Dataset {source!r}: needs at least 2 images, found {len(read.x)}")
        train_idx, val_idx = stratified_split(read.y, val_fraction, seed)
        x_train, y_train, x_val, y_val = read.x[train_idx], read.y[train_idx], read.x[val_idx], read.y[val_idx]
    if not len(x_train) or not len(x_val):
        raise DataError(
            f"Dataset {source!r}: empty split ({len(x_train)} train, {len(x_val)} validation images)"
        )
    return x_train, y_train, x_val, y_val


def _limit(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``limit`` training images, drawn with ``seed`` and kept in their order."""
    if limit is None or limit >= len(x):
        return x, y
    keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:limit])
    return x[keep], y[keep]
