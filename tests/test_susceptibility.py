"""The susceptibility estimators on synthetic Traces: exact identities, linearity, honest
error bars, the response matrix and its PCA (issue 5, points 3-4). No sampling here."""

import math

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from pplpatterning import (attribution, component_susceptibility, load_trace, principal_directions,
                           response_matrix, save_trace, susceptibility)
from pplpatterning.plots import plot_principal_directions
from pplpatterning.spec.probes import ProbePlan
from pplpatterning.trace import build_trace

EPS = np.finfo(np.float64).eps


def synthetic_trace(phi, *, probe_losses=None, per_sample=None, weights=None, loss=None, n_beta=10.0,
                    thinning=1, loss_estimate="full", loss_delta=None):
    """A Trace with observables ``phi`` {name: (C, D)}, probe losses {name: (C, D)} and
    per-sample training losses (C, D_thin, n); L^ρ = mean_j c ρ_j l_j when per-sample losses
    are given at every draw."""
    C, D = next(iter(phi.values())).shape
    n = 0 if per_sample is None else per_sample.shape[-1]
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    if loss is None:
        assert per_sample is not None and thinning == 1
        loss = np.mean(w * per_sample, axis=-1)
    plan = ProbePlan(
        datasets={k: {"x": np.zeros((3, 1))} for k in (probe_losses or {})},
        dataset_loss_at_centre={k: 0.0 for k in (probe_losses or {})},
        train_index=np.arange(n), train_weights=w, train_data={}, held_out=None, thinning=thinning,
        memory_bytes=0,
    )
    groups = plan.assemble(dataset_losses=probe_losses, per_sample=per_sample, num_draws=D)
    delta = loss - loss.mean() if loss_delta is None else loss_delta
    return build_trace(posterior={}, sample_stats={"loss": loss, "loss_delta": delta},
                       observables=phi, extra_groups=groups,
                       attrs={"n_beta": n_beta, "gamma": 0.0, "loss_at_centre": 0.0, "n": max(n, 1),
                              "loss_estimate": loss_estimate})


dims = st.tuples(st.integers(1, 3), st.integers(4, 40), st.integers(2, 25))  # chains, draws, samples


@settings(max_examples=40)
@given(shape=dims, seed=st.integers(0, 2**32 - 1), offset=st.sampled_from([0.0, 1.0, 1e3]),
       scale=st.sampled_from([1e-4, 1.0, 1e2]), weighted=st.booleans())
def test_per_sample_chi_sum_to_zero(shape, seed, offset, scale, weighted):
    """With every sample recorded and L^ρ = (1/n) Σ_j c ρ_j l_j at the same draws,
    Σ_j c ρ_j χ_{z_j} = -(n - Σ_j c ρ_j) Cov(φ, L^ρ) exactly: 0 for equal weights
    (Σ_j χ_{z_j} = 0, docs/math.md §3) and for normalised weights (Σ_j c ρ_j = n)."""
    C, D, n = shape
    rng = np.random.default_rng(seed)
    losses = offset + scale * rng.standard_exponential((C, D, n)) * rng.uniform(0.1, 3, n)
    raw = rng.uniform(0, 3, n) if weighted else np.ones(n)
    phi = {"a": rng.normal(size=(C, D)), "b": losses[..., 0] * 2.0 + rng.normal(size=(C, D))}
    for w in (raw, raw * n / raw.sum()):  # raw c ρ, then normalised (Σ c ρ = n)
        tr = synthetic_trace(phi, per_sample=losses, weights=w)
        att = attribution(tr)
        np.testing.assert_array_equal(att["weight"].values, w)
        L = tr["sample_stats"]["loss"].values
        for k in ("a", "b"):
            chi = att.chi.sel(observable=k).values
            dev = np.abs(phi[k] - phi[k].mean()).mean()
            cov_L = np.mean((phi[k] - phi[k].mean()) * (L - L.mean()))
            bound = 64 * n * EPS * np.max(np.abs(losses)) * dev * (1 + w.max())  # rounding of L^ρ and the sums
            assert abs(np.sum(w * chi) + (n - w.sum()) * cov_L) <= bound, (np.sum(w * chi), bound)
            if not weighted or w is not raw:
                assert abs(np.sum(w * chi)) <= bound


