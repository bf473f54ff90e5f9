"""The quick validation run (validation/run_validation.py --quick) as CI assertions (issue 4).

At the documented settings (validation/settings.py, which explains every number):
- regular and quasi-homogeneous m = 1 models: λ̂ within 4 MCSE of the exact finite-nβ target;
- RRR and DLN at safe centres (w* = 0, r = 0, m = 1): λ̂ within 15 % of λ;
- every row: R-hat ≤ 1.01.
The rows run in-process through the runner's own functions (~3 minutes on 2 cores); the
fast tests below check the runner's pieces (null data, the RRR reference target, the plan,
the checks and the report) on their own.
"""

import math

import numpy as np
import pandas as pd
import pytest

from pplpatterning import GibbsPosterior
from pplpatterning.cli.main import main
from pplpatterning.cli.validate import load_validation_runner
from pplpatterning.models import MODELS, get_model
from pplpatterning.samplers.settings import SAMPLERS


@pytest.fixture(scope="module")
def runner():
    return load_validation_runner()


@pytest.fixture(scope="module")
def quick(runner, tmp_path_factory):
    out = tmp_path_factory.mktemp("validation")
    table, _, report = runner.run_validation("quick", out_dir=out, curves=False, log=None)
    return table, report


# ------------------------------------------------------------- the CI assertions
@pytest.mark.slow
def test_quick_rows_ran_and_converged(quick):
    table, _ = quick
    assert (table["error"].fillna("") == "").all(), table.loc[table["error"] != "", ["case", "error"]]
    bad = table[~(table["rhat"] <= 1.01)]
    assert bad.empty, f"R-hat > 1.01:\n{bad[['case', 'backend', 'sampler', 'rhat']]}"


@pytest.mark.slow
def test_quick_covers_every_backend_and_sampler(quick):
    table, _ = quick
    pairs = set(zip(table["backend"], table["sampler"]))
    assert pairs == {(b, s) for b in ("numpyro", "pyro") for s in SAMPLERS}


@pytest.mark.slow
def test_regular_and_quasi_homogeneous_within_4_mcse_of_exact_target(quick):
    table, _ = quick
    rows = table[table["case"].isin(["regular", "powers", "norm_power"])]
    assert set(rows["case"]) == {"regular", "powers", "norm_power"}
    assert (rows["multiplicity"] == 1).all() and rows["target"].notna().all()
    for r in rows.itertuples():
        assert abs(r.llc - r.target) <= 4 * r.mcse, (
            f"{r.case} {r.backend}/{r.sampler}: λ̂ = {r.llc:.4f} ± {r.mcse:.4f}, target {r.target:.4f}")


@pytest.mark.slow
def test_rrr_and_dln_within_15_percent_of_lambda(quick):
    table, _ = quick
    rows = table[table["case"].isin(["rrr", "dln"])]
    assert set(rows["case"]) == {"rrr", "dln"}
    assert (rows["multiplicity"] == 1).all()
    for r in rows.itertuples():
        assert abs(r.llc / r.lambda_exact - 1) <= 0.15, f"{r.case} {r.backend}/{r.sampler}: λ̂/λ = {r.llc / r.lambda_exact:.3f}"
    # RRR also has an exact reference (singular-value quadrature): hold it to 4 MCSE as well.
    rrr = rows[rows["case"] == "rrr"]
    assert (abs(rrr["llc"] - rrr["target"]) <= 4 * rrr["mcse"]).all()


@pytest.mark.slow
def test_every_quick_row_passes_its_documented_check(quick, runner):
    table, _ = quick
    assert runner.check_rows(table) == []


@pytest.mark.slow
def test_quick_report_and_figure(quick):
    table, report = quick
    text = report.read_text()
    assert "Date:" in text and "seed" in text and "## Settings" in text
    for r in table.itertuples():
        assert f"| {r.case} | {r.backend} | {r.sampler} |" in text
    assert (report.parent / "figures" / "llc_vs_target.png").stat().st_size > 10_000


