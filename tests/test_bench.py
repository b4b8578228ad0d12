"""The benchmark command runs end to end and its rows carry what the table promises (not a timing test)."""
import json
import re
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

    with pytest.raises(ValueError, match="no row"):
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
    with pytest.raises(SystemExit, match="plot: cannot read .*No such file"):
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


def _exit_message(argv) -> str:
    """The message main(argv) exits with (a SystemExit, not a traceback: any other exception fails the test)."""
    from pixelops.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert isinstance(e.value.code, str), e.value.code  # a message, exit status 1
    return e.value.code


def _bench_json(path, rows):
    path.write_text(json.dumps(dict(rows=rows)))
    return str(path)


def _row(speedup, shape="8"):
    return dict(op="relu", case="fwd", shape=shape, speedup=speedup)


@pytest.mark.parametrize("content,words", [
    ("[1, 2]", "is not a bench JSON.*'rows' is a list"),      # (AttributeError: 'list' has no .get)
    ("null", "is not a bench JSON.*'rows' is a list"),
    ('{"rows": [1]}', "is not a bench JSON.*row 0 is not an object"),
    ('{"rows": [], "meta": []}', "is not a bench JSON.*'meta' is not an object"),
])
def test_plot_refuses_json_not_shaped_as_the_bench_writes_it(tmp_path, content, words):
    pytest.importorskip("matplotlib")
    (tmp_path / "b.json").write_text(content)
    assert re.match("plot: .*" + words, _exit_message(["plot", str(tmp_path / "b.json"),
                                                       "--out", str(tmp_path / "x.png")]))


def test_plot_of_a_folder_is_refused(tmp_path):
    # (IsADirectoryError)
    pytest.importorskip("matplotlib")
    assert "cannot read" in _exit_message(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")])


def test_plot_leaves_out_speedups_outside_the_axis(tmp_path, capsys):
    # 1e308 took the log axis past float range (OverflowError); such rows are left out and said so
    pytest.importorskip("matplotlib")
    from pixelops.__main__ import main

    path = _bench_json(tmp_path / "b.json", [_row(1e308), _row(1e-308, "9"), _row(1.5, "10")])
    main(["plot", path, "--out", str(tmp_path / "x.png")])
    assert "left out of the picture: 2 row(s)" in capsys.readouterr().out
    assert (tmp_path / "x.png").stat().st_size > 0
    only = _bench_json(tmp_path / "only.json", [_row(1e308)])
    # and no row left names the command that was run, plot (not bench --plot)
    assert _exit_message(["plot", only, "--out", str(tmp_path / "y.png")]).startswith(f"plot: {only}: no row")


@pytest.mark.parametrize("out,words", [
    ("x.xyz", "plot --out x.xyz: expected a file name ending in one of .*png"),     # (blamed the JSON)
    ("c.json", "plot --out c.json: expected a file name ending in"),
    ("noext", "plot --out noext: expected a file name ending in"),  # (wrote noext.png, said "wrote noext")
    ("", "plot --out: expected a file name, got an empty path"),   # (wrote ./.png)
])
def test_plot_checks_its_output_before_reading(tmp_path, monkeypatch, out, words):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    path = _bench_json(tmp_path / "b.json", [_row(1.5)])
    assert re.match(words, _exit_message(["plot", path, "--out", out]))
    # the output is checked first: the same message where the JSON is missing
    assert re.match(words, _exit_message(["plot", str(tmp_path / "missing.json"), "--out", out]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]


def test_plot_blames_the_output_where_it_cannot_be_written(tmp_path):
    # (said "plot: no such file: b.json" where the picture's folder could not be made)
    pytest.importorskip("matplotlib")
    path = _bench_json(tmp_path / "b.json", [_row(1.5)])
    assert _exit_message(["plot", path, "--out", "/proc/p.png"]).startswith("plot --out /proc/p.png: cannot")


def test_refused_commands_make_no_folder(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(bench, "run", lambda **kw: pytest.fail("the bench ran"))
    assert "cannot read" in _exit_message(["plot", str(tmp_path / "nosuch.json"),
                                           "--out", str(tmp_path / "newdir" / "x.png")])
    assert "unknown op" in _exit_message(["bench", "--ops", "nosuch", "--json", str(tmp_path / "new2" / "x.json")])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,words", [
    (["--plot", "{tmp}/b.xyz"], "bench --plot .*b.xyz: expected a file name ending in"),  # (after the run)
    (["--plot", "{tmp}/b"], "bench --plot .*: expected a file name ending in"),  # (wrote b.png, said "wrote b")
    (["--json", "/proc/x.json"], "bench --json /proc/x.json: cannot"),  # (root: a traceback after the run)
    (["--plot", "/proc/x.png"], "bench --plot /proc/x.png: cannot"),
    (["--json", ""], "bench --json: expected a file name, got an empty path"),  # (silently ignored)
    (["--plot", ""], "bench --plot: expected a file name, got an empty path"),
    (["--json", "{tmp}/F.png", "--plot", "{tmp}/F.png"], "--json and --plot name the same file"),  # (PNG over JSON)
    (["--repeats", "99999999999999999999"], "--repeats must be at least 1 and at most 1000"),  # (ran for ever)
])
def test_bench_refuses_bad_outputs_and_repeats_before_the_run(tmp_path, monkeypatch, args, words):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(bench, "run", lambda **kw: pytest.fail("the bench ran"))
    assert re.search(words, _exit_message(["bench", "--ops", "relu", *(a.format(tmp=tmp_path) for a in args)]))
    assert list(tmp_path.iterdir()) == []


def test_bench_opens_its_outputs_before_the_run(tmp_path, monkeypatch):
    # os.access says yes to root where no file can be made (/proc); opening the file says no. As any user: a
    # read-only file is refused before the run, and an existing file is left as it was until the run writes it.
    monkeypatch.setattr(bench, "run", lambda **kw: pytest.fail("the bench ran"))
    import pixelops.__main__ as cli

    monkeypatch.setattr(cli.os, "access", lambda *a, **k: True)
    assert "cannot write there" in _exit_message(["bench", "--json", "/proc/pixelops_test.json"])
    monkeypatch.undo()
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    monkeypatch.setattr(bench, "run", lambda **kw: None)
    from pixelops.__main__ import main

    main(["bench", "--ops", "relu", "--json", str(kept)])
    assert kept.read_text() == "old"
    main(["bench", "--ops", "relu", "--json", str(tmp_path / "new.json")])
    assert not (tmp_path / "new.json").exists()  # the probe's file is removed again


def test_ops_help_lists_the_ops():
    from pixelops.__main__ import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["bench"].format_help()
    assert all(name in text for name in bench.SUITES), text