@settings(max_examples=40)
@given(shape=dims, seed=st.integers(0, 2**32 - 1), a=st.floats(-2, 3))
def test_chi_is_linear_in_the_probe_and_the_observable(shape, seed, a):
    """χ(φ; a q'_A + (1-a) q'_B) = a χ_A + (1-a) χ_B, as a probe recorded by the backend and
    through ``mixtures``; χ(αφ₁ + βφ₂) = αχ(φ₁) + βχ(φ₂)."""
    C, D, _ = shape
    rng = np.random.default_rng(seed)
    A, B = 5 + rng.normal(size=(C, D)), 2 + rng.normal(size=(C, D))
    loss = 1 + 0.5 * rng.normal(size=(C, D))
    p1, p2 = rng.normal(size=(C, D)) + A, rng.normal(size=(C, D))
    phi = {"p1": p1, "p2": p2, "combo": 2.0 * p1 - 3.0 * p2}
    tr = synthetic_trace(phi, probe_losses={"A": A, "B": B, "mix": a * A + (1 - a) * B}, loss=loss)
    res = susceptibility(tr, mixtures={"mix_api": {"A": a, "B": 1 - a}})
    chi = res.chi
    tol = 1e-12 * (float(np.abs(chi).max()) + 1e-12)
    expected = a * chi.sel(probe="A") + (1 - a) * chi.sel(probe="B")
    np.testing.assert_allclose(chi.sel(probe="mix"), expected, rtol=0, atol=tol * (1 + abs(a)))
    np.testing.assert_allclose(chi.sel(probe="mix_api"), expected, rtol=0, atol=tol * (1 + abs(a)))
    np.testing.assert_allclose(chi.sel(observable="combo"), 2 * chi.sel(observable="p1") - 3 * chi.sel(observable="p2"),
                               rtol=0, atol=10 * tol)
    np.testing.assert_allclose(res.jacobian, 10.0 * res.chi, rtol=1e-15)


@settings(max_examples=25)
@given(shape=dims, seed=st.integers(0, 2**32 - 1))
def test_probe_decomposes_into_per_sample_chi(shape, seed):
    """χ(φ; q') = Σ_z q'(z) χ_z(φ) for a probe q' on the training samples (docs/math.md §3)."""
    C, D, n = shape
    rng = np.random.default_rng(seed)
    losses = rng.standard_exponential((C, D, n))
    q = rng.dirichlet(np.ones(n))
    phi = {"phi": losses[..., 0] + rng.normal(size=(C, D))}
    tr = synthetic_trace(phi, per_sample=losses, probe_losses={"q": losses @ q})
    chi_q = float(susceptibility(tr).chi.sel(probe="q", observable="phi"))
    chi_z = attribution(tr).chi.sel(observable="phi").values
    assert chi_q == pytest.approx(float(q @ chi_z), rel=1e-10, abs=1e-14)


def test_iid_error_bar_is_honest():
    """iid Gaussian draws with Cov(φ, ΔL) = 0.3: χ̂ within 4 se of -0.3, and the se equals
    sd((φ-φ̄)(ΔL-ΔL̄))/√N up to the sampling error of the ESS estimate."""
    rng = np.random.default_rng(0)
    C, D = 4, 5000
    z = rng.multivariate_normal([1.0, -2.0], [[1.0, 0.3], [0.3, 2.0]], size=(C, D))
    tr = synthetic_trace({"phi": z[..., 0]}, probe_losses={"p": z[..., 1] + 1.0}, loss=np.ones((C, D)))
    r = susceptibility(tr).sel(probe="p", observable="phi")
    assert abs(float(r.chi) + 0.3) < 4 * float(r.se)
    prod = (z[..., 0] - z[..., 0].mean()) * (z[..., 1] - z[..., 1].mean())
    assert float(r.se) == pytest.approx(prod.std(ddof=1) / math.sqrt(C * D), rel=0.1)
    assert float(r.ess) == pytest.approx(C * D, rel=0.1)


