"""A run holds its draws' parameters only when something needs them (issue 11, item 1, first
step): with ``loss_estimate="minibatch"``, no observables, no probes and ``keep_params=False``,
the backend stores only the per-draw statistics, the memory estimate drops the d × draws
term, and the statistics are those of the same run that keeps its draws."""

import numpy as np
import pytest

import pplpatterning as pp
from pplpatterning.samplers.settings import SamplerSettings
from pplpatterning.sampling import memory
from pplpatterning.sampling.core import get_backend
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
    lean = module.run(post, settings, keep_draws=False)
    full = module.run(post, settings, keep_draws=True)
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


def test_draws_needed_and_the_memory_estimate_agree(post):
    mb = SamplerSettings(**KW, loss_estimate="minibatch")
    full = SamplerSettings(**KW)
    assert not memory.draws_needed(mb, keep_params=False, num_observables=0, has_probes=False)
    assert memory.draws_needed(mb, keep_params=False, num_observables=1, has_probes=False)
    assert memory.draws_needed(mb, keep_params=True, num_observables=0, has_probes=False)
    assert memory.draws_needed(full, keep_params=False, num_observables=0, has_probes=False)
    d, C, D = post.model.dim, 2, 30
    lean = memory.estimate_memory(post, mb, keep_params=False)["draws"]
    held = memory.estimate_memory(post, full, keep_params=False)["draws"]
    assert held - lean == C * D * d * 8
