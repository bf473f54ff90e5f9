"""Where a run's arrays live (issue 11, items 3-4): a backend on an accelerator reports its
free memory and sample() refuses a run that does not fit there before anything compiles;
chain_devices is validated like every setting."""

import numpy as np
import pytest

import pplpatterning as pp
from pplpatterning.models import get_model
from pplpatterning.sampling import core
from pplpatterning.sampling.memory import SampleMemoryError
from pplpatterning.samplers.settings import SamplerSettings


@pytest.fixture(scope="module")
def post():
    model = get_model("regular", d=2)
    return pp.GibbsPosterior(model, model.generate(50, seed=0))


def test_a_full_accelerator_refuses_the_run_before_it_compiles(post, monkeypatch):
    calls = []

    class OnGPU:
        name, packages = "gpu-stand-in", ()

        @staticmethod
        def device_memory(settings):
            return ("gpu:0", 10_000)  # 10 kB free

        @staticmethod
        def evaluate_at_centre(posterior, fn):
            calls.append("centre")
            return np.asarray(0.0)

        @staticmethod
        def run(*args, **kwargs):
            calls.append("run")

    monkeypatch.setattr(core, "get_backend", lambda name: OnGPU)
    with pytest.raises(SampleMemoryError, match=r"is available on gpu:0; nothing was compiled or sampled.*num_draws"):
        pp.sample(post, sampler="mala", num_draws=10_000, progress_bar=False)
    assert calls == []


def test_numpyro_on_the_cpu_reports_no_device_memory():
    pytest.importorskip("jax")
    from pplpatterning.backends.numpyro.run import device_memory

    assert device_memory(SamplerSettings()) is None  # the host memory check already covers it


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_chain_devices_is_validated(bad):
    with pytest.raises(ValueError, match="`chain_devices` must be None or a positive integer"):
        SamplerSettings(chain_devices=bad)


@pytest.mark.parametrize("backend,missing", [("numpyro", "gpu"), ("pyro", "cuda")])
def test_an_explicit_device_runs_there_and_an_absent_one_is_refused(post, backend, missing):
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    kw = dict(backend=backend, sampler="sgld", step_size=1e-3, num_chains=2, num_draws=30, num_burnin=10,
              seed=3, progress_bar=False, observables={"w0": pp.observables.param("w", 0)})
    default, on_cpu = pp.sample(post, **kw), pp.sample(post, device="cpu", **kw)
    for group in ("posterior", "sample_stats", "observables"):
        for name, var in default[group].data_vars.items():
            np.testing.assert_array_equal(on_cpu[group][name].values, var.values, err_msg=f"{group}/{name}")
    if backend == "pyro":
        import torch
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    with pytest.raises(ValueError, match=rf"`device='{missing}'`"):
        pp.sample(post, device=missing, **kw)