def test_autocorrelation_widens_the_error_bar():
    rng = np.random.default_rng(1)
    C, D, rho = 4, 4000, 0.9
    e = rng.normal(size=(C, D, 2))
    x = np.zeros_like(e)
    for t in range(1, D):  # AR(1) in both series: ESS of the product ≈ N (1-ρ²)/(1+ρ²)
        x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho**2) * e[:, t]
    phi, dl = x[..., 0], 0.5 * x[..., 0] + x[..., 1]
    r = susceptibility(synthetic_trace({"phi": phi}, probe_losses={"p": dl}, loss=np.zeros((C, D))))
    iid = susceptibility(synthetic_trace({"phi": e[..., 0]}, probe_losses={"p": 0.5 * e[..., 0] + e[..., 1]},
                                         loss=np.zeros((C, D))))
    r, iid = (x.sel(probe="p", observable="phi") for x in (r, iid))
    assert float(r.ess) < 0.35 * C * D
    assert float(r.se) > 1.5 * float(iid.se)


def test_thinned_per_sample_draws_align_with_observables():
    """Per-sample losses recorded at every 3rd draw pair with φ at the same draws."""
    rng = np.random.default_rng(2)
    C, D, n = 2, 30, 4
    full = rng.normal(size=(C, D, n))
    phi = {"phi": rng.normal(size=(C, D))}
    loss = full.mean(-1)
    tr = synthetic_trace(phi, per_sample=full[:, ::3], loss=loss, thinning=3)
    assert list(tr["per_sample_losses"]["draw"].values) == list(range(0, D, 3))
    chi = attribution(tr).chi.sel(observable="phi").values
    p, d = phi["phi"][:, ::3], full[:, ::3] - loss[:, ::3, None]
    expected = -np.mean((p - p.mean())[..., None] * (d - d.mean((0, 1))), axis=(0, 1))
    np.testing.assert_allclose(chi, expected, rtol=1e-12)


def test_component_estimator_formula_on_synthetic_traces():
    """χ_C = -mean_R[φ (ΔL - mean_F ΔL)], se² = mcse_R² + φ̄_R² mcse_F(ΔL)²."""
    rng = np.random.default_rng(3)
    C, D = 2, 2000
    phi = 0.1 + np.abs(rng.normal(size=(C, D)))
    dl_r = 0.5 * phi + rng.normal(size=(C, D))
    dl_f = 0.2 + rng.normal(size=(C, D))
    R = synthetic_trace({"x": phi}, probe_losses={"p": dl_r}, loss=np.zeros((C, D)), loss_delta=phi)
    F = synthetic_trace({"x": phi}, probe_losses={"p": dl_f}, loss=np.zeros((C, D)))
    res = component_susceptibility(R, F).sel(probe="p", observable="component_loss")
    assert float(res.chi) == pytest.approx(-np.mean(phi * (dl_r - dl_f.mean())), rel=1e-12)
    se_r = np.std(phi * (dl_r - dl_f.mean()), ddof=1) / math.sqrt(C * D)
    se_f = np.std(dl_f, ddof=1) / math.sqrt(C * D)
    assert float(res.se) == pytest.approx(math.hypot(se_r, phi.mean() * se_f), rel=0.1)
    named = component_susceptibility(R, F, observable="x")
    assert float(named.chi.sel(probe="p", observable="x")) == pytest.approx(float(res.chi), rel=1e-12)
    G = synthetic_trace({"x": phi}, probe_losses={"p": dl_f}, loss=np.zeros((C, D)), n_beta=11.0)
    with pytest.raises(ValueError, match="must share nβ"):
        component_susceptibility(R, G)


