"""``dtype="float32"`` (issue 11, item 3): positions, data and passes in float32, the loss
differences, the recorded series and every accumulator in float64; the estimate stays on the
exact finite-nβ target on both backends."""

import numpy as np
import pytest

import pplpatterning as pp
from pplpatterning.models import get_model
from pplpatterning.spec.probes import Probes

RUN = dict(sampler="mala", num_chains=4, num_draws=1500, num_burnin=500, seed=11, progress_bar=False)


@pytest.fixture(scope="module")
def post():
    model = get_model("regular", d=2)
    return pp.GibbsPosterior(model, model.generate(500, seed=3), gamma=1.0)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_float32_mala_is_on_the_exact_target(post, backend):
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    target = post.model.target_fn(post)
    tr = pp.sample(post, backend=backend, dtype="float32", keep_params=True,
                   observables={"w0": pp.observables.param("w", 0)}, probes=Probes(per_sample=[0, 1], stream=True), **RUN)
    assert tr.attrs["dtype"] == "float32"
    assert tr["posterior"]["w"].dtype == np.float32
    for name in ("loss", "loss_delta", "accept_prob"):
        assert tr["sample_stats"][name].dtype == np.float64, name
    assert tr["observables"]["w0"].dtype == np.float64
    assert tr["per_sample_moments"]["train_cross"].dtype == np.float64
    est = pp.llc(tr)
    # 4 MCSE against the exact finite-nβ target (fixed seed)
    assert abs(est.llc - target) < 4 * est.mcse, (est.llc, est.mcse, target)
    np.testing.assert_array_equal(tr["observables"]["w0"].values, tr["posterior"]["w"].values[:, :, 0])


def test_float32_is_refused_for_nuts_before_compiling(post):
    with pytest.raises(ValueError, match="`dtype='float32'` applies to the update-rule samplers"):
        pp.sample(post, sampler="nuts", dtype="float32", progress_bar=False)
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        pp.sample(post, sampler="mala", dtype="float16", progress_bar=False)


def test_the_memory_estimate_counts_float32_and_suggests_it(post):
    from pplpatterning.samplers.settings import SamplerSettings
    from pplpatterning.sampling.memory import SampleMemoryError, check_memory, estimate_memory

    s64, s32 = SamplerSettings(sampler="mala"), SamplerSettings(sampler="mala", dtype="float32")
    e64 = estimate_memory(post, s64, keep_params=True)
    e32 = estimate_memory(post, s32, keep_params=True)
    assert e32["state"] * 2 == e64["state"] and e32["data"] * 2 == e64["data"]
    assert e64["draws"] - e32["draws"] == 4 * 1000 * 2 * post.model.dim * 4  # the kept parameters halve
    need64, need32 = sum(e64.values()), sum(e32.values())
    with pytest.raises(SampleMemoryError, match='dtype="float32"'):
        check_memory(post, s64, keep_params=True, available=(need64 + need32) // 2)
