"""The chi command: table, --json, response matrix and plot, and errors (exit 2) before sampling."""

import json
import re

import pandas as pd
import pytest

import pplpatterning.sampling.core as sampling
from pplpatterning.cli.main import main

FAST = ["--model", "regular", "--n", "100", "--draws", "300", "--burnin", "200", "--no-progress", "--gamma", "5"]


def test_chi_json_matrix_and_plot(capsys, tmp_path):
    csv, png = tmp_path / "chi.csv", tmp_path / "pcs.png"
    code = main(["chi", *FAST, "--probe", "head:rows=0-49", "--probe", "shift:w_true=(1,-1)", "--observable", "loss",
                 "--observable", "param:w:0", "--observable", "param:w:1", "--per-sample", "all", "--json",
                 "--save-matrix", str(csv), "--plot", str(png)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    rows = {(r["probe"], r["observable"]): r for r in out["chi"]}
    assert set(rows) == {(p, o) for p in ("head", "shift") for o in ("loss", "w_0", "w_1")}
    for r in rows.values():
        assert r["se"] > 0 and r["jacobian"] == pytest.approx(out["n_beta"] * r["chi"], rel=1e-12)
    # Shifting the data toward w = (1, -1) pulls E[w0] up and E[w1] down: J = d/dh E_h[w].
    assert rows[("shift", "w_0")]["jacobian"] > 4 * rows[("shift", "w_0")]["jacobian_se"]
    assert rows[("shift", "w_1")]["jacobian"] < -4 * rows[("shift", "w_1")]["jacobian_se"]
    assert all(abs(v) < 1e-12 for v in out["sum_chi_z"].values())
    matrix = pd.read_csv(csv)
    assert list(matrix.columns) == ["sample", "observable", "chi", "se", "jacobian", "jacobian_se"]
    assert len(matrix) == 100 * 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["plot_saved_to"] == str(png)


def test_chi_table(capsys, tmp_path):
    assert main(["chi", *FAST, "--probe", "fresh", "--save-matrix", str(tmp_path / "m.nc")]) == 0
    out = capsys.readouterr().out
    for label in ("χ ± se", "J ± se", "ESS", "fresh", "loss", "matrix saved to"):
        assert label in out


@pytest.mark.parametrize("argv, message", [
    (["--probe", "p:rows=0-500"], r"rows must lie in \[0, 100\)"),
    (["--probe", "p:sigma=-1"], "sigma"),
    (["--probe", "a", "--probe", "a"], "must be distinct"),
    (["--observable", "weights"], "--observable 'weights'"),
    (["--observable", "param:v:0"], "unknown parameter"),
    (["--plot", "x.png"], "--plot needs at least 2 rows"),
    (["--save-matrix", "x.txt"], r"use a file ending in \.csv or \.nc"),
    (["--per-sample", "all", "--draws", "1000000000"], r"num_draws ≤ \d+"),
    (["--sampler", "sgld", "--loss-estimate", "minibatch", "--batch-size", "10"], "loss_estimate='full'"),
])
def test_bad_input_exits_2_before_sampling(capsys, monkeypatch, argv, message):
    monkeypatch.setattr(sampling, "get_backend", lambda name: pytest.fail("validation let it reach the backend"))
    assert main(["chi", *FAST, *argv]) == 2
    err = capsys.readouterr().err
    assert "pplpatterning chi: error:" in err
    assert re.search(message, err), err


def test_malformed_probe_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["chi", *FAST, "--probe", "p:wat"])
    assert exc.value.code == 2
    assert "'wat' is not KEY=VALUE" in capsys.readouterr().err
