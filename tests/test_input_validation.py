"""Bad input fails before any compilation or sampling, naming the argument and the fix (issue 9):
sampler options and seeds (C7), integer/complex data and weights (C2), observables and probe
losses evaluated once at the centre on the real backends (C1), and the memory estimate (C7)."""

import sys
import time

import numpy as np
import pytest
import xarray as xr

import pplpatterning.sampling.core as sampling
from pplpatterning.sampling import memory
from pplpatterning.sampling.backend import RunResult
from pplpatterning.sampling.evaluation import Evaluation
from pplpatterning import GibbsPosterior, Model, Probes, SamplerSettings, sample
from pplpatterning.spec.observables import component_loss
from pplpatterning.samplers.settings import OPTION_CHECKS, SAMPLERS, SEED_LIMIT


@pytest.fixture
def post(tiny_model, tiny_data):
    return GibbsPosterior(tiny_model, tiny_data, gamma=1.0, n_beta=10.0)


@pytest.fixture
def no_backend(monkeypatch):
    """Fail the test if sample() gets as far as importing a backend."""
    monkeypatch.setattr(sampling, "get_backend", lambda name: pytest.fail("validation let it reach the backend"))


# --------------------------------------------------------------------- C7: sampler options
def test_every_sampler_option_has_a_check_and_its_default_passes():
    options = {name for opts in SAMPLERS.values() for name in opts}
    assert options == set(OPTION_CHECKS)
    for sampler in SAMPLERS:
        assert dict(SamplerSettings(sampler=sampler).options) == dict(SAMPLERS[sampler])


@pytest.mark.parametrize("sampler, option, bad, message", [
    ("nuts", "target_accept", 2.0, r"`target_accept` \(option of sampler 'nuts'\) must be a number in \(0, 1\)"),
    ("nuts", "target_accept", "high", r"`target_accept`.*got 'high'"),
    ("nuts", "target_accept", 0.0, r"`target_accept`.*in \(0, 1\)"),
    ("nuts", "target_accept", 1.0, r"`target_accept`.*in \(0, 1\)"),
    ("mala", "target_accept", float("nan"), r"`target_accept`.*'mala'"),
    ("hmc", "target_accept", True, r"`target_accept`.*got True"),
    ("nuts", "max_tree_depth", 0, r"`max_tree_depth`.*an integer in \[1, 30\]; got 0"),
    ("nuts", "max_tree_depth", 31, r"`max_tree_depth`.*\[1, 30\]"),
    ("nuts", "max_tree_depth", 5.0, r"`max_tree_depth`.*got 5.0"),
    ("hmc", "num_steps", 0, r"`num_steps` \(option of sampler 'hmc'\) must be an integer ≥ 1; got 0"),
    ("hmc", "step_jitter", 1.0, r"`step_jitter`.*\[0, 1\)"),
    ("hmc", "step_jitter", -0.1, r"`step_jitter`"),
    ("rmsprop_sgld", "alpha", 1.0, r"`alpha`.*\(0, 1\)"),
    ("rmsprop_sgld", "alpha", 0, r"`alpha`"),
    ("rmsprop_sgld", "eps", 0.0, r"`eps`.*> 0"),
    ("rmsprop_sgld", "eps", float("inf"), r"`eps`.*finite"),
    ("rmsprop_sgld", "adapt", "never", r"`adapt`.*one of 'burnin', 'always'; got 'never'"),
    ("sgnht", "diffusion", -1e-3, r"`diffusion`.*> 0"),
    ("sgnht", "diffusion", 0.0, r"`diffusion`.*> 0"),
    ("sgnht", "diffusion", float("inf"), r"`diffusion`.*finite"),
])
def test_bad_sampler_option_is_named_before_any_work(post, no_backend, sampler, option, bad, message):
    with pytest.raises(ValueError, match=message):
        sample(post, sampler=sampler, progress_bar=False, **{option: bad})
    # the message gives the default as the fix
    with pytest.raises(ValueError, match=f"Its default is {SAMPLERS[sampler][option]!r}"):
        SamplerSettings(sampler=sampler, options={option: bad})


