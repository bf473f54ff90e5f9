"""Users' own torch.nn.Module networks on the Pyro backend (backends/pyro/user.py)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pb = pytest.importorskip("pplpatterning.backends.pyro")

import pplpatterning as pp  # noqa: E402
from pplpatterning.backends.pyro import model_from_module  # noqa: E402
from pplpatterning.trace import trace_attr  # noqa: E402


def _mlp(seed: int = 0, dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(dtype)


def _data(n: int = 128, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    y = np.tanh(x[:, :1] - 0.5 * x[:, 1:]) + 0.1 * rng.standard_normal((n, 1))
    return {"x": x, "y": y}


def mse(out, batch):
    """Gaussian NLL per sample, unit noise: ½ Σ_j (out_j - y_j)²."""
    return 0.5 * torch.nn.functional.mse_loss(out, batch["y"], reduction="none").sum(-1)


def _trained_mlp() -> torch.nn.Module:
    """The MLP trained to a local minimum of L_n (LBFGS in float64), handed over in float32."""
    net = _mlp().double()
    data = {k: torch.tensor(v) for k, v in _data().items()}
    opt = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=150, tolerance_grad=1e-12,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = mse(net(data["x"]), data).mean()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 33-parameter problem: the thread pool only costs time
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return net.float()


@pytest.fixture(scope="module")
def mlp_post():
    net = _trained_mlp()
    model = model_from_module(net, mse, name="mlp", example_data=_data())
    return net, model, pp.GibbsPosterior(model, _data(), n_beta=50.0, gamma=100.0)


def test_model_from_module_contract(mlp_post):
    net, model, post = mlp_post
    assert list(model.param_shapes) == [name for name, _ in net.named_parameters()]
    assert model.param_shapes["0.weight"] == (8, 2)
    for name, p in net.named_parameters():
        np.testing.assert_array_equal(model.centre[name], p.detach().double().numpy())
        assert model.centre[name].dtype == np.float64
    # the loss is one value per sample and agrees with the module run by hand in float64
    data = _data()
    ref64 = _mlp().double()
    ref64.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
    ref = mse(ref64(torch.tensor(data["x"])), {"y": torch.tensor(data["y"])}).detach().numpy()
    np.testing.assert_allclose(post.loss_at_centre_per_sample, ref, rtol=1e-12)
    # identity-based equality/hash of the loss object
    other = model_from_module(net, mse)
    assert model.loss == model.loss and model.loss != other.loss
    assert hash(model.loss) == id(model.loss)


def test_potential_and_gradient_match_autograd(mlp_post):
    net, model, post = mlp_post
    rng = np.random.default_rng(1)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in post.centre.items()}
    value, grad = pb.potential_and_grad(post, params)
    value_direct, grad_direct = pb.potential_and_grad(post, params, route="direct")
    assert value == pytest.approx(post.potential(params), rel=1e-12)
    assert value_direct == pytest.approx(value, rel=1e-12)
    # autograd on a float64 copy of the network, by hand
    ref = _mlp().double()  # same architecture; parameters overwritten below
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(torch.tensor(params[name]))
    data = _data()
    loss = mse(ref(torch.tensor(data["x"])), {"y": torch.tensor(data["y"])}).mean()
    centre_sq = sum(((p - torch.tensor(post.centre[name])) ** 2).sum() for name, p in ref.named_parameters())
    U = post.n_beta * loss + 0.5 * post.gamma * centre_sq
    U.backward()
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(grad[name], p.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grad_direct[name], p.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_sgld_on_mlp_and_llc(mlp_post):
    net, model, post = mlp_post
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    obs = {"w_norm": lambda p, xp: xp.sum(p["2.weight"] ** 2)}
    tr = pp.sample(post, backend="pyro", sampler="sgld", num_chains=2, num_draws=200, num_burnin=100,
                   step_size=1e-3, batch_size=32, observables=obs, seed=0, progress_bar=False)
    est = pp.llc(tr)
    assert np.isfinite(est.llc) and np.isfinite(est.mcse)
    assert 0 < est.llc < model.dim / 2 + 10 * est.mcse
    assert tr["posterior"]["0.weight"].shape == (2, 200, 8, 2)
    assert tr["observables"]["w_norm"].shape == (2, 200)
    assert trace_attr(tr, "model") == "mlp" and trace_attr(tr, "backend") == "pyro"
    # the user's module is untouched: same dtype, same values
    assert next(net.parameters()).dtype == torch.float32
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_restricted_sampling_of_one_layer(mlp_post):
    _, _, post = mlp_post
    restricted = post.with_(sampled=("2.weight", "2.bias"))
    tr = pp.sample(restricted, backend="pyro", sampler="mala", num_chains=2, num_draws=100, num_burnin=100,
                   seed=0, progress_bar=False)
    assert set(tr["posterior"].to_dataset().data_vars) == {"2.weight", "2.bias"}
    assert np.isfinite(pp.llc(tr).llc)


# ------------------------------------------------------------------ bad input
def test_wrong_dtype_names_parameter_and_fix():
    net = _mlp(dtype=torch.float16)
    with pytest.raises(ValueError, match=r"'0\.weight'.*torch\.float16.*\.double\(\)"):
        model_from_module(net, mse)


def test_wrong_device_names_parameter_and_fix():
    net = torch.nn.Linear(2, 1, device="meta")
    with pytest.raises(ValueError, match=r"'weight'.*meta.*\.cpu\(\)"):
        model_from_module(net, mse)


def test_scalar_loss_is_rejected_with_reduction_hint():
    def mean_loss(out, batch):
        return torch.nn.functional.mse_loss(out, batch["y"])  # reduction="mean": one number

    with pytest.raises(ValueError, match="reduction='none'"):
        model_from_module(_mlp(), mean_loss, example_data=_data())
    # without example data, building the posterior (which evaluates l_i(w*)) says the same
    model = model_from_module(_mlp(), mean_loss)
    with pytest.raises(ValueError, match="reduction='none'"):
        pp.GibbsPosterior(model, _data(), n_beta=10.0)


def test_non_per_sample_shape_is_rejected():
    def unsummed(out, batch):
        return (out - batch["y"]) ** 2  # (batch, 1), not (batch,)

    with pytest.raises(ValueError, match=r"shape \(8,\).*\.sum\(-1\)"):
        model_from_module(_mlp(), unsummed, example_data=_data())


def test_other_argument_errors():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        model_from_module(lambda x: x, mse)
    with pytest.raises(TypeError, match="callable"):
        model_from_module(_mlp(), "mse")
    with pytest.raises(ValueError, match="no parameters"):
        model_from_module(torch.nn.Tanh(), mse)
    model = model_from_module(_mlp(), mse, input_key="inputs")
    with pytest.raises((KeyError, ValueError), match="input_key"):
        pp.GibbsPosterior(model, _data(), n_beta=10.0)


def test_rejects_non_torch_namespace(mlp_post):
    _, model, post = mlp_post
    jnp = pytest.importorskip("jax.numpy")
    params = {k: jnp.asarray(v) for k, v in post.centre.items()}
    with pytest.raises(TypeError, match="only runs on the pyro backend"):
        model.loss(params, {k: jnp.asarray(v) for k, v in post.data.items()}, {}, jnp)
