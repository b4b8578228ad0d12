"""The benchmark command runs end to end and its rows carry what the table promises (not a timing test)."""
import json
import subprocess
import sys

import pytest

from pixelops import bench


def test_every_suite_has_cpu_cases():
    for name in bench.SUITES:
        cases = bench.collect("cpu", [name])
        assert cases, name
        assert all(c.device == "cpu" for c in cases)
        assert any(c.op == name for c in cases), name  # a suite may add related ops (conv2d: masked_conv2d)


def test_unknown_op_is_refused():
    with pytest.raises(SystemExit, match="unknown op"):
        bench.collect("cpu", ["relu", "nope"])


def test_bench_command_writes_json_and_a_picture(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "speedups.png"
    proc = subprocess.run([sys.executable, "-m", "pixelops", "bench", "--ops", "relu", "--repeats", "2",
                           "--json", str(out), "--plot", str(png)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "speedup" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {r["case"] for r in rows} >= {"fwd", "fwd+bwd", "per-call"}
    for r in rows:
        assert r["error"] < 1e-6 and r["torch_ms"] > 0 and r["pixelops_ms"] > 0
    # one bar per row and per geometric mean: the picture grows with them
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 500
        height = im.size[1]
    again = tmp_path / "again.png"
    proc = subprocess.run([sys.executable, "-m", "pixelops", "plot", str(out), "--out", str(again)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with Image.open(again) as im:
        assert im.size[1] == height
    data = json.loads(out.read_text())
    data["rows"] = data["rows"][:1]
    out.write_text(json.dumps(data))
    one = tmp_path / "one.png"
    assert subprocess.run([sys.executable, "-m", "pixelops", "plot", str(out), "--out", str(one)],
                          capture_output=True, timeout=300).returncode == 0
    with Image.open(one) as im:
        assert im.size[1] < height


def test_plot_refuses_rows_without_speedups(tmp_path):
    from pixelops.bench.plot import plot

    with pytest.raises(SystemExit, match="no row"):
        plot([dict(op="relu", case="fwd", shape="8", speedup=float("nan"))], str(tmp_path / "x.png"))


def test_command_checks_its_files_before_the_run(tmp_path, monkeypatch):
    # an output that cannot be written ends the command before any timing, not in a traceback after it
    from pixelops.__main__ import main

    monkeypatch.setattr(bench, "run", lambda **kw: pytest.fail("the bench ran"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="bench --json .*cannot make the folder"):
        main(["bench", "--ops", "relu", "--json", str(blocker / "out.json")])
    with pytest.raises(SystemExit, match="bench --plot .*cannot write there"):
        main(["bench", "--ops", "relu", "--plot", str(tmp_path)])  # a folder, not a file
    with pytest.raises(SystemExit, match="plot: no such file"):
        main(["plot", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.png")])
    (tmp_path / "other.json").write_text('{"rows_of": []}')
    with pytest.raises(SystemExit, match="is not a bench JSON"):
        main(["plot", str(tmp_path / "other.json"), "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="--repeats must be at least 1"):  # (-3 ended in a StatisticsError)
        main(["bench", "--ops", "relu", "--repeats", "-3"])
    with pytest.raises(SystemExit, match="name at least one op"):  # (',' ran every op)
        main(["bench", "--ops", ","])
    # a missing folder is made
    called = {}
    monkeypatch.setattr(bench, "run", lambda **kw: called.update(kw))
    main(["bench", "--ops", "relu", "--json", str(tmp_path / "new" / "dir" / "out.json")])
    assert (tmp_path / "new" / "dir").is_dir() and called["json_path"].endswith("out.json")
