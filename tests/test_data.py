"""Dataset loading: digits, image folders, npz files and the error messages."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sweep.errors import DataError
from workers.child.data import load_dataset, stratified_split

COLORS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def _write_folder(root, counts: dict[str, int], size: tuple[int, int] = (20, 12)) -> None:
    """One class per colour; each image is mostly that colour so labels can be checked."""
    for name, n in counts.items():
        os.makedirs(root / name, exist_ok=True)
        for i in range(n):
            Image.new("RGB", size, COLORS[name]).save(root / name / f"{i}.png")


def test_digits_shapes_ranges_and_stratified_split():
    data = load_dataset("digits", image_size=32)
    assert data.x_train.shape[1:] == (32, 32, 3) and data.x_val.shape[1:] == (32, 32, 3)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert len(data.x_train) + len(data.x_val) == 1797  # scikit-learn's bundled set, all of it
    assert len(data.x_val) == pytest.approx(0.2 * 1797, abs=10)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0 and data.x_train.max() > 0.9
    assert np.array_equal(data.x_train[..., 0], data.x_train[..., 2])  # grey copied to 3 channels
    assert data.num_classes == 10 and data.class_names == [str(i) for i in range(10)]
    # Stratified: every class keeps about its share on the validation side.
    share = np.bincount(data.y_val, minlength=10) / np.bincount(np.concatenate([data.y_train, data.y_val]))
    assert np.allclose(share, 0.2, atol=0.02)


def test_digits_split_is_determined_by_the_seed():
    a = load_dataset("digits", image_size=32, seed=3)
    b = load_dataset("digits", image_size=32, seed=3)
    c = load_dataset("digits", image_size=32, seed=4)
    assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.y_val, c.y_val)


def test_limit_caps_training_images_only():
    full = load_dataset("digits", image_size=32)
    data = load_dataset("digits", image_size=32, limit=100)
    assert len(data.x_train) == 100 and len(data.x_val) == len(full.x_val)


def test_stratified_split_keeps_small_classes_on_both_sides():
    y = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    train, val = stratified_split(y, 0.2, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(10))
    assert set(y[train]) == {0, 1, 2} and set(y[val]) == {0, 1, 2}


def test_dir_source_reads_class_folders(tmp_path):
    _write_folder(tmp_path, {"red": 5, "green": 5, "blue": 5})
    Image.new("L", (9, 9), 128).save(tmp_path / "red" / "grey.png")  # grey + other size is fine
    (tmp_path / "red" / "notes.txt").write_text("not an image, skipped")
    data = load_dataset(f"dir:{tmp_path}", image_size=16, val_fraction=0.4, seed=1)
    assert data.class_names == ["blue", "green", "red"] and data.num_classes == 3
    assert len(data.x_train) + len(data.x_val) == 16 and data.x_val.shape[1:] == (16, 16, 3)
    assert set(data.y_val) == {0, 1, 2}
    colour_means = [
        (x.mean(axis=(0, 1)), y) for x, y in zip(data.x_train, data.y_train, strict=True) if x[..., 0].std() == 0
    ]
    colour_means = [(m, y) for m, y in colour_means if not np.allclose(m, m[0])]  # drop the grey image
    assert len(colour_means) >= 8
    for mean, y in colour_means:
        assert np.allclose(mean, np.array(COLORS[data.class_names[y]]) / 255.0, atol=1e-3)


def test_npz_source_with_x_y(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 8, 8), dtype=np.uint8)
    y = np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}", image_size=32, val_fraction=0.2)
    assert data.x_train.shape == (32, 32, 32, 3) and data.x_val.shape == (8, 32, 32, 3)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.num_classes == 4 and np.bincount(data.y_val).tolist() == [2, 2, 2, 2]


def test_npz_source_with_explicit_split(tmp_path):
    x_train = np.random.default_rng(0).random((6, 32, 32, 3), dtype=np.float32)
    x_val = np.random.default_rng(1).random((3, 32, 32, 3), dtype=np.float32)
    np.savez(tmp_path / "s.npz", x_train=x_train, y_train=[0, 1, 2, 0, 1, 2], x_val=x_val, y_val=[2, 1, 0],
             class_names=np.array(["a", "b", "c"]))
    data = load_dataset(f"npz:{tmp_path / 's.npz'}", image_size=32)
    assert np.array_equal(data.x_train, x_train) and np.array_equal(data.x_val, x_val)
    assert data.y_val.tolist() == [2, 1, 0] and data.class_names == ["a", "b", "c"]


@pytest.mark.parametrize(
    "make, source, message",
    [
        (None, "dir:{tmp}/missing", "folder '{tmp}/missing' does not exist"),
        (lambda tmp: None, "dir:{tmp}", "has no class sub-folders"),
        (lambda tmp: (tmp / "a").mkdir() or (tmp / "b").mkdir(), "dir:{tmp}", "no images found in '{tmp}'"),
        (lambda tmp: _write_folder(tmp, {"red": 2}) or (tmp / "empty").mkdir(), "dir:{tmp}",
         "class folder(s) ['empty'] contain no images"),
        (lambda tmp: _write_folder(tmp, {"red": 2, "blue": 2}) or (tmp / "red" / "bad.png").write_bytes(b"junk"),
         "dir:{tmp}", "cannot read image '{tmp}/red/bad.png'"),
        (lambda tmp: _write_folder(tmp, {"red": 3}), "dir:{tmp}", "needs at least 2 classes, found 1"),
        (None, "npz:{tmp}/none.npz", "file '{tmp}/none.npz' does not exist"),
        (lambda tmp: np.savez(tmp / "k.npz", images=np.zeros((2, 8, 8))), "npz:{tmp}/k.npz",
         "expected keys x, y or x_train, y_train, x_val, y_val, found ['images']"),
        (lambda tmp: np.savez(tmp / "f.npz", x=np.full((4, 8, 8), 200.0), y=[0, 1, 0, 1]), "npz:{tmp}/f.npz",
         "float x must be finite and in [0, 1]"),
        (lambda tmp: np.savez(tmp / "y.npz", x=np.zeros((4, 8, 8)), y=[0, 1, 0]), "npz:{tmp}/y.npz",
         "y must be 4 non-negative integer labels"),
        (None, "csv:{tmp}/a.csv", "unknown source 'csv:{tmp}/a.csv'"),
        (None, "dir:", "missing the part after 'dir:'"),
    ],
)
def test_errors_name_the_source_and_the_problem(tmp_path, make, source, message):
    if make is not None:
        make(tmp_path)
    source, message = source.format(tmp=tmp_path), message.format(tmp=tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset(source, image_size=32)
    assert message in str(info.value)
    assert repr(source) in str(info.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 0}, "Invalid image_size: expected a positive int, received image_size=0"),
        ({"val_fraction": 1.0}, "Invalid val_fraction: expected a float in (0, 1), received val_fraction=1.0"),
        ({"limit": -5}, "Invalid limit: expected a positive int or None, received limit=-5"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(DataError) as info:
        load_dataset("digits", **{"image_size": 32, **kwargs})
    assert message in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is not None, reason="tensorflow-datasets installed")
def test_tfds_without_the_package_says_how_to_install():
    with pytest.raises(DataError, match="pip install tensorflow-datasets"):
        load_dataset("tfds:mnist", image_size=32)


def test_loader_imports_neither_keras_nor_tensorflow():
    # Backend-agnostic: a KERAS_BACKEND=jax worker must be able to load data without TF.
    code = (
        "import sys; from workers.child.data import load_dataset; d = load_dataset('digits', image_size=32, limit=50); "
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; assert not bad, bad; print(len(d.x_train))"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "50"