@pytest.mark.parametrize("sampler, option, good", [
    ("nuts", "target_accept", 0.95), ("nuts", "max_tree_depth", np.int64(30)), ("hmc", "num_steps", 1),
    ("hmc", "step_jitter", 0), ("rmsprop_sgld", "alpha", 0.5), ("rmsprop_sgld", "adapt", "always"),
    ("sgnht", "diffusion", 1e-9),
])
def test_boundary_options_are_accepted(sampler, option, good):
    value = SamplerSettings(sampler=sampler, options={option: good}).options[option]
    assert value == good and type(value) in (int, float, str)


@pytest.mark.parametrize("seed", [SEED_LIMIT, 2**64, -1, 1.0, "1", True])
def test_seed_out_of_range_names_seed(post, no_backend, seed):
    with pytest.raises(ValueError, match=r"`seed` must be an integer in \[0, 2\*\*63\)"):
        sample(post, seed=seed, progress_bar=False)


def test_largest_seed_is_accepted():
    assert SamplerSettings(seed=SEED_LIMIT - 1).seed == 2**63 - 1
    assert type(SamplerSettings(seed=np.int64(7)).seed) is int


def test_keep_params_must_be_bool_or_a_stride(post, no_backend):
    with pytest.raises(TypeError, match="`keep_params` must be True, False or a positive integer"):
        sample(post, keep_params="no", progress_bar=False)


# ------------------------------------------------------------------ C2: data and weights
def _x_dtype_model():
    """A model whose data key 'x' may be an integer or float array."""
    def loss(params, batch, consts, xp):
        return (batch["x"] - params["w"]) ** 2
    return Model("xdtype", loss, {"w": ()}, {"w": np.zeros(())})


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.uint64])
def test_integer_data_kept_as_int64(dtype):
    post = GibbsPosterior(_x_dtype_model(), {"x": np.arange(5, dtype=dtype)}, n_beta=1.0)
    assert post.data["x"].dtype == np.int64 and not post.data["x"].flags.writeable
    np.testing.assert_array_equal(post.loss_at_centre_per_sample, np.arange(5.0) ** 2)
    assert post.centre["w"].dtype == np.float64


def test_integer_data_beyond_2_53_are_exact():
    big = np.array([2**53 + 1, 2**62 + 3], dtype=np.int64)
    post = GibbsPosterior(_x_dtype_model(), {"x": big}, n_beta=1.0)
    assert post.data["x"].tolist() == big.tolist()  # a float64 cast would round both


def test_python_int_lists_are_integer():
    post = GibbsPosterior(_x_dtype_model(), {"x": [1, 2, 3]}, n_beta=1.0)
    assert post.data["x"].dtype == np.int64
    post = GibbsPosterior(_x_dtype_model(), {"x": [1, 2.5]}, n_beta=1.0)
    assert post.data["x"].dtype == np.float64


def test_uint64_beyond_int64_is_refused():
    with pytest.raises(ValueError, match=r"`data\['x'\]` holds unsigned integers above 2\*\*63 - 1"):
        GibbsPosterior(_x_dtype_model(), {"x": np.array([1, 2**63], dtype=np.uint64)}, n_beta=1.0)


def test_complex_data_is_refused_naming_the_key():
    with pytest.raises(TypeError, match=r"`data\['x'\]` is complex \(complex128\).*two float arrays"):
        GibbsPosterior(_x_dtype_model(), {"x": np.ones(3) + 1j}, n_beta=1.0)


def test_bool_data_become_int64_zero_one():
    post = GibbsPosterior(_x_dtype_model(), {"x": np.array([True, False, True])}, n_beta=1.0)
    assert post.data["x"].dtype == np.int64 and post.data["x"].tolist() == [1, 0, 1]


@pytest.mark.parametrize("value, dtype", [([2**70, 1], "object"), (["a", "b"], "<U1")])
def test_non_numeric_data_is_refused_naming_the_key(value, dtype):
    with pytest.raises(TypeError, match=rf"`data\['x'\]` has dtype {dtype} .*convert it to an int64 or float64"):
        GibbsPosterior(_x_dtype_model(), {"x": value}, n_beta=1.0)


def test_float_data_still_finite_checked():
    with pytest.raises(ValueError, match=r"`data\['x'\]` contains 1 NaN"):
        GibbsPosterior(_x_dtype_model(), {"x": np.array([1.0, np.nan])}, n_beta=1.0)


