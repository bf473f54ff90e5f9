"""A run holds its draws' parameters only when asked (issue 11, item 1): every kept draw's
loss, observables and probe losses are evaluated inside the sampling loop, so with
``keep_params=False`` the backend stores only the per-draw values and statistics, the memory
estimate has no d × draws term, and the values are those of the same run that keeps its draws."""

import numpy as np
import pytest

import pplpatterning as pp
from pplpatterning.samplers.settings import SamplerSettings
from pplpatterning.sampling import memory
from pplpatterning.sampling.core import get_backend
from pplpatterning.sampling.record import make_record
from pplpatterning.models import get_model

KW = dict(sampler="sgld", num_chains=2, num_draws=30, num_burnin=10, step_size=1e-3, batch_size=20, seed=4,
          progress_bar=False)


@pytest.fixture(scope="module")
def post():
    model = get_model("regular", d=3)
    return pp.GibbsPosterior(model, model.generate(80, seed=1))


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_minibatch_only_run_stores_no_draws_and_the_same_statistics(post, backend):
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    settings = SamplerSettings(**KW, loss_estimate="minibatch")
    module = get_backend(backend)
    record = make_record(settings, {}, None)
    lean = module.run(post, settings, record=record, plan=None, keep_params=False)
    full = module.run(post, settings, record=record, plan=None, keep_params=True)
    assert lean.draws == {} and lean.num_draws == 30
    assert full.draws["w"].shape == (2, 30, 3)
    assert sorted(lean.stats) == sorted(full.stats)
    for name, value in full.stats.items():
        np.testing.assert_array_equal(lean.stats[name], value, err_msg=name)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_sample_keeps_draws_only_when_needed(post, backend):
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    lean = pp.sample(post, backend=backend, loss_estimate="minibatch", keep_params=False, **KW)
    kept = pp.sample(post, backend=backend, loss_estimate="minibatch", keep_params=True, **KW)
    assert not lean["posterior"].data_vars and kept["posterior"]["w"].shape == (2, 30, 3)
    np.testing.assert_array_equal(lean["sample_stats"]["loss_delta"].values, kept["sample_stats"]["loss_delta"].values)
    assert pp.llc(lean) == pp.llc(kept)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_full_loss_and_observables_need_no_stored_draws(post, backend):
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    obs = {"w0": pp.observables.param("w", 0)}
    lean = pp.sample(post, backend=backend, observables=obs, keep_params=False, **KW)
    kept = pp.sample(post, backend=backend, observables=obs, keep_params=True, **KW)
    assert not lean["posterior"].data_vars
    for group, name in (("sample_stats", "loss"), ("sample_stats", "loss_delta"), ("observables", "w0")):
        np.testing.assert_array_equal(lean[group][name].values, kept[group][name].values, err_msg=name)
    np.testing.assert_array_equal(kept["observables"]["w0"].values, kept["posterior"]["w"].values[:, :, 0])


def test_the_memory_estimate_holds_draws_only_with_keep_params(post):
    d, C, D = post.model.dim, 2, 30
    for loss_estimate in ("minibatch", "full"):
        settings = SamplerSettings(**KW, loss_estimate=loss_estimate)
        lean = memory.estimate_memory(post, settings, keep_params=False, num_observables=3)["draws"]
        kept = memory.estimate_memory(post, settings, keep_params=True, num_observables=3)["draws"]
        assert kept - lean == 2 * C * D * d * 8  # NumPyro's segments and their concatenation
        assert lean == C * D * (memory.PER_DRAW_STATS + 3) * 8


@pytest.mark.parametrize("backend,sampler", [("numpyro", "sgld"), ("pyro", "sgld"), ("numpyro", "nuts"),
                                             ("pyro", "nuts")])
def test_keep_params_k_keeps_every_kth_draw(post, backend, sampler):
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    kw = dict(KW, sampler=sampler, backend=backend)
    if sampler == "nuts":
        kw = {k: v for k, v in kw.items() if k not in ("step_size", "batch_size")}
    every = pp.sample(post, keep_params=True, **kw)
    fifth = pp.sample(post, keep_params=5, **kw)
    np.testing.assert_array_equal(fifth["posterior"]["w"].values, every["posterior"]["w"].values[:, ::5])
    np.testing.assert_array_equal(fifth["posterior"]["draw"].values, np.arange(0, 30, 5))
    np.testing.assert_array_equal(fifth["sample_stats"]["loss_delta"].values, every["sample_stats"]["loss_delta"].values)


def test_keep_params_k_must_divide_the_draws_and_shrinks_the_estimate(post):
    with pytest.raises(ValueError, match="`keep_params=7` must divide num_draws=30; e.g. keep_params=6"):
        pp.sample(post, keep_params=7, **KW)
    with pytest.raises(TypeError, match="`keep_params` must be True, False or a positive integer"):
        pp.sample(post, keep_params=0.5, **KW)
    settings = SamplerSettings(**KW)
    every = memory.estimate_memory(post, settings, keep_params=1)["draws"]
    fifth = memory.estimate_memory(post, settings, keep_params=5)["draws"]
    none = memory.estimate_memory(post, settings, keep_params=0)["draws"]
    assert (every - none) == 5 * (fifth - none)
