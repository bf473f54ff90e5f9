"""compare(): one posterior over backends × samplers, as a DataFrame, CSV/JSON and a plot."""

import json

import numpy as np
import pytest

from pplpatterning import GibbsPosterior, compare
from pplpatterning.cli import main
from pplpatterning.models import get_model
from pplpatterning.plots import plot_comparison


@pytest.fixture(scope="module")
def post():
    model = get_model("regular", d=2)
    return GibbsPosterior(model, model.generate(300, seed=0))


@pytest.fixture(scope="module")
def table(post):
    return compare(post, backends=["numpyro"], samplers=["nuts", "sgld"],
                   sampler_options={"sgld": {"step_size": 5e-4}}, num_draws=500, num_burnin=300, seed=1)


def test_rows_and_columns(table):
    assert list(table["sampler"]) == ["nuts", "sgld"]
    np.testing.assert_allclose(table["target"].astype(float), 1.0, rtol=1e-12)
    assert (table["lambda_exact"] == 1.0).all()
    assert table["step_size"].iloc[1] == 5e-4
    for col in ("llc", "mcse", "rhat", "ess_bulk", "ess_per_s", "wall_s"):
        assert np.all(np.isfinite(table[col].astype(float))), col
    np.testing.assert_allclose(table["z"], (table["llc"] - 1.0) / table["mcse"], rtol=1e-12)
    nuts = table.iloc[0]
    assert abs(nuts["z"]) < 4 and nuts["rhat"] <= 1.01


def test_plot_is_a_png(table, tmp_path):
    path = plot_comparison(table, tmp_path / "c.png", title="regular")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validation_before_any_run(post):
    with pytest.raises(ValueError, match="`backends` entry 'stan'"):
        compare(post, backends=["stan"])
    with pytest.raises(ValueError, match=r"`sampler_options` names samplers not in `samplers`: \['mala'\]"):
        compare(post, backends=["numpyro"], samplers=["nuts"], sampler_options={"mala": {}})
    with pytest.raises(ValueError, match="`step_size` must be a finite positive number"):
        compare(post, backends=["numpyro"], samplers=["sgld"], sampler_options={"sgld": {"step_size": -1.0}})
    with pytest.raises(ValueError, match="Unknown option"):
        compare(post, backends=["numpyro"], samplers=["sgld"], sampler_options={"sgld": {"alpha": 0.9}})


def test_a_failing_run_keeps_its_row(post, monkeypatch):
    import pplpatterning.comparison as cmp

    real = cmp.sample

    def flaky(posterior, **kw):
        if kw["sampler"] == "mala":
            raise RuntimeError("boom")
        return real(posterior, **kw)

    monkeypatch.setattr(cmp, "sample", flaky)
    t = compare(post, backends=["numpyro"], samplers=["mala", "nuts"], num_draws=100, num_burnin=100)
    assert t.iloc[0]["error"] == "RuntimeError: boom" and np.isnan(t.iloc[0]["llc"])
    assert t.iloc[1]["error"] == "" and np.isfinite(t.iloc[1]["llc"])


def test_cli_compare_json_csv_plot(capsys, tmp_path):
    code = main(["compare", "--model", "regular", "--gamma", "0", "--n", "200", "--backends", "numpyro",
                 "--samplers", "mala", "sgld", "--step-size", "sgld=5e-4", "--draws", "200", "--burnin", "100",
                 "--no-progress", "--json", "--csv", str(tmp_path / "t.csv"), "--plot", str(tmp_path / "t.png")])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["sampler"] for r in rows] == ["mala", "sgld"]
    assert (tmp_path / "t.csv").read_text().startswith("backend,sampler,llc")
    assert (tmp_path / "t.png").exists()
    assert main(["compare", "--model", "regular", "--samplers", "nuts", "--step-size", "sgld=1e-3"]) == 2
    assert "not in --samplers" in capsys.readouterr().err