# ------------------------------------------------------------ the runner's pieces
def test_null_data_make_the_centre_an_exact_minimum(runner):
    model = get_model("rrr", M=2, N=2, H=2, r=0)
    data = runner.null_data(model, 200, seed=1)
    x, y = data["x"], data["y"]
    np.testing.assert_allclose(x.T @ x / 200, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(x.T @ y, 0, atol=1e-10)
    np.testing.assert_allclose((np.tanh(x) ** 3).T @ y, 0, atol=1e-10)  # Σ y g(x) = 0 for every g
    post = GibbsPosterior(model, data, n_beta=50.0, gamma=1.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        A, B = rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
        K = 0.5 * np.sum((B @ A) ** 2)
        assert post.loss({"A": A, "B": B}) - post.loss_at_centre == pytest.approx(K, rel=1e-10)
    with pytest.raises(ValueError, match="even"):
        runner.null_data(model, 201, seed=0)
    with pytest.raises(ValueError, match="truth is zero"):
        runner.null_data(get_model("rrr", M=2, N=2, H=2, r=1), 200, seed=0)


def test_rrr_reference_target(runner):
    # Both factorisation sides of (M, N, H) = (3, 2, 2) are 2-D integrals of different densities.
    a = runner.rrr_side_integral(2, 3, 2, n_beta=1000.0, gamma=1.0)
    b = runner.rrr_side_integral(2, 2, 3, n_beta=1000.0, gamma=1.0)
    assert a == pytest.approx(b, rel=1e-5)
    # (1, 1, 1) is the product model y = a·b·x, whose own quadrature target is independent code.
    model = get_model("product")
    data = runner.null_data(model, 1000, seed=0)
    for nb, g in [(100.0, 1.0), (1e4, 0.5), (10.0, 3.0)]:
        post = GibbsPosterior(model, data, n_beta=nb, gamma=g)
        assert runner.rrr_null_target(1, 1, 1, nb, g) == pytest.approx(model.target_fn(post), rel=1e-5)
    # It depends on nβ and γ only through t = γ/√nβ, and approaches λ = 3/2 as t → 0 (m = 1).
    assert runner.rrr_null_target(2, 2, 2, 100.0, 1.0) == pytest.approx(
        runner.rrr_null_target(2, 2, 2, 1e4, 10.0), rel=1e-6)
    values = [runner.rrr_null_target(2, 2, 2, 1e4, g) for g in (10.0, 1.0, 0.1, 0.01)]
    assert np.all(np.diff(values) > 0) and 1.49 < values[-1] < 1.5
    assert runner.rrr_null_target(2, 2, 2, 1e3, 0.0) is None
    assert runner.rrr_null_target(3, 3, 3, 1e3, 1.0) is None  # both sides have 3 singular values


def test_plan_covers_every_zoo_model_and_validates_names(runner):
    full = runner.plan("full")
    models = {runner.S.CASES[c].model for c, _, _ in full}
    assert models == set(MODELS), f"zoo models without a validation case: {set(MODELS) - models}"
    assert {(b, s) for _, b, s in full} == {(b, s) for b in ("numpyro", "pyro") for s in SAMPLERS}
    assert set(runner.plan("quick")) <= set(full)
    for kwargs, match in [(dict(cases=["nope"]), "`cases`"), (dict(backends=["stan"]), "`backends`"),
                          (dict(samplers=["gibbs"]), "`samplers`")]:
        with pytest.raises(ValueError, match=match):
            runner.plan("quick", **kwargs)
    with pytest.raises(ValueError, match="`mode`"):
        runner.plan("medium")


def test_row_seeds_are_fixed_and_distinct(runner):
    a = runner.row_seed(1, "regular", "numpyro", "nuts")
    assert a == runner.row_seed(1, "regular", "numpyro", "nuts")
    assert len({runner.row_seed(s, c, "numpyro", "nuts") for s in (1, 2) for c in ("regular", "rrr")}) == 4


def _synthetic_table(runner):
    rows = []
    for case, sampler, llc, mcse, rhat in [("regular", "nuts", 1.01, 0.02, 1.001), ("regular", "sgld", 1.2, 0.02, 1.0),
                                           ("rrr", "nuts", 1.40, 0.03, 1.002), ("rrr", "mala", 1.0, 0.03, 1.05)]:
        c = runner.S.CASES[case]
        target = 1.0 if case == "regular" else 1.4418
        row = dict(case=case, model=c.label(), backend="numpyro", sampler=sampler, lambda_exact=1.0 if case ==
                   "regular" else 1.5, multiplicity=1, target=target, target_source="target_fn", n_beta=100.0,
                   gamma=c.gamma, llc=llc, mcse=mcse, z=(llc - target) / mcse, ratio_lambda=llc / (
                       1.0 if case == "regular" else 1.5), rhat=rhat, ess_bulk=1000.0, ess_tail=1000.0,
                   mala_acceptance=math.nan, wall_s=1.0, settings="4×1000", check=c.check, problems="", error="")
        row["passed"], row["failure"] = runner.judge_row(row, c.check)
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=runner.ROW_COLUMNS)


def test_checks_and_report_on_a_synthetic_table(runner, tmp_path):
    table = _synthetic_table(runner)
    assert list(table["passed"]) == [True, False, True, False]
    assert "|z| = 10.0 > 4" in table["failure"][1]
    assert "R-hat 1.050 > 1.01" in table["failure"][3] and "λ̂/λ = 0.667" in table["failure"][3]
    assert len(runner.check_rows(table)) == 2
    curves = pd.DataFrame([dict(case="rrr", model="rrr", kind=k, n_beta=nb, value=v, mcse=0.02 if k == "estimate"
                                else math.nan, rhat=1.0, lambda_exact=1.5, source="s")
                           for k, nb, v in [("target", 10.0, 1.1), ("target", 1e3, 1.44), ("estimate", 1e3, 1.42)]])
    path = runner.write_report(table, curves, tmp_path, mode="quick", seed=7, wall_s=60.0)
    text = path.read_text()
    assert "seed 7" in text and "failing their check: 2" in text and "✗" in text
    assert (tmp_path / "figures" / "llc_vs_target.png").exists() and (tmp_path / "figures" / "nbeta_curves.png").exists()


def test_cli_validate_rejects_unknown_case(capsys):
    with pytest.raises(SystemExit) as info:
        main(["validate", "--quick", "--cases", "nope"])
    assert info.value.code == 2
    assert "--cases" in capsys.readouterr().err


# ------------------------------------------------- findings: diagnose(trace, target=...)
def _fake_trace(post, mean, incomplete_reason=None):
    from pplpatterning.samplers.settings import SamplerSettings
    from pplpatterning.trace import build_trace, run_attrs

    x = np.random.default_rng(0).normal(size=(4, 1000))
    delta = (mean + 0.2 * (x - x.mean())) / post.n_beta  # λ̂ = mean exactly, MCSE ≈ 0.2/√4000
    attrs = run_attrs(post, SamplerSettings(num_chains=4, num_draws=1000), backend="numpyro", dtype="float64",
                      packages=(), incomplete_reason=incomplete_reason, sampling_seconds=1.0, evaluation_seconds=0.0)
    return build_trace(posterior={}, sample_stats={"loss": delta + post.loss_at_centre, "loss_delta": delta},
                       attrs=attrs)


def test_rows_carry_diagnose_findings_against_their_target(runner, monkeypatch):
    post = runner.build_posterior(runner.S.CASES["regular"])
    target = runner.reference_target(runner.S.CASES["regular"], post)
    fakes = iter([_fake_trace(post, target[0] + 0.0115), _fake_trace(post, target[0]),
                  _fake_trace(post, target[0], incomplete_reason="interrupted (KeyboardInterrupt)")])
    monkeypatch.setattr(runner, "sample", lambda *a, **k: next(fakes))
    # MCSE ≈ 0.2/√4000 ≈ 0.0032: z ≈ +3.6, a finding (|z| > 3) that still passes the 4-MCSE check.
    off = runner.run_row("regular", "numpyro", "nuts", 0, posterior=post, target=target)
    assert 3 < off["z"] <= 4 and off["problems"] == "off_target" and off["passed"]
    on = runner.run_row("regular", "numpyro", "nuts", 0, posterior=post, target=target)
    assert abs(on["z"]) < 3 and on["problems"] == "" and on["passed"]
    cut = runner.run_row("regular", "numpyro", "nuts", 0, posterior=post, target=target)
    assert cut["incomplete"] and "incomplete" in cut["problems"] and not cut["passed"]
    assert "run incomplete" in cut["failure"] and "KeyboardInterrupt" in cut["notes"]


def test_report_and_figure_show_findings(runner, tmp_path, monkeypatch):
    import pplpatterning.plots as plots

    table = _synthetic_table(runner)
    table.loc[0, "problems"] = "off_target"  # a passing row with a finding
    figs = []
    real_save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi=120: figs.append(fig) or real_save(fig, path))
    text = runner.write_report(table, pd.DataFrame(), tmp_path, mode="quick", seed=7, wall_s=1.0).read_text()
    assert "with a diagnose() finding: 1" in text and "⚠ off_target" in text
    assert "### Rows passing their check with a diagnose() finding" in text and "- regular numpyro/nuts: off_target" in text
    ax = figs[0].axes[0]  # the regular panel: first row red, second not
    colors = [t.get_color() for t in ax.get_yticklabels()]
    assert colors[0] == plots.FINDING_COLOR and colors[1] != plots.FINDING_COLOR
    assert any("finding" in t.get_text() for t in figs[0].legends[0].get_texts())
