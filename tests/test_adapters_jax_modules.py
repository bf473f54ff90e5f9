"""Flax NNX and Equinox modules on the NumPyro backend (backends/numpyro/modules.py, issue 12
item 2): the parameters are named from the module, the potential is the module's own
forward pass and loss, and one MLP's λ̂ with the same weights agrees across a torch
nn.Module (Pyro), a Flax NNX module and an Equinox module (NumPyro) within 4 combined MCSE."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
nnx = pytest.importorskip("flax.nnx")
eqx = pytest.importorskip("equinox")

import pplpatterning as pp  # noqa: E402
from pplpatterning.backends.numpyro import model_from_equinox, model_from_flax  # noqa: E402

D_IN, HIDDEN, N = 2, 8, 200
N_BETA, GAMMA = N / math.log(N), 10.0


def _weights(seed=0):
    """The MLP x -> tanh(x W1ᵀ + b1) W2ᵀ + b2, weights in torch's (out, in) layout."""
    rng = np.random.default_rng(seed)
    return {"W1": rng.normal(size=(HIDDEN, D_IN)), "b1": 0.5 * rng.normal(size=HIDDEN),
            "W2": rng.normal(size=(1, HIDDEN)) / math.sqrt(HIDDEN), "b2": 0.1 * rng.normal(size=1)}


