"""Declarative observables: values against direct NumPy, every array namespace, and clear
errors raised by sample() before anything is compiled (issue 5, point 1)."""

import numpy as np
import pytest

from pplpatterning import GibbsPosterior, sample
from pplpatterning.models import get_model
from pplpatterning.spec.observables import component_loss, full_loss, param, validate_observables


@pytest.fixture(scope="module")
def dln_post():
    model = get_model("dln", widths=(2, 3, 2), r=1)
    data = model.generate(40, seed=0)
    return GibbsPosterior(model, data, gamma=1.0)


def _random_params(post, seed=0):
    rng = np.random.default_rng(seed)
    return {k: post.centre[k] + 0.3 * rng.normal(size=s) for k, s in post.model.param_shapes.items()}


def test_component_loss_moves_only_the_component(dln_post):
    post = dln_post
    w = _random_params(post)
    # names: W1 moved, W2 at w*
    moved = {"W1": w["W1"], "W2": post.centre["W2"]}
    expected = post.loss(moved) - post.loss_at_centre
    assert component_loss(post, "W1")(w, np) == pytest.approx(expected, rel=1e-12)
    # mask: only W2[0, 1] moved
    mask = np.zeros((2, 3), bool)
    mask[0, 1] = True
    w2 = post.centre["W2"].copy()
    w2[0, 1] = w["W2"][0, 1]
    expected = post.loss({"W1": post.centre["W1"], "W2": w2}) - post.loss_at_centre
    assert component_loss(post, {"W2": mask})(w, np) == pytest.approx(expected, rel=1e-12)
    # all parameters = the full loss; zero at the centre
    assert full_loss(post)(w, np) == pytest.approx(post.loss(w) - post.loss_at_centre, rel=1e-12)
    assert full_loss(post)(dict(post.centre), np) == 0.0
    assert component_loss(post, {"W1": np.ones((3, 2), bool)}).whole == ("W1",)


def test_observables_ignore_data_weights(dln_post):
    rho = np.linspace(0.0, 2.0, dln_post.n)
    weighted = dln_post.with_(weights=rho)
    w = _random_params(dln_post, 1)
    assert full_loss(weighted)(w, np) == pytest.approx(full_loss(dln_post)(w, np), rel=1e-14)
    other = {k: v[:7] for k, v in dln_post.data.items()}
    expected = np.mean(dln_post.model.per_sample_loss_numpy(w, other)
                       - dln_post.model.per_sample_loss_numpy(dln_post.centre, other))
    assert full_loss(dln_post, data=other)(w, np) == pytest.approx(expected, rel=1e-12)


def test_same_value_in_jax_and_torch(dln_post):
    import jax
    import jax.numpy as jnp
    import torch
    from array_api_compat import torch as xp_torch

    post = dln_post
    w = _random_params(post, 2)
    mask = np.zeros((2, 3), bool)
    mask[1, :] = True
    for phi in (full_loss(post), component_loss(post, "W2"), component_loss(post, {"W2": mask}), param("W1", (2, 0))):
        ref = float(phi(w, np))
        with jax.enable_x64(True):  # the backend's precision (it leaves the global setting alone)
            in_jax = jax.jit(lambda p: phi(p, jnp))({k: jnp.asarray(v) for k, v in w.items()})
        in_torch = phi({k: torch.as_tensor(v) for k, v in w.items()}, xp_torch)
        assert isinstance(in_torch, torch.Tensor) and in_torch.dtype == torch.float64
        assert in_jax.dtype == jnp.float64
        assert float(in_jax) == pytest.approx(ref, rel=1e-12, abs=1e-15)
        assert float(in_torch) == pytest.approx(ref, rel=1e-12, abs=1e-15)


def test_param_observable(dln_post):
    w = _random_params(dln_post, 3)
    assert param("W2", (1, 2))(w, np) == w["W2"][1, 2]
    assert param("a")({"a": np.float64(0.7), "b": np.float64(1.0)}, np) == 0.7


