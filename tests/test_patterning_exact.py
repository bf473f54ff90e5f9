"""Patterning against the exact linear-Gaussian posterior (docs/math.md §4 and §7).

The posterior of the regular model is N(m, Σ) in closed form for any data weights:
Σ = (nβ H_c + γI)⁻¹, m = Σ(nβ b_c + γ w*), H_c = Xᵀ diag(c) X/(Nσ²), b_c = Xᵀ diag(c) y/(Nσ²).
Per-sample susceptibilities of a linear observable φ = eᵀw are χ_j = -eᵀΣ g_j and of the
quadratic φ = L(w) - L(w*) (unweighted training loss) χ_j = -(∇L(m)ᵀΣ g_j + ½ tr(HΣM_jΣ)),
with g_j = ∇(l_j - L_c)(m) and M_j = ∇²(l_j - L_c) (docs/math.md §7). With these exact χ the plan's
prediction α β X s must equal the exact change E_new[φ] - E_old[φ] to first order: the
ratio within 2 % for a small step, and the error |realized - predicted| falling by 4 when
the step is halved (it is O(α²)). A sampled test then checks verify() end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pplpatterning import GibbsPosterior, Probes, attribution, sample
from pplpatterning.models import get_model
from pplpatterning.spec.observables import full_loss, param
from pplpatterning.patterning.pattern import pattern
from pplpatterning.patterning.verify import prediction_from_trace, verify

D, N = 3, 100


def gaussian(post):
    """Exact (m, Σ) of the regular model's posterior (σ = 1) for its data and weights."""
    x, y, c = post.data["x"], post.data["y"], np.asarray(post.effective_weights)
    n = x.shape[0]
    H = x.T @ (c[:, None] * x) / n
    b = x.T @ (c * y) / n
    cov = np.linalg.inv(post.n_beta * H + post.gamma * np.eye(D))
    return cov @ (post.n_beta * b + post.gamma * post.centre["w"]), cov


def setting(weights=None):
    model = get_model("regular", d=D, w_true=[1.0, -0.5, 0.3])
    data = model.generate(N, seed=0)
    post = GibbsPosterior(model, data, gamma=2.0, weights=weights)
    x, y = data["x"], data["y"]
    H0 = x.T @ x / N  # unweighted Hessian of the observable L

    def expectations(p):
        m, cov = gaussian(p)
        r = y - x @ m
        loss_m = 0.5 * np.mean(r**2) - post.loss_at_centre_per_sample.mean()
        return np.array([m[0], m[1], loss_m + 0.5 * np.trace(H0 @ cov)])

    return model, post, expectations, H0


def exact_attribution(post, H0) -> xr.Dataset:
    """attribution()-shaped exact χ_j for w0, w1 and the unweighted loss."""
    m, cov = gaussian(post)
    x, y, c = post.data["x"], post.data["y"], np.asarray(post.effective_weights)
    r = y - x @ m
    grads = -r[:, None] * x  # ∇l_j(m)
    G = grads - np.mean(c[:, None] * grads, axis=0)  # ∇(l_j - L_c)(m)
    Hc = x.T @ (c[:, None] * x) / N
    a_loss = -(x.T @ r) / N  # ∇L(m), unweighted
    A = cov @ H0 @ cov
    chi = np.empty((N, 3))
    chi[:, 0] = -(G @ cov[:, 0])
    chi[:, 1] = -(G @ cov[:, 1])
    quad = np.einsum("ij,nj,ni->n", A, x, x) - np.trace(A @ Hc)  # tr(HΣ(x xᵀ - H_c)Σ)
    chi[:, 2] = -(G @ (cov @ a_loss) + 0.5 * quad)
    return xr.Dataset({"chi": (("sample", "observable"), chi), "weight": ("sample", c)},
                      coords={"sample": np.arange(N), "observable": ["w0", "w1", "loss"]},
                      attrs={"n_beta": post.n_beta})