def test_integer_data_in_observables_and_probes():
    post = GibbsPosterior(_x_dtype_model(), {"x": np.arange(6)}, n_beta=1.0)
    phi = component_loss(post, "w", data={"x": np.arange(3, dtype=np.int32)})
    assert phi.data["x"].dtype == np.int64
    plan = Probes(datasets={"p": {"x": np.arange(4)}}).resolve(post, SamplerSettings(num_draws=10))
    assert plan.datasets["p"]["x"].dtype == np.int64
    with pytest.raises(TypeError, match=r"`probes.datasets\['p'\]\['x'\]` has dtype float64; the training data's "
                                        r"'x' is int64"):
        Probes(datasets={"p": {"x": np.arange(4.0)}}).resolve(post, SamplerSettings(num_draws=10))
    with pytest.raises(TypeError, match=r"`probes.held_out\['x'\]` is complex"):
        Probes(held_out={"x": np.ones(2) * 1j}).resolve(post, SamplerSettings(num_draws=10))


# ------------------------------------------------- C1: observables and probes at the centre
def _backend_or_skip(name):
    pytest.importorskip("torch" if name == "pyro" else "jax")
    return sampling.get_backend(name)


def _raises(params, xp):
    raise RuntimeError("custom observable broke")


def _two_values(params, xp):
    return params["w"]


def _nan(params, xp):
    return params["b"] * float("nan")


@pytest.fixture
def no_sampling(monkeypatch, request):
    """The real backend, with its `sample` replaced by a test failure: only the check at the
    centre may run."""
    module = _backend_or_skip(request.param)
    monkeypatch.setattr(module, "run", lambda *a, **k: pytest.fail("sampling started before the check"))
    return request.param


@pytest.mark.parametrize("no_sampling", ["pyro", "numpyro"], indirect=True)
@pytest.mark.parametrize("phi, message", [
    (_raises, r"observable 'bad' failed at the centre w\*: RuntimeError: custom observable broke"),
    (_two_values, r"observable 'bad' must return a finite scalar \(shape \(\)\); at the centre w\* it returned "
                  r"shape \(2,\)"),
    (_nan, r"observable 'bad' must return a finite scalar.*nan"),
])
def test_bad_observable_fails_at_the_centre(post, no_sampling, phi, message):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=message) as info:
        sample(post, backend=no_sampling, sampler="mala", num_chains=1, num_draws=10, num_burnin=0,
               progress_bar=False, observables={"ok": lambda p, xp: p["b"], "bad": phi})
    assert time.perf_counter() - t0 < 30
    if phi is _raises:
        assert isinstance(info.value.__cause__, RuntimeError)  # chained


@pytest.mark.parametrize("no_sampling", ["pyro", "numpyro"], indirect=True)
def test_probe_data_set_loss_failing_at_the_centre(post, no_sampling, monkeypatch):
    def broken(loss_fn, params, datasets, consts, xp):
        raise IndexError("probe loss broke")

    monkeypatch.setattr(sampling, "dataset_losses", broken)
    probes = Probes(datasets={"shifted": {"x": np.ones((4, 2)), "y": np.zeros(4)}})
    with pytest.raises(ValueError, match=r"probe data set 'shifted' failed at the centre w\*: IndexError: "
                                         r"probe loss broke"):
        sample(post, backend=no_sampling, sampler="mala", num_chains=1, num_draws=10, num_burnin=0,
               progress_bar=False, probes=probes)


@pytest.mark.parametrize("no_sampling", ["pyro", "numpyro"], indirect=True)
def test_per_sample_probe_loss_of_wrong_shape(post, no_sampling, monkeypatch):
    monkeypatch.setattr(sampling, "sample_losses", lambda loss_fn, params, batch, consts, xp: xp.sum(batch["y"]))
    with pytest.raises(ValueError, match=r"the per-sample probe losses must return finite values of shape \(3,\); "
                                         r"at the centre w\* it returned shape \(\)"):
        sample(post, backend=no_sampling, sampler="mala", num_chains=1, num_draws=10, num_burnin=0,
               progress_bar=False, probes=Probes(per_sample=[0, 1, 2]))


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_good_observables_and_probes_pass_the_centre_check(post, backend):
    """The check itself must not refuse valid input: the real functions at the centre."""
    module = _backend_or_skip(backend)
    plan = Probes(datasets={"p": {"x": np.ones((4, 2)), "y": np.zeros(4)}}, per_sample=[0, 1],
                  held_out={"x": np.ones((1, 2)), "y": np.zeros(1)}).resolve(post, SamplerSettings(num_draws=10))
    sampling.check_at_centre(module, post, {"w0": lambda p, xp: p["w"][0], "phi": full_loss_of(post)}, plan)
    value = module.evaluate_at_centre(post, lambda p, c, xp: xp.sum(p["w"] ** 2) + p["b"])
    assert value.shape == () and value == pytest.approx(0.0)


