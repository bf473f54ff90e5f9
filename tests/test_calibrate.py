"""Step-size calibration (pplpatterning.calibrate) against exact answers.

On the regular model with full-batch gradients SGLD is the unadjusted Langevin algorithm on
a Gaussian, whose stationary λ̂ is known exactly for every ε (test_numpyro_exact.py):
E[λ̂] = ½ Σ_k 1/(1 - ε a_k/4), a_k the eigenvalues of nβH, H = XᵀX/n (σ = 1). The
recommended ε must reproduce that value within 4 MCSE, a too-large ε must be rejected for
low MALA acceptance, and the MALA acceptance computed at an exact MALA chain's own step size
must agree with the acceptance the chain recorded.
"""

import json

import numpy as np
import pytest

from pplpatterning import GibbsPosterior, sample
from pplpatterning.calibrate import DEFAULT_THRESHOLD, calibrate, mala_acceptance
from pplpatterning.cli import main
from pplpatterning.convergence import series_mcse
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
def test_recommended_sgld_step_matches_exact_ula_target(regular_post, sgld_calibration):
    cal = sgld_calibration
    assert cal.step_size == pytest.approx(5e-3)
    row = cal.table.set_index("step_size").loc[cal.step_size]
    target = ula_target(regular_post, cal.step_size)
    assert target - 1.0 > 4 * row["mcse"]  # the check can tell the discretised target from d/2
    assert row["rhat"] <= 1.01
    assert abs(row["llc"] - target) < 4 * row["mcse"], f"λ̂ = {row['llc']:.4f} ± {row['mcse']:.4f}, target {target:.4f}"
    assert row["acceptance"] >= DEFAULT_THRESHOLD and row["reasons"] == ""
    assert "largest ε with MALA acceptance" in cal.recommended["reason"].iloc[0]


@pytest.mark.slow
def test_too_large_step_is_rejected_for_low_acceptance(sgld_calibration):
    table = sgld_calibration.table.set_index("step_size")
    big = table.loc[2e-2]
    assert not big["ok"]
    assert big["reasons"] == "low_acceptance"  # settled, λ̂ > 0 and finite: only the acceptance fails
    assert big["acceptance"] < DEFAULT_THRESHOLD - 4 * big["acceptance_se"]
    assert "low_acceptance" in table.loc[5e-2]["reasons"]
    assert table.loc[1e-3]["acceptance"] > table.loc[5e-3]["acceptance"] > big["acceptance"]


@pytest.mark.slow
def test_calibration_plot(sgld_calibration, tmp_path):
    path = sgld_calibration.plot(tmp_path / "cal.png")
    assert path.exists() and path.stat().st_size > 10_000
    assert "recommended ε = 0.005" in str(sgld_calibration)


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


# ------------------------------------------------------------------- bad input
def test_calibrate_rejects_bad_input_before_sampling(regular_post, monkeypatch):
    import pplpatterning.calibrate as cal_mod

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