def _data(w, seed=1):
    """y = f_w(x) + N(0, 0.5²): the weights are the teacher, the centre w*."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D_IN))
    y = np.tanh(x @ w["W1"].T + w["b1"]) @ w["W2"].T + w["b2"] + 0.5 * rng.normal(size=(N, 1))
    return {"x": x, "y": y}


def _direct_loss(w, data):
    """½ Σ_j (f_w(x)_j - y_j)² per sample, in NumPy."""
    out = np.tanh(data["x"] @ w["W1"].T + w["b1"]) @ w["W2"].T + w["b2"]
    return 0.5 * ((out - data["y"]) ** 2).sum(-1)


class FlaxMLP(nnx.Module):
    def __init__(self, w, rngs):
        self.hidden = nnx.Linear(D_IN, HIDDEN, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, 1, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)  # must be off in the posterior
        self.hidden.kernel[...] = jnp.asarray(w["W1"].T, dtype=jnp.float32)
        self.hidden.bias[...] = jnp.asarray(w["b1"], dtype=jnp.float32)
        self.out.kernel[...] = jnp.asarray(w["W2"].T, dtype=jnp.float32)
        self.out.bias[...] = jnp.asarray(w["b2"], dtype=jnp.float32)

    def __call__(self, x):
        return self.out(self.drop(jnp.tanh(self.hidden(x))))


def flax_loss(module, batch):
    return 0.5 * ((module(batch["x"]) - batch["y"]) ** 2).sum(-1)


def _equinox_mlp(w):
    mlp = eqx.nn.MLP(D_IN, 1, HIDDEN, 1, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    leaves = [jnp.asarray(w[k], dtype=jnp.float32) for k in ("W1", "b1", "W2", "b2")]
    return eqx.tree_at(lambda m: (m.layers[0].weight, m.layers[0].bias, m.layers[1].weight, m.layers[1].bias),
                       mlp, leaves)


def equinox_loss(module, batch):
    return 0.5 * ((jax.vmap(module)(batch["x"]) - batch["y"]) ** 2).sum(-1)


def _to_torch_names(w):
    return {"0.weight": w["W1"], "0.bias": w["b1"], "2.weight": w["W2"], "2.bias": w["b2"]}


def _to_flax_names(w):
    return {"hidden.kernel": w["W1"].T, "hidden.bias": w["b1"], "out.kernel": w["W2"].T, "out.bias": w["b2"]}


def _to_equinox_names(w):
    return {"layers.0.weight": w["W1"], "layers.0.bias": w["b1"], "layers.1.weight": w["W2"], "layers.1.bias": w["b2"]}


def _float32(w):
    """The weights as the frameworks hold them (float32): the common centre w*."""
    return {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in w.items()}


@pytest.fixture(scope="module")
def setup():
    w = _float32(_weights())
    data = _data(w)
    flax_module = FlaxMLP(w, nnx.Rngs(0))
    eqx_module = _equinox_mlp(w)
    models = {"flax": model_from_flax(flax_module, flax_loss, name="mlp-flax", example_data=data),
              "equinox": model_from_equinox(eqx_module, equinox_loss, name="mlp-eqx", example_data=data)}
    return w, data, flax_module, eqx_module, models


def test_parameters_are_named_from_the_module_and_the_module_is_untouched(setup):
    w, data, flax_module, eqx_module, models = setup
    assert dict(models["flax"].param_shapes) == {"hidden.bias": (8,), "hidden.kernel": (2, 8), "out.bias": (1,),
                                                 "out.kernel": (8, 1)}
    assert dict(models["equinox"].param_shapes) == {"layers.0.weight": (8, 2), "layers.0.bias": (8,),
                                                    "layers.1.weight": (1, 8), "layers.1.bias": (1,)}
    for key, names in (("flax", _to_flax_names(w)), ("equinox", _to_equinox_names(w))):
        for name, value in names.items():
            np.testing.assert_array_equal(models[key].centre[name], value)
            assert models[key].centre[name].dtype == np.float64
    assert flax_module.drop.deterministic is False  # the posterior uses an eval-mode view, not the module
    assert flax_module.hidden.kernel.get_value().dtype == jnp.float32


@pytest.mark.parametrize("key", ["flax", "equinox"])
def test_potential_is_the_modules_own_forward_and_loss(setup, key):
    w, data, flax_module, eqx_module, models = setup
    post = pp.GibbsPosterior(models[key], data, n_beta=N_BETA, gamma=GAMMA)
    rng = np.random.default_rng(3)
    moved = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in w.items()}
    params = (_to_flax_names if key == "flax" else _to_equinox_names)(moved)
    with jax.enable_x64(True):  # the framework's own forward pass, float64, on a module holding `moved`
        if key == "flax":
            module = FlaxMLP(w, nnx.Rngs(0))
            module.eval()
            for layer, (W, b) in (("hidden", ("W1", "b1")), ("out", ("W2", "b2"))):
                getattr(module, layer).kernel.set_value(jnp.asarray(moved[W].T))
                getattr(module, layer).bias.set_value(jnp.asarray(moved[b]))
            direct = np.asarray(flax_loss(module, data))
        else:
            module = eqx.tree_at(lambda m: (m.layers[0].weight, m.layers[0].bias, m.layers[1].weight,
                                            m.layers[1].bias), _equinox_mlp(w),
                                 [jnp.asarray(moved[k]) for k in ("W1", "b1", "W2", "b2")])
            direct = np.asarray(equinox_loss(module, data))
    np.testing.assert_allclose(direct, _direct_loss(moved, data), rtol=1e-12)
    sq = sum(float(((params[k] - post.centre[k]) ** 2).sum()) for k in params)
    assert post.potential(params) == pytest.approx(N_BETA * direct.mean() + 0.5 * GAMMA * sq, rel=1e-10)
    from pplpatterning.backends.numpyro import potential_and_grad

    value, grad = potential_and_grad(post, params)
    assert value == pytest.approx(post.potential(params), rel=1e-10)
    assert set(grad) == set(params)


def test_llc_of_one_mlp_agrees_across_torch_flax_and_equinox(setup):
    torch = pytest.importorskip("torch")
    pytest.importorskip("pplpatterning.backends.pyro")
    from pplpatterning.backends.pyro import model_from_module

    w, data, _, _, models = setup
    net = torch.nn.Sequential(torch.nn.Linear(D_IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 1))
    with torch.no_grad():
        for name, value in _to_torch_names(w).items():
            net.get_parameter(name).copy_(torch.as_tensor(value))

    def mse(out, batch):
        return 0.5 * ((out - batch["y"]) ** 2).sum(-1)

    posts = {"torch": pp.GibbsPosterior(model_from_module(net, mse, name="mlp-torch"), data, n_beta=N_BETA,
                                        gamma=GAMMA)}
    posts.update({k: pp.GibbsPosterior(m, data, n_beta=N_BETA, gamma=GAMMA) for k, m in models.items()})
    # one posterior: equal potentials at the same (renamed) weights away from the centre
    rng = np.random.default_rng(4)
    moved = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in w.items()}
    ref = N_BETA * _direct_loss(moved, data).mean() + 0.5 * GAMMA * sum(
        float(((moved[k] - w[k]) ** 2).sum()) for k in w)
    for key, rename in (("torch", _to_torch_names), ("flax", _to_flax_names), ("equinox", _to_equinox_names)):
        assert posts[key].potential(rename(moved)) == pytest.approx(ref, rel=1e-10)
    run = dict(sampler="mala", num_chains=4, num_draws=500, num_burnin=100, seed=0, progress_bar=False)
    est = {k: pp.llc(pp.sample(p, backend="pyro" if k == "torch" else "numpyro", **run)) for k, p in posts.items()}
    for k, e in est.items():
        assert e.mcse < 0.05 * e.llc, (k, e)  # a real test: λ̂ resolved to a few per cent
    for a, b in (("torch", "flax"), ("torch", "equinox"), ("flax", "equinox")):
        se = math.hypot(est[a].mcse, est[b].mcse)
        assert abs(est[a].llc - est[b].llc) < 4 * se, (a, b, est[a], est[b])


# ------------------------------------------------------------------ bad input
def test_bad_input_is_named(setup):
    w, data, flax_module, eqx_module, _ = setup

    class NoParams(nnx.Module):
        def __init__(self):
            self.scale = 2.0

        def __call__(self, x):
            return self.scale * x

    with pytest.raises(ValueError, match="no nnx.Param variables"):
        model_from_flax(NoParams(), flax_loss)
    with pytest.raises(TypeError, match="must be a flax.nnx.Module"):
        model_from_flax(eqx_module, flax_loss)
    with pytest.raises(TypeError, match="must be an equinox.Module"):
        model_from_equinox(flax_module, equinox_loss)
    with pytest.raises(TypeError, match="`per_sample_loss` must be callable"):
        model_from_flax(flax_module, "mse")
    with pytest.raises(ValueError, match="no floating-point arrays"):
        model_from_equinox(eqx.nn.Lambda(jnp.tanh), equinox_loss)

    def mean_loss(module, batch):  # averaged over the batch: not a per-sample loss
        return flax_loss(module, batch).mean()

    with pytest.raises(ValueError, match=r"one loss per sample, shape \(8,\).*drop a final `.mean\(\)`"):
        model_from_flax(flax_module, mean_loss, example_data=data)
    with pytest.raises(ValueError, match="one loss per sample"):  # found when the posterior is built, too
        pp.GibbsPosterior(model_from_equinox(eqx_module, lambda m, b: equinox_loss(m, b)[:, None]), data)
    with pytest.raises(TypeError, match="runs on the numpyro backend only"):
        import array_api_compat.torch as xpt

        model = model_from_flax(flax_module, flax_loss)
        model.loss(dict(model.centre), data, {}, xpt)