@pytest.mark.parametrize("weighted", [False, True], ids=["equal-weights", "weighted-base"])
def test_per_sample_plan_is_exact_to_first_order(weighted):
    weights = np.random.default_rng(9).uniform(0.5, 1.5, N) if weighted else None
    model, post, expect, H0 = setting(weights)
    chi = exact_attribution(post, H0)
    if not weighted:
        assert np.abs(chi["chi"].sum("sample")).max() < 1e-14  # 1 ∈ ker X for equal weights
    before = expect(post)
    errors = {}
    for f in (0.2, 0.1, 0.05):
        plan = pattern(chi, {"w0": 0.05, "w1": -0.03}, fraction=f)
        assert abs(float(plan.change.sum())) < 1e-12
        realized = expect(plan.apply(post)) - before
        predicted = plan.predicted.sel(observable=["w0", "w1", "loss"]).values
        ratio = realized / predicted
        print(f"f={f}: max|Δρ| {np.abs(plan.change).max().item():.3f}, ratios {np.round(ratio, 5)}")
        if f == 0.2:  # max |Δρ| ≈ 0.05: the targeted observables within 2 %
            assert np.all(np.abs(ratio[:2] - 1) < 0.02), ratio
        errors[f] = np.abs(realized - predicted)
    # the error of linear response is O(α²): halving the step divides it by ~4, for the
    # untargeted loss too (its first-order side effect is small against its curvature, so its
    # ratio is far from 1 at these steps, but the first-order term is exact all the same)
    for big, small in ((0.2, 0.1), (0.1, 0.05)):
        quotient = errors[big] / errors[small]
        print(f"error({big}) / error({small}) = {np.round(quotient, 3)}")
        assert np.all((quotient > 3.6) & (quotient < 4.4)), quotient
    # the target itself: the plan asked for fraction × dμ of w0 and w1 and got it to first order
    plan = pattern(chi, {"w0": 0.05, "w1": -0.03}, fraction=0.05)
    np.testing.assert_allclose(plan.predicted.sel(observable=["w0", "w1"]).values, [0.0025, -0.0015], rtol=1e-12)


def test_group_plan_is_exact_to_first_order():
    """Probe data sets q'_k: χ_k = -eᵀΣ(∇L_k(m) - ∇L(m)); the mixture posterior of
    PatternPlan.apply(datasets=...) has the exact change nβ χ dh + O(dh²)."""
    model, post, expect, _ = setting()
    m, cov = gaussian(post)
    x, y = post.data["x"], post.data["y"]
    grad_L = -(x.T @ (y - x @ m)) / N
    sets = {"shift": get_model("regular", d=D, w_true=[2.0, 0.5, 0.3]).generate(80, seed=1),
            "scale": get_model("regular", d=D, w_true=[1.0, -1.5, 1.0]).generate(60, seed=2)}
    chi = np.empty((2, 2))  # (probe, observable w0, w1)
    for i, q in enumerate(sets.values()):
        g = -(q["x"].T @ (q["y"] - q["x"] @ m)) / q["x"].shape[0] - grad_L
        chi[i] = -(cov @ g)[:2]
    ds = xr.Dataset({"chi": (("probe", "observable"), chi)},
                    coords={"probe": list(sets), "observable": ["w0", "w1"]}, attrs={"n_beta": post.n_beta})
    before = expect(post)[:2]
    errors = {}
    for f in (0.2, 0.1, 0.05):
        plan = pattern(ds, {"w0": 0.02, "w1": 0.01}, fraction=f, nonnegative=True)
        assert np.all(plan.change.values >= 0) and plan.relative_residual < 1e-6  # reachable with dh ≥ 0
        realized = expect(plan.apply(post, datasets=sets))[:2] - before
        predicted = plan.predicted.values
        if f == 0.2:
            assert np.all(np.abs(realized / predicted - 1) < 0.02), realized / predicted
        errors[f] = np.abs(realized - predicted)
    for big, small in ((0.2, 0.1), (0.1, 0.05)):
        quotient = errors[big] / errors[small]
        assert np.all((quotient > 3.6) & (quotient < 4.4)), quotient


