"""The segmented driver reproduces numpyro.infer.MCMC exactly and keeps draws on failure."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer import MCMC

from pplpatterning import GibbsPosterior, SamplerSettings, diagnose, sample
from pplpatterning.backends.numpyro import driver
from pplpatterning.backends.numpyro.run import make_kernel, stat_fields
from pplpatterning.backends.numpyro.spec import posterior_args
from pplpatterning.models import get_model


@pytest.fixture(scope="module")
def post():
    model = get_model("regular", d=2)
    return GibbsPosterior(model, model.generate(200, seed=0), gamma=1.0)


@pytest.mark.parametrize("sampler, kw", [
    ("sgld", dict(step_size=1e-3, batch_size=50)),
    ("rmsprop_sgld", dict(step_size=1e-3)),
    ("sgnht", dict(step_size=1e-3)),
    ("mala", {}),
    ("nuts", {}),
])
def test_kernels_run_under_numpyro_mcmc_and_driver_matches(post, sampler, kw):
    settings = SamplerSettings(sampler=sampler, num_chains=3, num_draws=40, num_burnin=30, thinning=2, seed=5,
                               progress_bar=False, **kw)
    # the backend runs in float64 inside jax.enable_x64(True); driving its pieces directly needs the same
    with jax.enable_x64(True):
        _mcmc_and_driver_match(post, settings, sampler)


def _mcmc_and_driver_match(post, settings, sampler):
    args = posterior_args(post)
    init = {k: jnp.broadcast_to(v, (3,) + v.shape) for k, v in args.centre.items()}
    fields = stat_fields(settings)
    mcmc = MCMC(make_kernel(post, settings), num_warmup=30, num_samples=80, thinning=2, num_chains=3,
                chain_method="vectorized", progress_bar=False, jit_model_args=True)
    mcmc.run(jax.random.PRNGKey(5), args, init_params=init, extra_fields=tuple(fields))
    ref = mcmc.get_samples(group_by_chain=True)
    ref_extra = mcmc.get_extra_fields(group_by_chain=True)

    seg = driver.run_segmented(make_kernel(post, settings), args, init, settings, fields)
    assert seg.reason is None
    for k in ref:
        np.testing.assert_allclose(seg.samples[k], np.asarray(ref[k]), rtol=1e-13, atol=1e-15)
    for path, name in fields.items():
        np.testing.assert_allclose(seg.extra[name], np.asarray(ref_extra[path]), rtol=1e-13, atol=1e-15)


def test_segments_divide_the_draws():
    assert driver.segments(1000) == (20, 50)
    assert driver.segments(997) == (1, 997)
    assert driver.segments(12) == (12, 1)


def test_nan_chains_stop_early_and_keep_draws(post):
    with pytest.warns(RuntimeWarning, match="Sampling stopped early: every chain's parameters became NaN"):
        tr = sample(post, sampler="sgld", step_size=50.0, num_draws=1000, num_burnin=0, progress_bar=False)
    assert tr.attrs["incomplete"] == 1
    assert 0 < tr["sample_stats"]["loss"].sizes["draw"] < 1000
    assert "nan_loss" in diagnose(tr).codes()


def test_nan_during_burnin_raises_before_any_draw(post):
    with pytest.raises(FloatingPointError, match="before any draw was kept.*during burn-in"):
        sample(post, sampler="sgld", step_size=50.0, num_draws=100, num_burnin=200, progress_bar=False)


def test_interrupt_keeps_completed_segments(post, monkeypatch):
    real = jax.device_get
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(x)

    # device_get calls: 1 after burn-in, then one per 50-draw segment; the 4th call is segment 3
    monkeypatch.setattr(driver.jax, "device_get", flaky)
    with pytest.warns(RuntimeWarning, match=r"interrupted \(KeyboardInterrupt\).*keeps the 100 of 1000"):
        tr = sample(post, sampler="sgld", step_size=1e-3, num_draws=1000, num_burnin=10, progress_bar=False)
    assert tr["sample_stats"]["loss"].shape == (4, 100)
    assert tr.attrs["incomplete_reason"] == "interrupted (KeyboardInterrupt)"


def test_interrupt_before_any_draw_propagates(post, monkeypatch):
    def boom(x):
        raise KeyboardInterrupt

    monkeypatch.setattr(driver.jax, "device_get", boom)
    with pytest.raises(KeyboardInterrupt):
        sample(post, sampler="sgld", step_size=1e-3, num_draws=100, num_burnin=0, progress_bar=False)
