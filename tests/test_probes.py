"""Probes: validation and the memory check before sampling, the Trace groups the NumPyro
backend records, and the exact identities of χ through a real run (issue 5, point 2)."""

import math

import numpy as np
import pytest
import xarray as xr

import pplpatterning.sampling.core as sampling
from pplpatterning import GibbsPosterior, Probes, attribution, load_trace, sample, save_trace, susceptibility
from pplpatterning.models import get_model
from pplpatterning.spec.observables import full_loss, param
from pplpatterning.spec.probes import MEMORY_COPIES, ProbeMemoryError, check_memory


@pytest.fixture(scope="module")
def post():
    model = get_model("regular", d=2)
    return GibbsPosterior(model, model.generate(30, seed=0), gamma=2.0)


@pytest.fixture
def no_backend(monkeypatch):
    """Fail the test if sample() gets as far as importing a backend."""
    monkeypatch.setattr(sampling, "get_backend", lambda name: pytest.fail("validation let it reach the backend"))


# ------------------------------------------------------------------------ validation
@pytest.mark.parametrize("kwargs, message", [
    ({}, "records nothing"),
    ({"datasets": {"a/b": {}}}, "without '/'"),
    ({"datasets": [1]}, "must be a mapping"),
    ({"per_sample": [1, 1]}, "repeats an index"),
    ({"per_sample": []}, "`per_sample` is empty"),
    ({"per_sample": [0.5]}, "integers"),
    ({"per_sample": "some"}, "None, 'all', or a sequence"),
    ({"per_sample": "all", "thinning": 0}, "`thinning` must be a positive integer"),
    ({"held_out": [1, 2]}, "`held_out` must be a data dict"),
])
def test_spec_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Probes(**kwargs)


@pytest.mark.parametrize("probes, message", [
    (lambda d: Probes(datasets={"q": {"x": d["x"]}}), r"has keys \['x'\]; the model's data has \['x', 'y'\]"),
    (lambda d: Probes(datasets={"q": {"x": d["x"][:, :1], "y": d["y"]}}), r"trailing shape \(2,\)"),
    (lambda d: Probes(datasets={"q": {"x": d["x"][:5], "y": d["y"][:4]}}), "share one non-zero number"),
    (lambda d: Probes(datasets={"q": {"x": d["x"], "y": d["y"] * np.nan}}), "NaN"),
    (lambda d: Probes(per_sample=[0, 30]), r"indices \[30\] are outside the training set \[0, 30\)"),
    (lambda d: Probes(held_out={"x": d["x"]}), r"probes.held_out"),
])
def test_resolve_errors_before_sampling(post, no_backend, probes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        sample(post, probes=probes(post.data), progress_bar=False)


def test_probes_need_the_full_batch_loss(post, no_backend):
    with pytest.raises(ValueError, match="use loss_estimate='full' with probes"):
        sample(post, sampler="sgld", loss_estimate="minibatch", batch_size=10, probes=Probes(per_sample="all"))


def test_memory_check_names_the_fix():
    C, D, S, avail = 4, 1000, 500, 10_000_000
    need = C * D * S * 8
    with pytest.raises(ProbeMemoryError) as info:
        check_memory(C, D, 1, S, available=avail)
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, MemoryError)
    assert "`probes`" in msg and f"{need / 1e9:.3g} GB" in msg and "nothing was sampled" in msg
    k = int(msg.split("thinning=")[1].split(")")[0])
    s_max = int(msg.split("at most ")[1].split(" ")[0])
    assert check_memory(C, D, k, S, available=avail) <= avail / MEMORY_COPIES  # the suggested thinning fits ...
    with pytest.raises(ProbeMemoryError):
        check_memory(C, D, k - 1, S, available=avail)  # ... and is the smallest that does
    assert check_memory(C, D, 1, s_max, available=avail) <= avail / MEMORY_COPIES
    with pytest.raises(ProbeMemoryError):
        check_memory(C, D, 1, s_max + 1, available=avail)
    assert check_memory(C, D, 1, 0, available=1) == 0


def test_memory_error_from_sample_before_compiling(post, no_backend):
    with pytest.raises(ProbeMemoryError, match=r"`probes`.*thinning=\d+"):
        sample(post, num_draws=10**9, probes=Probes(per_sample="all", stream=False), progress_bar=False)
    with pytest.raises(ProbeMemoryError, match=r"`probes`.*thinning=\d+.*`num_draws`"):
        sample(post, num_draws=10**9, probes=Probes(per_sample=[0], stream=False), progress_bar=False)


# ----------------------------------------------------------------- NumPyro recording
@pytest.fixture(scope="module")
def recorded(post):
    rng = np.random.default_rng(1)
    A = post.model.generate(7, seed=11)
    B = post.model.generate(5, seed=12)
    union = {k: np.concatenate([A[k], B[k]]) for k in A}
    S = np.array([3, 8, 21])
    sub = {k: v[S] for k, v in post.data.items()}
    held = post.model.generate(4, seed=13)
    weighted = post.with_(weights=rng.uniform(0.5, 1.5, post.n))
    probes = Probes(datasets={"A": A, "B": B, "AB": union, "S": sub}, per_sample="all", held_out=held)
    obs = {"loss": full_loss(post), "w0": param("w", 0)}
    tr = sample(weighted, sampler="sgld", step_size=2e-3, num_chains=2, num_draws=600, num_burnin=100, seed=2,
                progress_bar=False, observables=obs, probes=probes)
    thin = sample(weighted, sampler="sgld", step_size=2e-3, num_chains=2, num_draws=600, num_burnin=100, seed=2,
                  progress_bar=False, observables=obs,
                  probes=Probes(per_sample=[4, 0, 9], held_out=held, thinning=7), keep_params=False)
    return dict(post=weighted, tr=tr, thin=thin, A=A, B=B, S=S, held=held)