def _embedding_loss(params, batch, consts, xp):
    """Token ids index an embedding table: float token ids would fail here."""
    return (params["E"][batch["tok"]] - batch["y"]) ** 2


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_token_ids_reach_the_backend_as_integers(backend):
    module = _backend_or_skip(backend)
    model = Model("emb", _embedding_loss, {"E": (5,)}, {"E": np.zeros(5)})
    tok = np.array([0, 4, 2, 2, 1])
    post = GibbsPosterior(model, {"tok": tok, "y": np.arange(5.0)}, n_beta=2.0)
    np.testing.assert_array_equal(post.loss_at_centre_per_sample, np.arange(5.0) ** 2)
    plan = Probes(datasets={"p": {"tok": np.array([3, 3]), "y": np.ones(2)}}, per_sample="all").resolve(
        post, SamplerSettings(num_draws=10))
    phi = {"e4": lambda p, xp: p["E"][4], "emb": full_loss_of(post)}
    sampling.check_at_centre(module, post, phi, plan)


def full_loss_of(post):
    from pplpatterning.spec.observables import full_loss

    return full_loss(post)


# ------------------------------------------------------------------------- C7: memory
def test_a_billion_chains_fail_in_milliseconds_naming_num_chains(post, no_backend):
    loaded = {m for m in ("jax", "torch") if m in sys.modules}
    t0 = time.perf_counter()
    with pytest.raises(MemoryError, match=r"nothing was compiled or sampled.*num_chains=1000000000.*"
                                          r"Use num_chains ≤ \d+"):
        sample(post, num_chains=10**9, progress_bar=False)
    assert time.perf_counter() - t0 < 0.5
    assert {m for m in ("jax", "torch") if m in sys.modules} == loaded  # no backend was imported


def test_too_many_draws_name_num_draws_and_keep_params(post, no_backend):
    settings = SamplerSettings(num_chains=2, num_draws=10**6)
    d = post.model.dim
    parts = sampling.estimate_memory(post, settings, keep_params=True)
    assert parts["draws"] == 2 * 10**6 * (2 * d + memory.PER_DRAW_STATS) * 8
    assert parts["state"] == 2 * (memory.STATE_COPIES * d + post.n) * 8 and parts["probes"] == 0
    without = sum(sampling.estimate_memory(post, settings, keep_params=False).values())
    avail = without + 1  # fits only without the second copy of the draws
    with pytest.raises(sampling.SampleMemoryError, match=r"num_draws=1000000 kept draws.*keep_params=True.*"
                                                         r"Use num_chains ≤ 1, or num_draws ≤ \d+ .*"
                                                         r"or keep_params=False\."):
        sampling.check_memory(post, settings, keep_params=True, available=avail)
    assert sampling.check_memory(post, settings, keep_params=False, available=avail) == without


def test_memory_estimate_recorded_in_the_trace(post, monkeypatch):
    class Fake:
        name, packages = "fake", ()

        @staticmethod
        def evaluate_at_centre(posterior, fn):
            return np.asarray(0.0)

        @staticmethod
        def run(posterior, settings, *, record, plan, keep_params):
            C, D = settings.num_chains, settings.num_draws
            values = Evaluation(np.zeros((C, D)), np.zeros((C, D)), {}, {}, None)
            return RunResult({"a": np.zeros((C, D))}, {}, None, "float64", values=values)

    monkeypatch.setattr(sampling, "get_backend", lambda name: Fake)
    tr = sample(post, num_chains=2, num_draws=10, progress_bar=False)
    expected = sum(sampling.estimate_memory(post, SamplerSettings(num_chains=2, num_draws=10),
                                            keep_params=True).values())
    assert tr.attrs["memory_estimate_bytes"] == expected
