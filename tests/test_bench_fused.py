"""validation/bench_fused.py runs, and its loop is SGLD: from w* with a vanishing step the
minibatch loss stays at the centre's, and the rate it reports is positive."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "validation"))
import bench_fused  # noqa: E402


def test_fused_loop_runs_and_reports_a_rate():
    row = bench_fused.fused_rate(4, "float64", 20)
    assert row["d"] == 48 and row["steps"] == 20 and row["chain_steps_per_s"] > 0
    # At w* (ε = 1e-5 barely moves the chains in 20 steps) the per-sample loss is ||ξ||²/2 with
    # 4 unit-noise outputs: mean 2, sd 1; over 256 rows × 4 chains the mean's sd is 1/√1024 ≈ 0.03,
    # so ±0.5 is beyond 15 sd (a smoke test of the loop, not a statistical check).
    assert abs(row["final_minibatch_loss"] - 2.0) < 0.5
