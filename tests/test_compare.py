"""compare(): one posterior over backends × samplers, as a DataFrame, CSV/JSON and a plot."""

import json

import numpy as np
import pytest

from pplpatterning import GibbsPosterior, compare
from pplpatterning.cli.main import main
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
    import pplpatterning.workflows.compare as cmp

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


# ------------------------------------------- rows judged by diagnose(trace, target=...)
def _fake_trace(post, mean, *, incomplete_reason=None, seed=0):
    """A Trace as the backends build it, whose λ̂ ≈ mean ± 0.2/√2000 (no sampling)."""
    from pplpatterning.samplers.settings import SamplerSettings
    from pplpatterning.trace import build_trace, run_attrs

    delta = (mean + 0.2 * np.random.default_rng(seed).normal(size=(4, 500))) / post.n_beta
    attrs = run_attrs(post, SamplerSettings(num_chains=4, num_draws=500), backend="numpyro", dtype="float64",
                      packages=(), incomplete_reason=incomplete_reason, sampling_seconds=1.0, evaluation_seconds=0.0)
    return build_trace(posterior={}, sample_stats={"loss": delta + post.loss_at_centre, "loss_delta": delta},
                       attrs=attrs)


def test_off_target_row_has_off_target_in_problems(post):
    from pplpatterning.workflows.compare import trace_row

    row = trace_row(_fake_trace(post, 1.2), target=1.0, wall_s=2.0)  # z ≈ 0.2 / 0.0045 ≈ +45
    assert row["z"] > 3 and row["problems"].split(",")[0] == "off_target" and row["incomplete"] is False
    good = trace_row(_fake_trace(post, 1.0), target=1.0, wall_s=2.0)
    assert abs(good["z"]) < 3 and good["problems"] == ""
    assert trace_row(_fake_trace(post, 1.2), target=None, wall_s=2.0)["z"] is None


def test_compare_marks_off_target_and_incomplete_rows_and_excludes_pairs(post, monkeypatch, tmp_path):
    import pplpatterning.workflows.compare as cmp
    import pplpatterning.plots as plots

    fakes = {"nuts": _fake_trace(post, 1.0), "mala": _fake_trace(post, 1.2),
             "sgld": _fake_trace(post, 1.0, incomplete_reason="interrupted (KeyboardInterrupt) at draw 500")}
    monkeypatch.setattr(cmp, "sample", lambda posterior, **kw: fakes[kw["sampler"]])
    t = compare(post, backends=["numpyro", "pyro"], samplers=["nuts", "mala", "sgld"],
                exclude=["pyro.nuts", ("pyro", "mala"), "pyro.sgld"])
    assert list(t["sampler"]) == ["nuts", "mala", "sgld"] and set(t["backend"]) == {"numpyro"}
    assert {"z", "incomplete", "problems"} <= set(t.columns)
    assert t["problems"].tolist()[0] == "" and "off_target" in t["problems"][1] and t["z"][1] > 3
    assert bool(t["incomplete"][2]) and "incomplete" in t["problems"][2]
    # The plot draws the flagged rows red, with a "finding" legend entry.
    figs = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi=120: figs.append(fig) or path)
    plots.plot_comparison(t, tmp_path / "c.png")
    ax = figs[0].axes[0]
    assert any("finding" in text.get_text() for text in ax.get_legend().get_texts())
    colors = [tick.get_color() for tick in ax.get_yticklabels()]
    assert colors[0] != plots.FINDING_COLOR and colors[1] == colors[2] == plots.FINDING_COLOR
    for bad in (["stan.nuts"], ["numpyro"], ["numpyro.nuts", "numpyro.mala", "numpyro.sgld", "pyro.nuts",
                                              "pyro.mala", "pyro.sgld"]):
        with pytest.raises(ValueError, match="`exclude`"):
            compare(post, backends=["numpyro", "pyro"], samplers=["nuts", "mala", "sgld"], exclude=bad)