@pytest.mark.slow
def test_verify_end_to_end_against_the_exact_posterior():
    """Sample → attribution → pattern → verify on the regular model; realized and predicted
    agree with their exact values within 4 of verify's standard errors."""
    model, post, expect, H0 = setting()
    obs = {"w0": param("w", 0), "w1": param("w", 1), "loss": full_loss(post)}
    kw = dict(sampler="nuts", num_chains=4, num_draws=4000, num_burnin=500, progress_bar=False)
    trace = sample(post, seed=11, observables=obs, probes=Probes(per_sample="all", thinning=2), **kw)
    chi = attribution(trace)
    plan = pattern(chi, {"w0": 0.05}, fraction=0.5, n=post.n)
    check = verify(post, plan, observables=obs, baseline=trace, seed=12, **kw)
    print(check)
    tab = check.table
    # the prediction's se comes from the same trace, as one covariance with the combined probe
    again = prediction_from_trace(trace, plan)
    np.testing.assert_allclose(again["predicted"].sel(observable=list(obs)).values,
                               plan.predicted.sel(observable=list(obs)).values,
                               rtol=1e-9, atol=1e-14)
    exact_first = plan.scale * (exact_attribution(post, H0)["chi"].values.T @ plan.change.values)
    exact_realized = expect(plan.apply(post)) - expect(post)
    for i, name in enumerate(["w0", "w1", "loss"]):
        r = tab.loc[name]
        assert r["predicted_se"] > 0 and r["realized_se"] > 0
        assert abs(r["predicted"] - exact_first[i]) < 4 * r["predicted_se"], (name, r["predicted"], exact_first[i])
        assert abs(r["realized"] - exact_realized[i]) < 4 * r["realized_se"], (name, r["realized"], exact_realized[i])
    # the targeted change is large compared with its error: the test has power
    assert tab.loc["w0", "realized"] > 5 * tab.loc["w0", "realized_se"]
    assert abs(tab.loc["w0", "ratio"] - 1) < 4 * tab.loc["w0", "ratio_se"]
    # verify samples its own baseline (recording the plan's per-sample losses) when none is given
    own = verify(post, plan, observables={"w0": obs["w0"]}, seed=13, **{**kw, "num_draws": 1000})
    assert np.isfinite(own.table.loc["w0", "predicted_se"]) and "baseline" in own.seconds


@pytest.mark.slow
def test_verify_group_plan_with_probe_data_sets():
    """Group level end to end: susceptibility() over two probe data sets → dh ≥ 0 → the
    mixture posterior; realized against the exact mixture posterior, prediction and its
    error from the baseline's probe losses."""
    from pplpatterning import susceptibility

    model, post, expect, _ = setting()
    sets = {"shift": get_model("regular", d=D, w_true=[2.0, 0.5, 0.3]).generate(80, seed=1),
            "scale": get_model("regular", d=D, w_true=[1.0, -1.5, 1.0]).generate(60, seed=2)}
    obs = {"w0": param("w", 0), "w1": param("w", 1)}
    kw = dict(sampler="nuts", num_chains=4, num_draws=4000, num_burnin=500, progress_bar=False)
    trace = sample(post, seed=21, observables=obs, probes=Probes(datasets=sets), **kw)
    plan = pattern(susceptibility(trace), {"w0": 0.03, "w1": 0.01}, fraction=0.5, nonnegative=True)
    assert plan.level == "group" and np.all(plan.change.values >= 0)
    check = verify(post, plan, observables=obs, baseline=trace, datasets=sets, seed=22, **kw)
    print(check)
    again = prediction_from_trace(trace, plan)
    np.testing.assert_allclose(again["predicted"].sel(observable=["w0", "w1"]).values,
                               plan.predicted.sel(observable=["w0", "w1"]).values, rtol=1e-9)
    exact_realized = expect(plan.apply(post, datasets=sets))[:2] - expect(post)[:2]
    for i, name in enumerate(["w0", "w1"]):
        r = check.table.loc[name]
        assert np.isfinite(r["predicted_se"]) and r["predicted_se"] > 0
        assert abs(r["realized"] - exact_realized[i]) < 4 * r["realized_se"], (name, r["realized"], exact_realized[i])
    assert check.table.loc["w0", "realized"] > 5 * check.table.loc["w0", "realized_se"]
