"""validation/bench_scale.py runs end to end at a tiny size (d = 108, ours only, no devinterp):
every run is its own process with the benchmark's thread settings, writes one JSON line with
the fields the issue-11 table reads, and the table renders from them."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "validation"))
import bench_scale  # noqa: E402

FIELDS = {"e2e_s", "steady_chain_steps_per_s", "chain_steps", "peak_rss_mb", "parent_peak_rss_mb",
          "parent_wall_s", "cpu_per_wall", "llc", "mcse", "import_s", "returncode", "loadavg_before"}


def test_grid_runs_ours_at_a_tiny_size(tmp_path, capsys):
    out = tmp_path / "scale.jsonl"
    bench_scale.main(["grid", "--widths", "6", "--draws", "20", "--repeats", "1",
                      "--contenders", "numpyro-f32", "pyro-f32", "--out", str(out), "--timeout", "120"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    machine, runs = rows[0], rows[1:]
    assert machine["task"] == "machine" and machine["nproc"] >= 1
    assert machine["thread_env"]["XLA_FLAGS"].startswith("--xla_cpu_multi_thread_eigen=false")
    assert [r["name"] for r in runs] == ["numpyro-f32", "pyro-f32"]
    for r in runs:
        assert FIELDS <= set(r), FIELDS - set(r)
        assert r["returncode"] == 0 and r["d"] == 108 and r["draws"] == 20 and r["dtype"] == "float32"
        assert r["chain_steps"] == 4 * 20 and r["e2e_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["steady_chain_steps_per_s"] is None or r["steady_chain_steps_per_s"] > 0
        assert r["finite"]
    assert runs[0]["compile_s"] > 0  # NumPyro: JAX's compile events were seen
    capsys.readouterr()
    bench_scale.main(["table", str(out)])
    text = capsys.readouterr().out
    assert "| 108 | 20 | numpyro-f32 | 1 |" in text and "| 108 | pyro-f32 |" in text
