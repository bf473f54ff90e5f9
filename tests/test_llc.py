"""λ̂ from a Trace: the estimator, its error bar and diagnose() (issue 2, point 7)."""

import math

import numpy as np
import pytest

from pplpatterning import GibbsPosterior, Model, diagnose, llc, sample
from pplpatterning.trace import build_trace


def _synthetic_trace(loss_delta, n_beta=10.0, **stats):
    loss_delta = np.asarray(loss_delta, dtype=np.float64)
    return build_trace(
        posterior={}, sample_stats={"loss": loss_delta + 1.0, "loss_delta": loss_delta, **stats},
        attrs={"n_beta": n_beta, "gamma": 0.0, "loss_at_centre": 1.0, "n": 100},
    )


def test_llc_is_nbeta_times_mean_delta_with_iid_mcse():
    rng = np.random.default_rng(0)
    delta = 0.05 + 0.01 * rng.normal(size=(4, 2000))
    est = llc(_synthetic_trace(delta, n_beta=20.0))
    assert est.llc == pytest.approx(20.0 * delta.mean(), rel=1e-14)
    # iid draws: MCSE ≈ nβ·sd/√N, within the sampling error of the ESS estimate (~5 %)
    iid = 20.0 * delta.std(ddof=1) / math.sqrt(delta.size)
    assert est.mcse == pytest.approx(iid, rel=0.1)
    np.testing.assert_allclose(est.per_chain, 20.0 * delta.mean(axis=1), rtol=1e-14)
    assert est.rhat < 1.01 and est.ess_bulk > 4000


def test_autocorrelated_series_has_larger_mcse():
    rng = np.random.default_rng(1)
    iid = rng.normal(size=(4, 4000))
    ar = np.zeros_like(iid)
    for t in range(1, 4000):  # AR(1) with ρ = 0.9: ESS ≈ N (1-ρ)/(1+ρ)
        ar[:, t] = 0.9 * ar[:, t - 1] + math.sqrt(1 - 0.81) * iid[:, t]
    e_iid, e_ar = llc(_synthetic_trace(iid)), llc(_synthetic_trace(ar))
    assert e_ar.ess_bulk < 0.1 * e_iid.ess_bulk
    assert e_ar.mcse > 3 * e_iid.mcse


def test_diagnose_flags_each_problem():
    rng = np.random.default_rng(2)
    good = 0.1 + 0.01 * rng.normal(size=(4, 1000))
    assert diagnose(_synthetic_trace(good)).ok

    assert "negative_llc" in diagnose(_synthetic_trace(-good)).codes()
    shifted = good + np.array([0.0, 0.0, 0.0, 0.05])[:, None]
    assert "rhat" in diagnose(_synthetic_trace(shifted)).codes()
    drift = good + np.linspace(0, 0.05, 1000)[None, :]
    assert "loss_not_settled" in diagnose(_synthetic_trace(drift)).codes()
    with_nan = good.copy()
    with_nan[1, 500] = np.nan
    assert "nan_loss" in diagnose(_synthetic_trace(with_nan)).codes()
    div = np.zeros((4, 1000), dtype=bool)
    div[0, :3] = True
    assert "divergences" in diagnose(_synthetic_trace(good, diverging=div)).codes()
    short = good[:, :40]
    assert "low_ess" in diagnose(_synthetic_trace(short)).codes()
    low_acc = np.full((4, 1000), 0.2)
    assert "low_acceptance" in diagnose(_synthetic_trace(good, accept_prob=low_acc)).codes()


def _offset_loss(params, batch, consts, xp):
    return consts["offset"] + (batch["y"] - params["w"] * batch["x"]) ** 2 / 2


@pytest.mark.parametrize("sampler", ["sgld", "nuts"])
def test_large_loss_offset_does_not_cancel(sampler):
    """λ̂ must not depend on a constant added to every l_i: a float32 or difference-of-means
    computation loses ~nβ·1e6·6e-8 ≈ 6 here; float64 per-sample differences lose < 1e-7."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    data = {"x": x, "y": 0.3 * x + rng.normal(size=200)}
    what = np.sum(x * data["y"]) / np.sum(x * x)

    def post(offset):
        m = Model(f"offset{offset}", _offset_loss, {"w": ()}, {"w": np.array(what)},
                  consts={"offset": np.array(offset)})
        return GibbsPosterior(m, data, n_beta=100.0)

    kw = dict(sampler=sampler, num_chains=2, num_draws=300, num_burnin=100, seed=0, progress_bar=False)
    if sampler == "sgld":
        kw["step_size"] = 1e-3
    a = sample(post(0.0), **kw)
    b = sample(post(1e6), **kw)
    if sampler == "sgld":  # gradient-only dynamics: identical draws
        np.testing.assert_array_equal(a["posterior"]["w"].values, b["posterior"]["w"].values)
        assert llc(b).llc == pytest.approx(llc(a).llc, abs=1e-6)
    assert np.all(np.abs(b["sample_stats"]["loss"].values - 1e6) < 10)
    est = llc(b)
    assert abs(est.llc - 0.5) < 4 * est.mcse  # regular 1-d at the LS centre, γ = 0: E[λ̂] = 1/2 exactly


def test_diverged_block_is_trimmed_to_the_common_finite_prefix_with_a_warning():
    rng = np.random.default_rng(4)
    delta = 0.1 + 0.01 * rng.normal(size=(4, 1000))
    delta[2, 700:] = np.inf  # chain 2 diverges at draw 700; the others go on
    delta[0, 850] = np.nan
    with pytest.warns(RuntimeWarning, match=r"dropped draws 700\.\.999 .*chain 2 has a non-finite loss_delta at draw 700"):
        est = llc(_synthetic_trace(delta, n_beta=10.0))
    assert np.isfinite(est.llc) and np.isfinite(est.mcse)
    assert est.llc == pytest.approx(10.0 * delta[:, :700].mean(), rel=1e-14)
    assert (est.num_draws_used, est.num_draws_total, est.num_draws) == (700, 1000, 700) and est.trimmed
    assert est.to_dict()["num_draws_used"] == 700 and est.to_dict()["num_draws_total"] == 1000
    assert "4×700 draws of 1000" in str(est)


def test_no_finite_draw_gives_nan_and_a_warning():
    delta = np.full((2, 50), 0.1)
    delta[1, 0] = np.inf
    with pytest.warns(RuntimeWarning, match="no finite draws"):
        est = llc(_synthetic_trace(delta))
    assert math.isnan(est.llc) and math.isnan(est.mcse) and est.num_draws_used == 0
    assert all(math.isnan(v) for v in est.per_chain)


def test_a_finite_trace_is_not_trimmed_and_does_not_warn():
    import warnings

    rng = np.random.default_rng(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        est = llc(_synthetic_trace(0.1 + 0.01 * rng.normal(size=(2, 100))))
    assert not est.trimmed and est.num_draws_used == est.num_draws_total == 100 and "of 100" not in str(est)