def test_recorded_groups_match_numpy(recorded):
    post, tr = recorded["post"], recorded["tr"]
    w = tr["posterior"]["w"].values
    pl, ps = tr["probe_losses"], tr["per_sample_losses"]
    assert set(pl.data_vars) == {"A", "B", "AB", "S"}
    assert pl["A"].dims == ("chain", "draw") and pl["A"].dtype == np.float64
    assert ps["train"].dims == ("chain", "draw", "sample") and ps["train"].shape == (2, 600, 30)
    assert ps["held_out"].dims == ("chain", "draw", "held_out_sample") and ps["held_out"].shape == (2, 600, 4)
    np.testing.assert_array_equal(ps["sample"].values, np.arange(30))
    np.testing.assert_array_equal(ps["weight"].values, post.effective_weights)
    assert pl["A"].attrs["num_samples"] == 7
    assert pl["A"].attrs["loss_at_centre"] == pytest.approx(
        post.model.per_sample_loss_numpy(post.centre, recorded["A"]).mean(), rel=1e-14)
    for c, d in [(0, 0), (1, 311), (0, 599)]:
        p = {"w": w[c, d]}
        loss = post.model.per_sample_loss_numpy
        assert pl["A"].values[c, d] == pytest.approx(loss(p, recorded["A"]).mean(), rel=1e-13)
        np.testing.assert_allclose(ps["train"].values[c, d], loss(p, post.data), rtol=1e-13)
        np.testing.assert_allclose(ps["held_out"].values[c, d], loss(p, recorded["held"]), rtol=1e-13)
        # the training loss the estimators centre ΔL with is the weighted full-batch L^ρ
        assert tr["sample_stats"]["loss"].values[c, d] == pytest.approx(post.loss(p), rel=1e-13)


def test_thinned_subset_recording(recorded):
    thin, tr = recorded["thin"], recorded["tr"]
    ps = thin["per_sample_losses"]
    assert "probe_losses" not in thin.children and len(thin["posterior"].data_vars) == 0
    np.testing.assert_array_equal(ps["draw"].values, np.arange(0, 600, 7))
    np.testing.assert_array_equal(ps["sample"].values, [4, 0, 9])
    assert ps["train"].shape == (2, math.ceil(600 / 7), 3)
    # same seed and sampler: the thinned record is the full record at those draws and samples
    full = tr["per_sample_losses"]
    np.testing.assert_array_equal(ps["train"].values, full["train"].values[:, ::7][:, :, [4, 0, 9]])
    np.testing.assert_array_equal(ps["held_out"].values, full["held_out"].values[:, ::7])
    np.testing.assert_array_equal(ps["weight"].values, recorded["post"].effective_weights[[4, 0, 9]])
    att = attribution(thin, samples="held_out")
    assert att.chi.dims == ("held_out_sample", "observable") and att.attrs["num_draws"] == 86


def test_exact_identities_through_the_backend(recorded):
    """χ(A ∪ B) = (7 χ_A + 5 χ_B)/12, χ(S) = Σ_{z∈S} χ_z / |S| (probe on training samples,
    same draws), and Σ_z c ρ_z χ_z = -(n - Σ c ρ) Cov(φ, L^ρ) — all to rounding."""
    tr, post = recorded["tr"], recorded["post"]
    res = susceptibility(tr, mixtures={"mix": {"A": 7 / 12, "B": 5 / 12}})
    chi = res.chi
    scale = float(np.abs(chi).max())
    np.testing.assert_allclose(chi.sel(probe="AB"), (7 * chi.sel(probe="A") + 5 * chi.sel(probe="B")) / 12,
                               rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(chi.sel(probe="mix"), chi.sel(probe="AB"), rtol=0, atol=1e-10 * scale)
    att = attribution(tr)
    np.testing.assert_allclose(chi.sel(probe="S"), att.chi.sel(sample=recorded["S"]).mean("sample"),
                               rtol=0, atol=1e-10 * scale)
    w = att["weight"].values
    L = tr["sample_stats"]["loss"]
    for k in ("loss", "w0"):
        phi = tr["observables"][k]
        cov = float(((phi - phi.mean()) * (L - L.mean())).mean())
        total = float((w * att.chi.sel(observable=k)).sum())
        assert total == pytest.approx(-(post.n - w.sum()) * cov, rel=1e-8, abs=1e-12 * scale)


def test_netcdf_round_trip_keeps_probe_groups(recorded, tmp_path):
    tr = recorded["thin"]
    back = load_trace(save_trace(tr, tmp_path / "t.nc"))
    for group in ("per_sample_losses", "observables", "sample_stats"):
        xr.testing.assert_identical(back[group].to_dataset(), tr[group].to_dataset())
    xr.testing.assert_identical(attribution(back), attribution(tr))
