"""Every kept draw evaluated inside the sampling loop, per-sample losses stored or streamed
(issue 11, items 1-2): the streamed float64 batch sums give the same per-sample
susceptibilities as the stored (chain, draw, sample) series of the same run, on both
backends, and ``Probes(stream="auto")`` streams only what would be large."""

import numpy as np
import pytest

import pplpatterning as pp
from pplpatterning.models import get_model
from pplpatterning.samplers.settings import SamplerSettings
from pplpatterning.sampling.memory import estimate_memory
from pplpatterning.spec.observables import full_loss
from pplpatterning.spec.probes import STREAM_ABOVE_BYTES, Probes
from pplpatterning.trace.moments import MOMENTS_GROUP

KW = dict(num_chains=3, num_draws=120, num_burnin=50, seed=7, progress_bar=False)


@pytest.fixture(scope="module")
def post():
    model = get_model("regular", d=3)
    return pp.GibbsPosterior(model, model.generate(60, seed=2))


def _probes(post, stream):
    held = post.model.generate(4, seed=5)
    return Probes(per_sample="all", held_out=held, thinning=2, stream=stream)


@pytest.mark.parametrize("backend,sampler", [("numpyro", "mala"), ("numpyro", "nuts"), ("pyro", "mala"),
                                             ("pyro", "sgld")])
def test_streamed_and_stored_chi_of_one_run_agree(post, backend, sampler):
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    kw = dict(KW, backend=backend, sampler=sampler, observables={"L": full_loss(post), "w0": pp.observables.param("w", 0)},
              keep_params=False, **({"step_size": 1e-3} if sampler == "sgld" else {}))
    stored = pp.sample(post, probes=_probes(post, False), **kw)
    streamed = pp.sample(post, probes=_probes(post, True), **kw)
    assert MOMENTS_GROUP in streamed.children and "per_sample_losses" not in streamed.children
    assert MOMENTS_GROUP not in stored.children
    # the same seed gives the same draws: the scalar series are identical
    np.testing.assert_array_equal(streamed["sample_stats"]["loss"].values, stored["sample_stats"]["loss"].values)
    for samples in ("train", "held_out"):
        a, b = pp.attribution(stored, samples=samples), pp.attribution(streamed, samples=samples)
        # floating-point reproduction: the pooled covariance from float64 sums vs from the series
        np.testing.assert_allclose(b["chi"].values, a["chi"].values, rtol=1e-10, atol=1e-13 * float(abs(a["chi"]).max()))
        # batch means vs ESS: two estimates of one standard error. With 3 chains × 7 batches the
        # batch-means σ̂² has relative sd √(2/20) ≈ 0.32 (se: ≈ 0.16, log-se ≈ 0.16) and the ESS
        # estimate is as uncertain again on 60 draws per chain, so |log ratio| < log 2.5 ≈ 0.92 is
        # about 4 sd of the log ratio: a sanity band, not an MCSE tolerance on χ.
        ratio = b["se"].values / a["se"].values
        assert np.all((ratio > 0.4) & (ratio < 2.5)), ratio
    assert streamed[MOMENTS_GROUP]["count"].values.sum() == 3 * 60  # ⌈120 / 2⌉ recorded draws per chain


def test_auto_streams_only_large_per_sample_losses(post):
    settings = SamplerSettings(num_chains=4, num_draws=1000)
    small = _probes(post, "auto").resolve(post, settings)
    assert not small.stream and small.memory_bytes == 4 * 500 * 64 * 8
    big_draws = STREAM_ABOVE_BYTES // (4 * 64 * 8) * 2 + 2  # stored: just over the threshold
    big = _probes(post, "auto").resolve(post, SamplerSettings(num_chains=4, num_draws=big_draws))
    assert big.stream and big.memory_bytes == 0
    # the streamed sums' memory does not grow with the number of draws
    parts = [estimate_memory(post, SamplerSettings(num_chains=4, num_draws=D), keep_params=False, num_observables=2,
                             plan=_probes(post, True).resolve(post, SamplerSettings(num_chains=4, num_draws=D)))["probes"]
             for D in (1000, 100_000)]
    assert parts[0] == parts[1]  # B = min(⌊√J⌋, 16): 16 batches per chain at J = 500 and beyond
    assert estimate_memory(post, SamplerSettings(num_chains=4, num_draws=10**7), keep_params=False, num_observables=2,
                           plan=_probes(post, True).resolve(post, SamplerSettings(num_chains=4, num_draws=10**7)))[
        "probes"] == parts[1]


