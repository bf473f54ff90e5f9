"""Step-size calibration (pplpatterning.workflows.calibrate) against exact answers.

On the regular model with full-batch gradients SGLD is the unadjusted Langevin algorithm on
a Gaussian, whose stationary λ̂ is known exactly for every ε (test_numpyro_exact.py):
E[λ̂] = ½ Σ_k 1/(1 - ε a_k/4), a_k the eigenvalues of nβH, H = XᵀX/n (σ = 1). Every row is
judged by diagnose() against the exact finite-nβ target E[λ̂] = d/2 = 1 of the posterior
itself, so an ε whose discretisation bias is resolved (|z| > 3) is rejected as off_target
even where its MALA acceptance is high; a too-large ε is also rejected for low MALA
acceptance; and the MALA acceptance computed at an exact MALA chain's own step size must
agree with the acceptance the chain recorded. The gate itself (R-hat, ESS, negative
targets, progress bar) is tested on synthetic Traces with sampling patched out.
"""

import json

import numpy as np
import pytest

from pplpatterning import GibbsPosterior, sample
from pplpatterning.workflows.acceptance import mala_acceptance
from pplpatterning.workflows.calibrate import DEFAULT_THRESHOLD, calibrate
from pplpatterning.cli.main import main
from pplpatterning.estimators.convergence import series_mcse
from pplpatterning.models import get_model


@pytest.fixture(scope="module")
def regular_post():
    model = get_model("regular", d=2)
    return GibbsPosterior(model, model.generate(500, seed=0))  # centre = least squares, γ = 0, nβ = n/log n


def curvatures(post):
    x = post.data["x"]
    return np.linalg.eigvalsh(post.n_beta * x.T @ x / post.n)


def ula_target(post, eps):
    return float(0.5 * np.sum(1.0 / (1.0 - eps * curvatures(post) / 4)))


@pytest.fixture(scope="module")
def sgld_calibration(regular_post):
    # ε a ranges over ≈ (0.08, 0.39, 1.5, 3.8): the largest is near ULA's stability limit ε a = 4.
    return calibrate(regular_post, "sgld", step_sizes=[1e-3, 5e-3, 2e-2, 5e-2], batch_size=regular_post.n,
                     num_chains=4, num_draws=4000, num_burnin=500, seed=3, acceptance_points=512)


@pytest.mark.slow
def test_recommended_sgld_step_is_on_the_exact_target(regular_post, sgld_calibration):
    cal = sgld_calibration
    assert cal.step_size == pytest.approx(1e-3)
    row = cal.table.set_index("step_size").loc[cal.step_size]
    assert row["rhat"] <= 1.01 and row["target"] == pytest.approx(1.0)
    assert abs(row["llc"] - 1.0) <= 3 * row["mcse"] and row["z"] == pytest.approx((row["llc"] - 1.0) / row["mcse"])
    assert row["acceptance"] >= DEFAULT_THRESHOLD and row["reasons"] == ""
    assert "largest ε with MALA acceptance" in cal.recommended["reason"].iloc[0]
    assert "against the exact target 1" in cal.recommended["reason"].iloc[0]


@pytest.mark.slow
def test_biased_step_with_high_acceptance_is_rejected_off_target(regular_post, sgld_calibration):
    # ε = 5e-3 passes the acceptance threshold, but its ULA bias is resolved: it sits on the
    # exact ULA value ½ Σ 1/(1 - ε a_k/4), more than 4 MCSE above the posterior's E[λ̂] = 1.
    row = sgld_calibration.table.set_index("step_size").loc[5e-3]
    target = ula_target(regular_post, 5e-3)
    assert target - 1.0 > 4 * row["mcse"]  # the check can tell the discretised target from d/2
    assert abs(row["llc"] - target) < 4 * row["mcse"], f"λ̂ = {row['llc']:.4f} ± {row['mcse']:.4f}, ULA {target:.4f}"
    assert row["acceptance"] >= DEFAULT_THRESHOLD and row["rhat"] <= 1.01
    assert not row["ok"] and row["reasons"] == "off_target" and row["z"] > 3


