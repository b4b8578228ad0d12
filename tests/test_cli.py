"""The command line's handling of bad input for `pixelcnn` (its data and --out), and the progress bar the
commands draw. (bench and plot: test_bench.py; train-mnist: test_train_mnist.py.)"""
import io

import numpy as np
import pytest

from pixelops import data


def _idx(folder, n_train=40, n_test=10, size=28):
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        data.write_idx(str(folder), split, rng.random((n, 1, size, size)).astype(np.float32), rng.integers(0, 10, n))
    return str(folder)


@pytest.mark.parametrize("files,words", [
    (None, "not found in"),                                            # (FileNotFoundError)
    ("corrupt", "truncated or malformed"),                             # (ValueError)
    (dict(size=20), "holds 20x20 images, expected MNIST's 28x28"),     # (after training: 'observed' must have...)
    (dict(n_test=0), "t10k-images-idx3-ubyte' holds no images"),       # (torch.cat() of an empty list)
    (dict(n_train=0), "train-images-idx3-ubyte' holds no images"),     # (trained on nothing, exit status 0)
])
def test_pixelcnn_checks_its_data_before_training(tmp_path, monkeypatch, files, words):
    from pixelops.__main__ import main
    from pixelops.pixelcnn import demo

    monkeypatch.setattr(demo.PixelCNN, "__init__", lambda *a, **k: pytest.fail("it built a model to train"))
    folder = tmp_path / "mnist"
    if files == "corrupt":
        _idx(folder)
        with open(folder / "train-images-idx3-ubyte", "r+b") as f:
            f.truncate(100)
    elif files is not None:
        _idx(folder, **files)
    pictures = tmp_path / "pictures"
    with pytest.raises(SystemExit, match=f"pixelcnn --data {folder}: .*{words}"):
        main(["pixelcnn", "--data", str(folder), "--out", str(pictures), "--epochs", "1"])
    assert not pictures.exists()  # the pictures' folder waits for the data's checks


def test_pixelcnn_refuses_an_empty_out(monkeypatch):
    # (os.makedirs('') raised FileNotFoundError after the early check had passed)
    from pixelops.__main__ import main
    from pixelops.pixelcnn import demo

    monkeypatch.setattr(demo, "run", lambda **kw: pytest.fail("the demo ran"))
    with pytest.raises(SystemExit, match="pixelcnn --out: expected a folder, got an empty path"):
        main(["pixelcnn", "--out", ""])


def test_pixelcnn_inpaints_the_test_digits_there_are(tmp_path):
    # fewer than 8 held-out digits: inpainting takes them all ('observed' must have shape (8,1,28,28) after
    # training, where the picture wanted 8)
    pytest.importorskip("PIL", reason="the command writes its pictures with pillow (pip install 'pixelops[demo]')")
    from pixelops.pixelcnn.demo import run

    folder = _idx(tmp_path / "mnist", n_train=64, n_test=3)
    result = run(data=folder, epochs=1, out=str(tmp_path / "pictures"), channels=8, layers=1, batch=64,
                 timing_images=1)
    assert (tmp_path / "pictures" / "inpainting.png").stat().st_size > 0 and np.isfinite(result["nll"])


class _Terminal(io.StringIO):
    """A stream that says it is a terminal; screen() is what one would show (a carriage return moves the
    cursor to the line's start, and what is written there overwrites what was)."""

    def isatty(self):
        return True

    def screen(self):
        lines, line, col = [], [], 0
        for ch in self.getvalue():
            if ch == "\r":
                col = 0
            elif ch == "\n":
                lines.append("".join(line).rstrip())
                line, col = [], 0
            else:
                line[col:col + 1] = [ch]
                col += 1
        return lines + (["".join(line).rstrip()] if line else [])


def test_progress_bar_redraw_clears_a_longer_line():
    # (a redraw shorter than the line before left its last characters: loss=2.316 read where the value was 2)
    from pixelops.progress import progress

    term = _Terminal()
    bar = progress(total=2, desc="epoch 1", stream=term)
    bar.set(loss=2.316)
    bar.update()
    bar.set(loss=2)
    bar.update()
    bar.close()
    (last,) = term.screen()
    assert last.endswith("loss=2"), last