def test_stream_must_be_a_bool_or_auto():
    with pytest.raises(ValueError, match="`stream` must be True, False or 'auto'"):
        Probes(per_sample="all", stream="yes")


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_the_loss_on_a_fixed_evaluation_subset(post, backend):
    """loss_estimate="subset": L on eval_size fixed rows (drawn once from the seed) at every kept draw."""
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    from pplpatterning.sampling.record import evaluation_subset

    kw = dict(KW, backend=backend, sampler="mala", keep_params=True)
    full = pp.sample(post, **kw)
    every_row = pp.sample(post, loss_estimate="subset", eval_size=post.n, **kw)
    np.testing.assert_array_equal(every_row["sample_stats"]["loss_delta"].values, full["sample_stats"]["loss_delta"].values)
    sub = pp.sample(post, loss_estimate="subset", eval_size=25, **kw)
    assert sub.attrs["loss_estimate"] == "subset" and sub.attrs["eval_size"] == 25
    rows = evaluation_subset(SamplerSettings(**{k: v for k, v in KW.items() if k != "progress_bar"}, sampler="mala",
                                             loss_estimate="subset", eval_size=25), post.n)
    assert rows.size == 25 and np.unique(rows).size == 25
    w = sub["posterior"]["w"].values
    data = {k: v[rows] for k, v in post.data.items()}
    lstar = post.loss_at_centre_per_sample[rows]
    ref = np.array([[np.mean(post.model.per_sample_loss_numpy({"w": w[c, d]}, data) - lstar)
                     for d in range(w.shape[1])] for c in range(w.shape[0])])
    np.testing.assert_allclose(sub["sample_stats"]["loss_delta"].values, ref, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(sub["posterior"]["w"].values, full["posterior"]["w"].values)  # sampling untouched
    with pytest.raises(ValueError, match="`eval_size` applies to loss_estimate='subset'"):
        pp.sample(post, eval_size=10, **kw)
    with pytest.raises(ValueError, match="`probes` need the full-batch training loss"):
        pp.sample(post, loss_estimate="subset", probes=Probes(per_sample="all"), **kw)


def test_mala_records_its_own_full_batch_loss_without_a_second_pass():
    """MALA carries L^ρ and ΔL^ρ of its current position (its acceptance test computed them):
    the kept draws' record reuses them, so a run makes one vectorised loss call per step
    (plus one at init); a run recording per-sample losses needs the record's own pass."""
    pytest.importorskip("torch")
    base = get_model("regular", d=2)
    calls = {"n": 0}

    def counting_loss(params, batch, consts, xp):
        if xp is not np:
            calls["n"] += 1
        return base.loss(params, batch, consts, xp)

    model = pp.Model(name="counting", loss=counting_loss, param_shapes=base.param_shapes, centre=base.centre,
                     consts=base.consts)
    post = pp.GibbsPosterior(model, base.generate(50, seed=1))
    kw = dict(backend="pyro", sampler="mala", num_chains=2, num_draws=50, num_burnin=20, progress_bar=False)
    pp.sample(post, **kw)
    assert calls["n"] == 1 + 70
    calls["n"] = 0
    pp.sample(post, probes=Probes(per_sample=[0, 1], stream=False), **kw)
    assert calls["n"] == 1 + 70 + 50 + 1  # + one record pass per kept draw, + the check at w*