@pytest.mark.slow
def test_too_large_step_is_rejected_for_low_acceptance(sgld_calibration):
    table = sgld_calibration.table.set_index("step_size")
    big = table.loc[2e-2]
    assert not big["ok"]
    # settled, converged, λ̂ > 0 and finite: only the bias and the acceptance fail
    assert set(big["reasons"].split(",")) == {"off_target", "low_acceptance"}
    assert big["acceptance"] < DEFAULT_THRESHOLD - 4 * big["acceptance_se"]
    assert "low_acceptance" in table.loc[5e-2]["reasons"]
    assert table.loc[1e-3]["acceptance"] > table.loc[5e-3]["acceptance"] > big["acceptance"]


@pytest.mark.slow
def test_calibration_plot(sgld_calibration, tmp_path):
    path = sgld_calibration.plot(tmp_path / "cal.png")
    assert path.exists() and path.stat().st_size > 10_000
    assert "recommended ε = 0.001" in str(sgld_calibration)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_mala_acceptance_matches_a_mala_chain(regular_post, backend):
    tr = sample(regular_post, backend=backend, sampler="mala", num_chains=4, num_draws=1000, num_burnin=500, seed=5,
                progress_bar=False)
    recorded = tr["sample_stats"]["accept_prob"]
    rec = series_mcse(recorded)
    acc = mala_acceptance(regular_post, tr, num_points=160, seed=1)
    # Its default ε is the chain's own: 2 × the recorded MALA step size s (w' = w - s∇U + √(2s) ξ).
    s = tr["sample_stats"]["step_size"].values[:, -1]
    np.testing.assert_allclose(acc.step_size, 2 * s)
    se = np.hypot(acc.se, float(rec["mcse"]))
    assert abs(acc.mean - float(rec["mean"])) < 4 * se, f"{acc} vs recorded {float(rec['mean']):.3f} ± {se:.3f}"
    assert 0.3 < acc.mean < 0.9  # a real test: the acceptance is far from 0 and 1
    # The explicit ε in the SGLD convention gives the same numbers.
    again = mala_acceptance(regular_post, tr, step_size=2 * s, num_points=160, seed=1)
    assert again.mean == acc.mean


# ------------------------------------------- the gate: diagnose() findings, exact targets
def _fake_trace(post, values):
    """A Trace as the backends build it with nβ·ΔL = ``values`` (chain, draw); no sampling."""
    from pplpatterning.samplers.settings import SamplerSettings
    from pplpatterning.trace import build_trace, run_attrs

    delta = np.asarray(values, dtype=np.float64) / post.n_beta
    settings = SamplerSettings(sampler="sgld", step_size=1e-3, num_chains=delta.shape[0], num_draws=delta.shape[1])
    attrs = run_attrs(post, settings, backend="numpyro", dtype="float64", packages=(), incomplete_reason=None,
                      sampling_seconds=1.0, evaluation_seconds=0.0)
    return build_trace(posterior={}, sample_stats={"loss": delta + post.loss_at_centre, "loss_delta": delta},
                       attrs=attrs)


def _iid(mean, seed=0):
    return mean + 0.2 * np.random.default_rng(seed).normal(size=(4, 500))  # MCSE ≈ 0.0045