def test_principal_directions_of_a_low_rank_matrix(tmp_path):
    rng = np.random.default_rng(4)
    u, v = rng.normal(size=30), np.array([3.0, -1.0, 0.5])
    noise = 1e-3 * rng.normal(size=(30, 3))
    mat = xr.DataArray(np.outer(u, v) + noise, dims=("sample", "observable"),
                       coords={"sample": np.arange(30), "observable": ["a", "b", "c"]})
    pcs = principal_directions(mat, center=False)
    assert float(pcs.explained[0]) > 0.999
    np.testing.assert_allclose(pcs.loading.sel(component="PC1"), v / np.linalg.norm(v), atol=1e-3)
    recon = pcs.score.values @ pcs.loading.values
    np.testing.assert_allclose(recon, mat.values, atol=1e-12)
    centred = principal_directions(mat)  # PCA: the scores have zero column means
    np.testing.assert_allclose(centred.score.mean("sample"), 0, atol=1e-12)
    with pytest.raises(ValueError, match="n_components"):
        principal_directions(mat, n_components=4)
    path = plot_principal_directions(pcs, tmp_path / "pcs.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at least two components"):
        plot_principal_directions(principal_directions(mat, n_components=1), tmp_path / "x.png")


def test_response_matrix_and_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    C, D, n = 2, 50, 6
    losses = rng.normal(size=(C, D, n))
    phi = {"a": rng.normal(size=(C, D)), "b": losses[..., 1]}
    tr = synthetic_trace(phi, per_sample=losses, probe_losses={"p": rng.normal(size=(C, D)),
                                                               "q": rng.normal(size=(C, D))})
    mat = response_matrix(attribution(tr))
    assert mat.dims == ("sample", "observable") and mat.shape == (n, 2)
    assert response_matrix(susceptibility(tr), value="jacobian").dims == ("probe", "observable")
    back = load_trace(save_trace(tr, tmp_path / "t.nc"))
    xr.testing.assert_identical(susceptibility(back), susceptibility(tr))
    xr.testing.assert_identical(attribution(back), attribution(tr))


def test_clear_errors():
    rng = np.random.default_rng(6)
    phi = {"a": rng.normal(size=(2, 10))}
    bare = synthetic_trace(phi, loss=np.zeros((2, 10)))
    with pytest.raises(ValueError, match="no 'probe_losses' group.*Probes"):
        susceptibility(bare)
    with pytest.raises(ValueError, match="no 'per_sample_losses' group"):
        attribution(bare)
    tr = synthetic_trace(phi, probe_losses={"p": rng.normal(size=(2, 10))}, loss=np.zeros((2, 10)))
    with pytest.raises(ValueError, match=r"`observables` \['zz'\] are not in the trace; it has \['a'\]"):
        susceptibility(tr, observables=["zz"])
    with pytest.raises(ValueError, match=r"`probes` \['zz'\] are not in the trace"):
        susceptibility(tr, probes="zz")
    with pytest.raises(ValueError, match="sum to 1"):
        susceptibility(tr, mixtures={"m": {"p": 0.5}})
    mb = synthetic_trace(phi, probe_losses={"p": rng.normal(size=(2, 10))}, loss=np.zeros((2, 10)),
                         loss_estimate="minibatch")
    with pytest.raises(ValueError, match="loss_estimate='full'"):
        susceptibility(mb)
    with pytest.raises(ValueError, match="'train' or 'held_out'"):
        attribution(tr, samples="test")


def test_row_chunking_gives_identical_results(monkeypatch):
    import sys

    module = sys.modules["pplpatterning.estimators.susceptibility"]
    rng = np.random.default_rng(7)
    phi = xr.DataArray(rng.normal(size=(2, 300, 2)), dims=("chain", "draw", "observable"),
                       coords={"observable": ["a", "b"]})
    dl = xr.DataArray(rng.normal(size=(2, 300, 23)) + phi.values[..., :1], dims=("chain", "draw", "sample"),
                      coords={"sample": np.arange(23) * 3})
    whole = module.negative_covariance(phi, dl)
    monkeypatch.setattr(module, "CHUNK_BYTES", 2 * 300 * 8 * 4)  # 4 rows per chunk
    xr.testing.assert_identical(module.negative_covariance(phi, dl), whole)
