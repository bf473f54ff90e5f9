"""Per-sample χ from streamed batch moments against the stored-series estimators (issue 11, item 2).

The moments are built here in NumPy from a stored (chain, draw, sample) series with the
accumulator the backends use (pplpatterning.trace.moments), and put into a copy of the
trace in place of per_sample_losses. χ̂ must then equal the stored-series χ̂ (floating-point
reproduction: the same sums, rearranged), and the streamed se must equal the batch-means se
of the stored product series (floating-point reproduction, same batch assignment).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pplpatterning import GibbsPosterior, Probes, attribution, component_susceptibility, load_trace, sample, save_trace
from pplpatterning.estimators.moments_chi import batch_means_se
from pplpatterning.models import get_model
from pplpatterning.patterning.pattern import pattern
from pplpatterning.patterning.verify import prediction_from_trace
from pplpatterning.spec.observables import full_loss, param
from pplpatterning.spec.probes import PER_SAMPLE_GROUP, ProbePlan
from pplpatterning.trace import build_trace, observable_array, sample_deltas, sample_moments
from pplpatterning.trace.moments import (MOMENTS_GROUP, MOMENTS_LOSS_DELTA, add_draw, batch_index,
                                         init_moments, moments_dataset, num_batches)

RTOL = 1e-10  # floating-point reproduction


def stream(phi, delta, phi_shift, delta_shift, *, batches=None, recorded=None):
    """The accumulators of (C, J, K) φ and (C, J, R) ΔL as a backend streams them, in B =
    ``batches`` batches per chain (default: the backends' ``num_batches(J)``); chain c
    records only its first ``recorded[c]`` draws (default: all J)."""
    C, J, K = phi.shape
    B = num_batches(J) if batches is None else int(batches)
    m = init_moments(C, B, delta.shape[-1], K, np)
    for j in range(J):
        step = add_draw(init_moments(C, B, delta.shape[-1], K, np), batch_index(j, J, B), phi[:, j], delta[:, j],
                        phi_shift, delta_shift, np)
        live = np.ones(C, bool) if recorded is None else j < np.asarray(recorded)
        m = type(m)(*(a + np.where(live.reshape((C,) + (1,) * (s.ndim - 1)), s, 0.0) for a, s in zip(m, step)))
    return m


def streamed_copy(trace, *, batches=None, keep_series=False, shift_scale=1.0):
    """``trace`` with ``per_sample_moments`` computed from its per-sample series (which is dropped
    unless ``keep_series``); shifts: the first draw's values times ``shift_scale``."""
    ps = trace[PER_SAMPLE_GROUP]
    names = [str(k) for k in trace["observables"].data_vars]
    draws = ps["draw"].values
    phi = np.concatenate([observable_array(trace, names).sel(draw=draws).values,
                          trace["sample_stats"]["loss_delta"].sel(draw=draws).values[..., None]], axis=-1)
    parts = [sample_deltas(trace, s).values for s in ("train", "held_out") if s in ps]
    delta = np.concatenate(parts, axis=-1)
    m = stream(phi, delta, shift_scale * phi[0, 0], shift_scale * delta[0, 0], batches=batches)
    ds = moments_dataset(m, observables=names + [MOMENTS_LOSS_DELTA], phi_shift=shift_scale * phi[0, 0],
                         delta_shift=shift_scale * delta[0, 0], num_train=ps.sizes.get("sample", 0),
                         train_coords={"sample": ps["sample"].values} if "sample" in ps.coords else {},
                         train_weights=ps["weight"].values if "weight" in ps else np.zeros(0),
                         num_held_out=ps.sizes.get("held_out_sample", 0),
                         held_out_coords={"held_out_sample": ps["held_out_sample"].values}
                         if "held_out_sample" in ps.coords else {}, thinning=int(ps.attrs["thinning"]))
    out = trace.copy()
    if not keep_series:
        del out[PER_SAMPLE_GROUP]
    out[MOMENTS_GROUP] = xr.DataTree(ds)
    return out


def synthetic(seed=0, C=4, D=2000, n=6, rho=0.5, thinning=1):
    """φ = z + e with z an AR(1) series of unit variance, l_j = c_j + a_j z + e_j and
    L = mean_j l_j (iid standard normal e): χ_j(φ) = -(a_j - ā) exactly. A second
    observable ψ = 10 + z² + noise (far from its shift) and two held-out rows."""
    rng = np.random.default_rng(seed)
    z = np.empty((C, D))
    z[:, 0] = rng.normal(size=C)
    for t in range(1, D):
        z[:, t] = rho * z[:, t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=C)
    a = rng.normal(size=n)
    losses = 3.0 + rng.uniform(size=n) + a * z[..., None] + rng.normal(size=(C, D, n))
    held = 2.0 + 0.5 * z[..., None] + rng.normal(size=(C, D, 2))
    phi = {"phi": z + rng.normal(size=(C, D)), "psi": 10.0 + 0.1 * rng.normal(size=(C, D)) + z**2}
    loss = losses.mean(-1)
    plan = ProbePlan(datasets={}, dataset_loss_at_centre={}, train_index=np.arange(n), train_weights=np.ones(n),
                     train_data={}, held_out={"x": np.zeros((2, 1))}, thinning=thinning, memory_bytes=0)
    keep = plan.thinned_draws(D)
    groups = plan.assemble(dataset_losses=None, per_sample=np.concatenate([losses, held], -1)[:, keep], num_draws=D)
    tr = build_trace(posterior={}, sample_stats={"loss": loss, "loss_delta": loss - 3.5}, observables=phi,
                     extra_groups=groups, attrs={"n_beta": 10.0, "gamma": 0.0, "loss_at_centre": 3.5, "n": n,
                                                 "loss_estimate": "full"})
    return tr, -(a - a.mean())


def product_series(trace, samples="train", observable="phi", centre=None):
    """s_t = (φ_t - φ̄)(ΔL_t - ΔL̄) of the stored series, (chain, draw, row)."""
    d = sample_deltas(trace, samples)
    phi = observable_array(trace, [observable]).sel(observable=observable, drop=True).sel(draw=d["draw"].values)
    return (phi - phi.mean()) * (d - d.mean(("chain", "draw")))


@pytest.fixture(scope="module")
def synth():
    tr, exact = synthetic()
    return dict(tr=tr, exact=exact, mom=streamed_copy(tr, shift_scale=0.7))


# -------------------------------------------------------------------- synthetic series
@pytest.mark.parametrize("samples", ["train", "held_out"])
def test_streamed_chi_reproduces_the_stored_series(synth, samples):
    tr, mom = synth["tr"], synth["mom"]
    stored, streamed = attribution(tr, samples=samples), attribution(mom, samples=samples)
    assert set(stored.data_vars) == set(streamed.data_vars) and stored.chi.dims == streamed.chi.dims
    xr.testing.assert_allclose(streamed.chi, stored.chi, rtol=RTOL, atol=0)
    xr.testing.assert_allclose(streamed.jacobian, stored.jacobian, rtol=RTOL, atol=0)
    assert streamed.attrs["num_draws"] == stored.attrs["num_draws"] == 2000
    B = mom[MOMENTS_GROUP].sizes["batch"]
    assert B == num_batches(2000) == 16
    assert f"batch means ({B} per chain" in streamed.attrs["se_method"] and np.isnan(streamed.ess).all()
    row = stored.chi.dims[0]
    for k in ("phi", "psi"):
        bm = batch_means_se(product_series(tr, samples, k), B)
        np.testing.assert_allclose(streamed.se.sel(observable=k).values, bm.values, rtol=RTOL, atol=0)
        # A loose sanity band against the ESS-based se: both estimate √(σ²/N) of the same series;
        # with 64 batches the batch-means σ̂² has relative sd √(2/63) ≈ 0.18 (se: ≈ 0.09), so a factor
        # 1.6 is > 3 sd.
        ratio = streamed.se.sel(observable=k) / stored.se.sel(observable=k)
        assert ((ratio > 1 / 1.6) & (ratio < 1.6)).all(), ratio.values
    if samples == "train":
        np.testing.assert_array_equal(streamed.weight.values, stored.weight.values)
        # honest against the exact χ_j = -(a_j - ā) of the construction (4 se)
        err = np.abs(streamed.chi.sel(observable="phi").values - synth["exact"])
        assert np.all(err < 4 * streamed.se.sel(observable="phi").values), err
    assert streamed[row].equals(stored[row])


def test_indices_thinning_and_both_groups(synth):
    tr, exact = synthetic(seed=3, D=999, thinning=4)
    mom = streamed_copy(tr, batches=7)
    a, b = attribution(tr, "phi", indices=[4, 1]), attribution(mom, "phi", indices=[4, 1])
    xr.testing.assert_allclose(b.chi, a.chi, rtol=RTOL, atol=0)
    np.testing.assert_array_equal(b["sample"].values, [4, 1])
    bm = batch_means_se(product_series(tr).sel(sample=[4, 1]), 7)
    np.testing.assert_allclose(b.se.sel(observable="phi").values, bm.values, rtol=RTOL)
    assert b.attrs["num_draws"] == a.attrs["num_draws"] == 250 and "7 per chain" in b.attrs["se_method"]
    # a trace with both groups: the stored series wins, bit for bit
    both = streamed_copy(tr, keep_series=True)
    xr.testing.assert_identical(attribution(both), attribution(tr))


def test_incomplete_batches():
    """Chains that recorded fewer draws (count 0 in their last batches): pooled over what was
    recorded, batch means over the non-empty batches, against a direct computation."""
    rng = np.random.default_rng(5)
    C, J, R = 3, 50, 4
    phi, delta = rng.normal(size=(C, J, 1)), rng.normal(size=(C, J, R))
    delta += 0.8 * phi
    recorded = [50, 31, 6]
    m = stream(phi, delta, np.zeros(1), np.zeros(R), batches=10, recorded=recorded)
    assert (m.count == 0).sum() == 3 + 8  # batches 7-9 of chain 1, 2-9 of chain 2
    ds = moments_dataset(m, observables=["phi"], phi_shift=np.zeros(1), delta_shift=np.zeros(R), num_train=R,
                         train_coords={"sample": np.arange(R)}, train_weights=np.ones(R), num_held_out=0,
                         held_out_coords={}, thinning=1)
    tr = xr.DataTree.from_dict({"/": xr.Dataset(attrs={"n_beta": 2.0}), "sample_stats": xr.Dataset(
        {"loss": (("chain", "draw"), np.zeros((C, J)))}), MOMENTS_GROUP: ds})
    att = attribution(tr, "phi")
    p = np.concatenate([phi[c, :r, 0] for c, r in enumerate(recorded)])
    d = np.concatenate([delta[c, :r] for c, r in enumerate(recorded)])
    s = (p - p.mean())[:, None] * (d - d.mean(0))
    np.testing.assert_allclose(att.chi.sel(observable="phi").values, -s.mean(0), rtol=RTOL)
    ids = np.concatenate([batch_index(np.arange(r), J, 10) + 10 * c for c, r in enumerate(recorded)])
    means = np.array([s[ids == b].mean(0) for b in np.unique(ids)])
    sizes = np.array([(ids == b).sum() for b in np.unique(ids)])
    ref = np.sqrt((sizes[:, None] * (means - s.mean(0)) ** 2).sum(0) / (sizes.size - 1) / s.shape[0])
    np.testing.assert_allclose(att.se.sel(observable="phi").values, ref, rtol=RTOL)
    assert att.attrs["num_draws"] == 50
    # one non-empty batch: χ̂ but no se; nothing recorded: NaN, without warnings
    for keep, chi_finite in ((1, True), (0, False)):
        tr2 = tr.copy()
        count = ds["count"].values.copy()
        count[:, keep:] = 0
        count[1:] = 0
        tr2[MOMENTS_GROUP] = xr.DataTree(ds.assign(count=(("chain", "batch"), count)))
        with np.errstate(all="raise"):
            res = attribution(tr2, "phi")
        assert np.isfinite(res.chi).all() == chi_finite and np.isnan(res.se).all()


def test_component_susceptibility_from_moments():
    r_tr, _ = synthetic(seed=7, C=2, D=800)
    f_tr, _ = synthetic(seed=8, C=3, D=900)
    r_mom, f_mom = streamed_copy(r_tr, batches=10), streamed_copy(f_tr, batches=12)
    for obs in (None, "phi"):
        stored = component_susceptibility(r_tr, f_tr, samples="train", observable=obs)
        streamed = component_susceptibility(r_mom, f_mom, samples="train", observable=obs)
        assert stored.chi.dims == streamed.chi.dims == ("sample", "observable")
        xr.testing.assert_allclose(streamed.chi, stored.chi, rtol=RTOL, atol=0)
        phi = (r_tr["sample_stats"]["loss_delta"] if obs is None else r_tr["observables"][obs])
        d_r, d_f = sample_deltas(r_tr, "train"), sample_deltas(f_tr, "train")
        centre = d_f.mean(("chain", "draw"))
        ref = np.sqrt(batch_means_se(phi * (d_r - centre), 10) ** 2
                      + float(phi.mean()) ** 2 * batch_means_se(d_f, 12) ** 2)
        np.testing.assert_allclose(streamed.se.isel(observable=0).values, ref.values, rtol=RTOL)
        assert "MCSE_restricted: batch means (10" in streamed.attrs["se_method"]
        assert "MCSE_full: batch means (12" in streamed.attrs["se_method"]
        # mixed: stored restricted run, streamed full run (and the reverse)
        for r, f in ((r_tr, f_mom), (r_mom, f_tr)):
            mixed = component_susceptibility(r, f, samples="train", observable=obs)
            xr.testing.assert_allclose(mixed.chi, stored.chi, rtol=RTOL, atol=0)
            assert np.all(mixed.se > 0)
    with pytest.raises(ValueError, match="recorded different samples"):
        component_susceptibility(r_mom, streamed_copy(synthetic(seed=8, n=5)[0]), samples="train")


def test_clear_errors(synth):
    tr, mom = synth["tr"], synth["mom"]
    with pytest.raises(ValueError, match=r"Probes\(per_sample='all' or indices, held_out=..., stream=True\)"):
        sample_moments(tr)
    with pytest.raises(ValueError, match="streamed per-sample moments instead"):
        sample_deltas(mom)
    with pytest.raises(ValueError, match="must be 'train' or 'held_out'"):
        attribution(mom, samples="test")
    with pytest.raises(ValueError, match=r"`indices` \[99\] were not recorded"):
        attribution(mom, indices=[99])
    with pytest.raises(ValueError, match=r"`observables` \['nope'\] are not in the trace's per-sample moments"):
        attribution(mom, "nope")
    with pytest.raises(ValueError, match="streamed no 'held_out' per-sample moments"):
        no_held = mom.copy()
        no_held[MOMENTS_GROUP] = xr.DataTree(mom[MOMENTS_GROUP].to_dataset().drop_vars(
            ["held_out_sum", "held_out_cross", "held_out_shift"]))
        attribution(no_held, samples="held_out")
    with pytest.raises(ValueError, match="must be an xarray.DataArray with dims 'chain' and 'draw'"):
        batch_means_se(np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="positive integer"):
        batch_means_se(xr.DataArray(np.zeros((2, 3)), dims=("chain", "draw")), 0)


# -------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def real():
    model = get_model("regular", d=2)
    post = GibbsPosterior(model, model.generate(30, seed=0), gamma=2.0)
    obs = {"loss": full_loss(post), "w0": param("w", 0)}
    tr = sample(post, backend="numpyro", sampler="mala", num_chains=4, num_draws=600, num_burnin=100, seed=3,
                progress_bar=False, observables=obs, keep_params=False,
                probes=Probes(per_sample="all", held_out=model.generate(3, seed=1), thinning=2))
    return dict(post=post, tr=tr, mom=streamed_copy(tr))


def test_real_trace(real, tmp_path):
    tr, mom = real["tr"], real["mom"]
    for samples in ("train", "held_out"):
        stored, streamed = attribution(tr, samples=samples), attribution(mom, samples=samples)
        scale = float(np.abs(stored.chi).max())
        xr.testing.assert_allclose(streamed.chi, stored.chi, rtol=RTOL, atol=RTOL * scale)
        B = mom[MOMENTS_GROUP].sizes["batch"]
        for k in ("loss", "w0"):
            bm = batch_means_se(product_series(tr, samples, k), B)
            np.testing.assert_allclose(streamed.se.sel(observable=k).values, bm.values, rtol=RTOL)
            ratio = streamed.se.sel(observable=k) / stored.se.sel(observable=k)
            assert ((ratio > 0.5) & (ratio < 2)).all(), ratio.values  # 4 × 16 batches; see the synthetic test
    # component: chains 0-1 as the "restricted" run, 2-3 as the full one (the algebra is the test)
    r, f = tr.isel(chain=[0, 1]), tr.isel(chain=[2, 3])
    stored = component_susceptibility(r, f, samples="train")
    streamed = component_susceptibility(streamed_copy(r), streamed_copy(f), samples="train")
    xr.testing.assert_allclose(streamed.chi, stored.chi, rtol=RTOL, atol=RTOL * float(np.abs(stored.chi).max()))
    back = load_trace(save_trace(mom, tmp_path / "m.nc"))
    xr.testing.assert_identical(attribution(back), attribution(mom))


def test_verify_prediction_from_moments(real):
    tr, mom, post = real["tr"], real["mom"], real["post"]
    plan = pattern(attribution(tr), {"w0": 0.05}, fraction=0.5, n=post.n)
    stored, streamed = prediction_from_trace(tr, plan), prediction_from_trace(mom, plan)
    scale = float(np.abs(stored["predicted"]).max())
    xr.testing.assert_allclose(streamed["predicted"], stored["predicted"], rtol=RTOL, atol=RTOL * scale)
    d = sample_deltas(tr, "train", plan.change["sample"].values)
    combined = (d * xr.DataArray(plan.change.values, dims="sample",
                                 coords={"sample": plan.change["sample"].values})).sum("sample")
    for k in ("loss", "w0"):
        phi = tr["observables"][k].sel(draw=combined["draw"].values)
        s = (phi - phi.mean()) * (combined - combined.mean())
        np.testing.assert_allclose(float(streamed["se"].sel(observable=k)),
                                   plan.scale * float(batch_means_se(s, mom[MOMENTS_GROUP].sizes["batch"])), rtol=RTOL)
        assert 0.5 < float(streamed["se"].sel(observable=k) / stored["se"].sel(observable=k)) < 2