def _ar(mean, rho=0.995, seed=0):
    """AR(1) chains: R-hat ≈ 1.6, bulk ESS ≈ 7 for these seeds (the case of issue 9)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((4, 500))
    e = rng.normal(size=(4, 500))
    for t in range(1, 500):
        x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho**2) * e[:, t]
    return mean + 0.2 * x


@pytest.fixture
def patched(regular_post, monkeypatch):
    """calibrate() with sampling replaced by the traces in ``patched[ε]`` and acceptance 0.99."""
    import pplpatterning.workflows.calibrate as cal_mod
    from pplpatterning.workflows.acceptance import AcceptanceEstimate

    traces: dict[float, object] = {}
    monkeypatch.setattr(cal_mod, "sample", lambda post, **kw: traces[kw["step_size"]])
    monkeypatch.setattr(cal_mod, "mala_acceptance", lambda *a, **k: AcceptanceEstimate(0.99, 0.001, None, None))
    return traces


def test_unconverged_rows_do_not_pass(regular_post, patched):
    patched[1e-3] = _fake_trace(regular_post, _ar(1.0))
    patched[2e-3] = _fake_trace(regular_post, _iid(1.0))
    cal = calibrate(regular_post, "sgld", step_sizes=[1e-3, 2e-3], progress_bar=False)
    bad = cal.table.set_index("step_size").loc[1e-3]
    assert bad["rhat"] > 1.5 and bad["ess_bulk"] < 10  # the R-hat 1.6 / ESS 7
    assert not bad["ok"] and {"rhat", "low_ess"} <= set(bad["reasons"].split(","))
    assert "R-hat of the loss series is" in bad["message"]
    assert cal.step_size == pytest.approx(2e-3)  # the converged, on-target row


def test_stuck_and_off_target_rows_do_not_pass(regular_post, patched):
    patched[1e-3] = _fake_trace(regular_post, np.zeros((4, 500)))  # λ̂ = 0 ± 0: never moved
    patched[2e-3] = _fake_trace(regular_post, _iid(1.2))  # regular d = 2, γ = 0: exact target 1
    cal = calibrate(regular_post, "sgld", step_sizes=[1e-3, 2e-3], progress_bar=False)
    t = cal.table.set_index("step_size")
    assert "stuck_chain" in t.loc[1e-3]["reasons"] and not t.loc[1e-3]["settled"]
    assert t.loc[2e-3]["reasons"] == "off_target" and t.loc[2e-3]["z"] > 3 and t.loc[2e-3]["target"] == 1.0
    assert cal.step_size is None and "off_target (1/2)" in cal.recommended["reason"].iloc[0]


def test_negative_exact_target_is_judged_by_z_not_by_sign(regular_post, patched, monkeypatch):
    import pplpatterning.workflows.calibrate as cal_mod

    monkeypatch.setattr(cal_mod, "target_or_none", lambda post: -0.3)
    patched[1e-3] = _fake_trace(regular_post, _iid(-0.3))
    patched[2e-3] = _fake_trace(regular_post, _iid(0.5))
    cal = calibrate(regular_post, "sgld", step_sizes=[1e-3, 2e-3], progress_bar=False)
    t = cal.table.set_index("step_size")
    assert t.loc[1e-3]["ok"] and t.loc[1e-3]["llc"] < 0 and abs(t.loc[1e-3]["z"]) < 3
    assert t.loc[2e-3]["reasons"] == "off_target"  # λ̂ > 0 but far from the negative target
    assert cal.step_size == pytest.approx(1e-3)
    # Without a target a negative λ̂ is still rejected.
    monkeypatch.setattr(cal_mod, "target_or_none", lambda post: None)
    cal = calibrate(regular_post, "sgld", step_sizes=[1e-3], progress_bar=False)
    assert cal.table["reasons"].iloc[0] == "negative_llc"


def test_progress_bar_over_the_sweep(regular_post, patched, capsys):
    patched[1e-3] = patched[2e-3] = _fake_trace(regular_post, _iid(1.0))
    calibrate(regular_post, "sgld", step_sizes=[1e-3, 2e-3])
    err = capsys.readouterr().err
    assert "calibrate sgld" in err and "2/2" in err
    calibrate(regular_post, "sgld", step_sizes=[1e-3, 2e-3], progress_bar=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError, match="`progress_bar`"):
        calibrate(regular_post, "sgld", step_sizes=[1e-3], progress_bar="yes")


# ------------------------------------------------------------------- bad input
def test_calibrate_rejects_bad_input_before_sampling(regular_post, monkeypatch):
    import pplpatterning.workflows.calibrate as cal_mod

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before validating the arguments")

    monkeypatch.setattr(cal_mod, "sample", no_sampling)
    cases = [
        (dict(sampler="nuts"), ValueError, "`sampler`"),
        (dict(backend="stan"), ValueError, "`backend`"),
        (dict(step_sizes=[1e-3, -1e-3]), ValueError, "`step_sizes`"),
        (dict(step_sizes=[]), ValueError, "`step_sizes`"),
        (dict(step_sizes="1e-3"), TypeError, "`step_sizes`"),
        (dict(step_sizes=[1e-3, 1e-3]), ValueError, "repeats"),
        (dict(n_betas=[0.0]), ValueError, "`n_betas`"),
        (dict(gammas=[-1.0]), ValueError, "`gammas`"),
        (dict(threshold=1.5), ValueError, "`threshold`"),
        (dict(batch_size=10_000), ValueError, "batch_size"),
        (dict(num_draws=10), ValueError, "`num_draws`"),
        (dict(num_chains=0), ValueError, "`num_chains`"),
        (dict(acceptance_points=1), ValueError, "`acceptance_points`"),
        (dict(diffusion=1.0), ValueError, "diffusion"),  # an option sgld does not have
    ]
    for kwargs, exc, match in cases:
        kw = dict(sampler="sgld")
        kw.update(kwargs)
        with pytest.raises(exc, match=match):
            calibrate(regular_post, kw.pop("sampler"), **kw)
    with pytest.raises(TypeError, match="`posterior`"):
        calibrate({"not": "a posterior"}, "sgld")


def test_mala_acceptance_rejects_bad_input(regular_post):
    tr = sample(regular_post, sampler="sgld", step_size=1e-3, num_chains=2, num_draws=60, num_burnin=10,
                progress_bar=False, keep_params=False)
    with pytest.raises(ValueError, match="keep_params=True"):
        mala_acceptance(regular_post, tr)
    with pytest.raises(ValueError, match="`step_size`"):
        mala_acceptance(regular_post, tr, step_size=[1e-3, 1e-3, 1e-3])
    with pytest.raises(ValueError, match="`step_size`"):
        mala_acceptance(regular_post, tr, step_size=-1.0)
    with pytest.raises(ValueError, match="`num_points`"):
        mala_acceptance(regular_post, tr, num_points=0)
    with pytest.raises(TypeError, match="`trace`"):
        mala_acceptance(regular_post, {"sample_stats": None})


def test_mala_acceptance_of_sgnht_uses_the_leapfrog_equivalent_step(regular_post):
    tr = sample(regular_post, sampler="sgnht", step_size=2e-2, num_chains=2, num_draws=60, num_burnin=10,
                progress_bar=False, diffusion=1.0)
    acc = mala_acceptance(regular_post, tr, num_points=8)
    np.testing.assert_allclose(acc.step_size, 4e-4)  # ε_L = ε²
    assert 0.0 <= acc.mean <= 1.0 and acc.values.shape == (2, 4)


# ---------------------------------------------------------------------------- CLI
def test_cli_calibrate_json_and_files(tmp_path, capsys):
    plot, csv = tmp_path / "cal.png", tmp_path / "cal.csv"
    code = main(["calibrate", "--model", "regular", "--n", "200", "--gamma", "0", "--sampler", "sgld",
                 "--steps", "1e-3", "1e-2", "--draws", "100", "--burnin", "100", "--chains", "2",
                 "--acceptance-points", "8", "--plot", str(plot), "--csv", str(csv), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sampler"] == "sgld" and len(out["table"]) == 2
    assert set(out["recommended"][0]) >= {"step_size", "reason"}
    assert plot.exists() and csv.exists()


@pytest.mark.parametrize("argv, message", [
    (["--sampler", "nuts"], "invalid choice"),
    (["--steps", "0"], "positive"),
    (["--gammas", "x"], "number"),
])
def test_cli_calibrate_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["calibrate", "--model", "regular", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_calibrate_value_errors_exit_2(capsys):
    code = main(["calibrate", "--model", "regular", "--steps", "1e-3", "--threshold", "2"])
    assert code == 2
    assert "`threshold`" in capsys.readouterr().err


def test_cli_validate_without_a_checkout_exit_2(tmp_path, capsys):
    code = main(["validate", "--root", str(tmp_path)])
    assert code == 2
    assert "run_validation.py" in capsys.readouterr().err
