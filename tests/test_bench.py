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


def test_bench_command_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "pixelops", "bench", "--ops", "relu", "--repeats", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "speedup" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {r["case"] for r in rows} >= {"fwd", "fwd+bwd", "per-call"}
    for r in rows:
        assert r["error"] < 1e-6 and r["torch_ms"] > 0 and r["pixelops_ms"] > 0