@pytest.mark.parametrize("make, message", [
    (lambda p: {"x": param("W3", (0, 0))}, r"param\('W3'\): unknown parameter"),
    (lambda p: {"x": param("W1", 0)}, r"give one index per dimension \(2\)"),
    (lambda p: {"x": param("W1", (3, 0))}, "index 3 out of range for dimension 0 of size 3"),
    (lambda p: {"x/y": param("W1", (0, 0))}, "without '/'"),
    (lambda p: {"x": 3.0}, "must be callable"),
    (lambda p: {"x": component_loss(GibbsPosterior(get_model("product"), get_model("product").generate(5)), "a")},
     "built for model 'product'"),
])
def test_invalid_observables_fail_before_compiling(dln_post, monkeypatch, make, message):
    import pplpatterning.sampling.core as sampling

    monkeypatch.setattr(sampling, "get_backend", lambda name: pytest.fail("reached the backend"))
    with pytest.raises((ValueError, TypeError), match=message):
        sample(dln_post, observables=make(dln_post), progress_bar=False)


@pytest.mark.parametrize("component, message", [
    ("W9", r"unknown parameters \['W9'\]"),
    ({"W1": np.zeros((2, 2), bool)}, r"has shape \(2, 2\); parameter 'W1' has shape \(3, 2\)"),
    ({"W1": np.zeros((3, 2))}, "must be a boolean mask"),
    ({"W1": np.zeros((3, 2), bool)}, "selects no parameter entry"),
    ((), "is empty"),
    (3, "must be a parameter name"),
])
def test_component_errors(dln_post, component, message):
    with pytest.raises((ValueError, TypeError), match=message):
        component_loss(dln_post, component)


def test_model_source_needs_data(dln_post):
    with pytest.raises(ValueError, match="pass `data`"):
        full_loss(dln_post.model)
    phi = full_loss(dln_post.model, data=dln_post.data)
    validate_observables({"phi": phi}, dln_post)
    with pytest.raises(TypeError, match="GibbsPosterior or a Model"):
        full_loss("dln")


def test_component_loss_arrays_are_arguments_of_the_compiled_record_not_constants(dln_post):
    """The observable's data and frozen centre reach the NumPyro program as traced arguments:
    closed over, XLA constant-folds the frozen part of the forward pass on them (54 s of
    compilation for a transformer's four component losses)."""
    jax = pytest.importorskip("jax")
    from pplpatterning.backends.numpyro.recording import Recorder, record_args
    from pplpatterning.backends.numpyro.spec import posterior_args
    from pplpatterning.sampling.record import make_record
    from pplpatterning.samplers.settings import SamplerSettings

    post = dln_post
    obs = {"w1": component_loss(post, "W1"), "all": full_loss(post), "p": param("W1", (0, 0))}
    w = _random_params(post, 3)
    arrays = obs["w1"].arrays()
    assert obs["w1"].evaluate(w, arrays, np) == obs["w1"](w, np)  # the same φ either way
    assert "W1" not in arrays["centre"] and set(arrays) == {"data", "consts", "centre", "masks", "loss_at_centre"}
    record = make_record(SamplerSettings(sampler="mala"), obs, None)
    with jax.enable_x64(True):
        args = posterior_args(post)
        rargs = record_args(None, args, record)
        assert set(rargs.observables) == {"w1", "all"}  # param() has no arrays
        recorder = Recorder(record, post.model.loss, 1)
        closed = jax.make_jaxpr(lambda a, r: recorder.values(a.centre, a, r))(args, rargs)
        values = jax.jit(lambda a, r: recorder.values(a.centre, a, r))(args, rargs)
    sizes = [np.size(c) for c in closed.consts]
    assert max(sizes, default=0) < post.n, sizes  # no data-sized constant
    assert float(values.observables["w1"][0]) == pytest.approx(0.0, abs=1e-12)  # φ_C(w*) = 0
    assert float(values.observables["p"][0]) == post.centre["W1"][0, 0]
