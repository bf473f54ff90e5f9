"""A user's JAX function of a parameter pytree runs as a model on the NumPyro backend (issue 3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pplpatterning import GibbsPosterior, llc, sample
from pplpatterning.backends.numpyro import model_from_jax, potential_and_grad


def mlp_loss(params, batch):
    h = jnp.tanh(batch["x"] @ params["layers"][0]["w"] + params["layers"][0]["b"])
    out = h @ params["layers"][1]["w"]
    return 0.5 * (batch["y"] - out[:, 0]) ** 2


@pytest.fixture(scope="module")
def mlp():
    rng = np.random.default_rng(0)
    params = {"layers": [{"w": rng.normal(size=(2, 3)) * 0.5, "b": np.zeros(3)}, {"w": rng.normal(size=(3, 1))}]}
    x = rng.normal(size=(300, 2))
    y = np.tanh(x @ params["layers"][0]["w"]) @ params["layers"][1]["w"][:, 0] + 0.1 * rng.normal(size=300)
    return params, {"x": x, "y": y}


def test_pytree_leaves_become_named_parameters(mlp):
    params, data = mlp
    model = model_from_jax(mlp_loss, params, name="mlp")
    assert list(model.param_shapes) == ["layers.0.b", "layers.0.w", "layers.1.w"]
    assert model.param_shapes["layers.0.w"] == (2, 3)
    post = GibbsPosterior(model, data, n_beta=100.0, gamma=10.0)
    with jax.enable_x64(True):  # the reference in float64 (the backend never turns x64 on globally)
        expected = 100.0 * float(np.mean(np.asarray(mlp_loss(params, data))))
    assert post.potential(dict(post.centre)) == pytest.approx(expected, rel=1e-12)
    value, grad = potential_and_grad(post, dict(post.centre))
    assert value == pytest.approx(expected, rel=1e-12)
    assert set(grad) == set(model.param_shapes)


def test_sampling_a_user_model_and_restricting_a_layer(mlp):
    params, data = mlp
    model = model_from_jax(mlp_loss, params, name="mlp")
    post = GibbsPosterior(model, data, n_beta=100.0, gamma=100.0, sampled=("layers.1.w",))
    tr = sample(post, sampler="sgld", step_size=1e-4, num_chains=2, num_draws=200, num_burnin=100,
                progress_bar=False)
    assert tr["posterior"]["layers.1.w"].shape == (2, 200, 3, 1)
    assert "layers.0.w" not in tr["posterior"]
    est = llc(tr)
    assert np.isfinite(est.llc) and est.llc > 0


def test_bad_inputs_are_named(mlp):
    params, data = mlp
    with pytest.raises(TypeError, match="`per_sample_loss` must be callable"):
        model_from_jax(None, params)
    with pytest.raises(ValueError, match="`params` has no array leaves"):
        model_from_jax(mlp_loss, {})
    with pytest.raises(TypeError, match="leaf 'n' has dtype int64"):
        model_from_jax(mlp_loss, {"n": np.arange(3)})
    model = model_from_jax(lambda p, b: jnp.mean(b["y"] - p["w"]), {"w": np.zeros(())})
    with pytest.raises(ValueError, match="one loss per sample"):
        GibbsPosterior(model, data)
    with pytest.raises(TypeError, match="runs on the numpyro backend only"):
        import array_api_compat.torch as xpt

        model_from_jax(mlp_loss, params).loss(params, data, {}, xpt)
