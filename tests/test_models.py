"""The toy-model zoo: contract, cross-backend agreement, centres, data and exact targets.

No MCMC here: the exact finite-nβ targets are checked against independent numerical
integration (scipy quadrature, tensor-product Gauss–Legendre grids) or exact sampling.
"""

from __future__ import annotations

import inspect
import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize

from pplpatterning import GibbsPosterior, Model
from pplpatterning.models import MODELS, get_model

# Configurations exercised by the generic tests: every registry model, with defaults and
# with non-default arguments (negative truths, splits, r > 0, deeper/odd exponents).
CASES = [
    ("regular", {}),
    ("regular", {"d": 3, "split": 1, "w_true": [0.5, -1.0, 2.0], "sigma": 0.7}),
    ("normal_crossing", {}),
    ("normal_crossing", {"k": (3, 1, 2), "sigma": 0.5}),
    ("product", {}),
    ("powers", {}),
    ("powers", {"k": (1, 2, 3), "c": (0.5, 1.0, 2.0), "split": 2}),
    ("norm_power", {}),
    ("norm_power", {"d": 3, "k": 1}),
    ("tanh", {}),
    ("tanh", {"H": 3, "sigma": 0.5}),
    ("gaussian_mixture", {}),
    ("gaussian_mixture", {"variant": "weight", "weight": 0.3, "sigma": 1.5}),
    ("rrr", {}),
    ("rrr", {"M": 2, "N": 3, "H": 2, "r": 0, "sigma": 2.0}),
    ("dln", {}),
    ("dln", {"widths": (3, 2, 4), "r": 1}),
    ("two_solutions", {}),
    ("two_solutions", {"p": 0.3, "noise": 0.2, "sigma": 0.5}),
]
CASE_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def _model(case) -> Model:
    name, kwargs = case
    return get_model(name, **kwargs)


def _random_params(model: Model, rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {k: scale * rng.standard_normal(shape) for k, shape in model.param_shapes.items()}


@pytest.fixture(scope="module")
def jnp():
    import jax

    old = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jax_numpy

    yield jax_numpy
    jax.config.update("jax_enable_x64", old)


@pytest.fixture(scope="module")
def xtorch():
    import array_api_compat.torch as xp_torch

    return xp_torch


def _to_torch(arrays):
    import torch

    return {k: torch.asarray(np.array(v, dtype=np.float64, copy=True), dtype=torch.float64) for k, v in arrays.items()}


def _to_jax(jnp, arrays):
    return {k: jnp.asarray(np.asarray(v, dtype=np.float64)) for k, v in arrays.items()}


# --------------------------------------------------------------------------- contract


def test_registry_covers_every_model():
    assert set(MODELS) == {"regular", "normal_crossing", "product", "powers", "norm_power", "tanh",
                           "gaussian_mixture", "rrr", "dln", "two_solutions"}
    assert {name for name, _ in CASES} == set(MODELS)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_contract_fields(case):
    model = _model(case)
    assert isinstance(model, Model)
    loss = model.loss
    # module-level function: not a lambda, closure or bound method
    assert inspect.isfunction(loss) and loss.__name__ != "<lambda>"
    assert loss.__qualname__ == loss.__name__
    assert getattr(sys.modules[loss.__module__], loss.__name__) is loss
    assert loss.__closure__ is None
    for value in model.consts.values():
        assert isinstance(value, np.ndarray) and value.dtype == np.float64
    assert model.lam is not None and 0 <= model.lam <= model.dim / 2
    assert isinstance(model.multiplicity, int) and model.multiplicity >= 1
    assert model.description
    # two instances of a family share the loss function (backends key compiled code on it)
    assert get_model(case[0]).loss is loss


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_data_generator_reproducible(case):
    model = _model(case)
    a, b, c = model.generate(40, seed=3), model.generate(40, seed=3), model.generate(40, seed=4)
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == np.float64 and a[key].shape[0] == 40
        np.testing.assert_array_equal(a[key], b[key])
    if case[0] not in ("powers", "norm_power"):  # dummy all-zero data
        assert any(not np.array_equal(a[k], c[k]) for k in a)
    post = GibbsPosterior(model, a, n_beta=10.0)
    assert post.loss_at_centre_per_sample.shape == (40,)


# ------------------------------------------------------------ three backends agree


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_loss_agrees_across_numpy_jax_torch(case, jnp, xtorch):
    model = _model(case)

    @settings(max_examples=8, deadline=None, derandomize=True)
    @given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), scale=st.sampled_from([0.3, 1.0, 3.0]))
    def check(seed, n, scale):
        rng = np.random.default_rng(seed)
        data = model.generate(n, seed=seed)
        params = _random_params(model, rng, scale)
        consts = dict(model.consts)
        ref = np.asarray(model.loss(params, data, consts, np))
        out_jax = np.asarray(model.loss(_to_jax(jnp, params), _to_jax(jnp, data), _to_jax(jnp, consts), jnp))
        out_torch = model.loss(_to_torch(params), _to_torch(data), _to_torch(consts), xtorch).numpy()
        assert ref.shape == out_jax.shape == out_torch.shape == (n,)
        assert out_jax.dtype == out_torch.dtype == np.float64
        floor = 1e-14 * max(1.0, float(np.max(np.abs(ref))))
        np.testing.assert_allclose(out_jax, ref, rtol=1e-12, atol=floor)
        np.testing.assert_allclose(out_torch, ref, rtol=1e-12, atol=floor)

    check()


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_loss_jits_with_traced_consts_and_gradients_agree(case, jnp, xtorch):
    """jax.jit with consts as traced arguments (no Python control flow on values), and the
    gradient of Σ_i l_i agrees between jax.grad, torch autograd and finite differences,
    at the centre (zeros: the singular point) and at a random point with negative entries."""
    import jax
    import torch

    model = _model(case)
    data = model.generate(16, seed=1)
    loss = model.loss
    jitted = jax.jit(lambda p, b, c: loss(p, b, c, jnp))
    grad_jax = jax.jit(jax.grad(lambda p, b, c: jnp.sum(loss(p, b, c, jnp))))
    consts_j, data_j = _to_jax(jnp, model.consts), _to_jax(jnp, data)
    rng = np.random.default_rng(0)
    for params in (dict(model.centre), _random_params(model, rng, 0.8)):
        ref = model.per_sample_loss_numpy(params, data)
        np.testing.assert_allclose(np.asarray(jitted(_to_jax(jnp, params), data_j, consts_j)), ref, rtol=1e-12,
                                   atol=1e-14)
        gj = grad_jax(_to_jax(jnp, params), data_j, consts_j)
        pt = {k: v.requires_grad_(True) for k, v in _to_torch(params).items()}
        torch.sum(loss(pt, _to_torch(data), _to_torch(model.consts), xtorch)).backward()
        for k in params:
            g_jax = np.asarray(gj[k])
            g_torch = pt[k].grad.numpy()
            assert np.all(np.isfinite(g_jax))
            np.testing.assert_allclose(g_torch, g_jax, rtol=1e-11, atol=1e-12)
            # central finite differences on a few coordinates
            flat = np.asarray(params[k], dtype=np.float64).reshape(-1)
            for j in range(min(3, flat.size)):
                h = 1e-6
                up, dn = flat.copy(), flat.copy()
                up[j] += h
                dn[j] -= h
                shape = model.param_shapes[k]
                lu = np.sum(model.per_sample_loss_numpy({**params, k: up.reshape(shape)}, data))
                ld = np.sum(model.per_sample_loss_numpy({**params, k: dn.reshape(shape)}, data))
                fd = (lu - ld) / (2 * h)
                assert abs(fd - g_jax.reshape(-1)[j]) <= 1e-5 * max(1.0, abs(fd))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_hessians_finite_and_agree_at_centre(case, jnp, xtorch):
    """Second derivatives exist at the singular centre (no NaN from pow(0, 0) branches)."""
    import jax
    import torch

    model = _model(case)
    data = model.generate(6, seed=2)
    names = list(model.param_shapes)
    shapes = [model.param_shapes[k] for k in names]
    sizes = [int(np.prod(s)) for s in shapes]

    def unflatten(flat, xp):
        out, start = {}, 0
        for name, shape, size in zip(names, shapes, sizes):
            out[name] = xp.reshape(flat[start:start + size], shape)
            start += size
        return out

    flat0 = np.concatenate([np.asarray(model.centre[k]).reshape(-1) for k in names])
    cj, dj = _to_jax(jnp, model.consts), _to_jax(jnp, data)
    hess = jax.jit(jax.hessian(lambda f, d, c: jnp.sum(model.loss(unflatten(f, jnp), d, c, jnp))))
    h_jax = np.asarray(hess(jnp.asarray(flat0), dj, cj))
    ct, dt = _to_torch(model.consts), _to_torch(data)
    h_torch = torch.autograd.functional.hessian(
        lambda f: torch.sum(model.loss(unflatten(f, xtorch), dt, ct, xtorch)), torch.asarray(flat0.copy())
    ).numpy()
    assert np.all(np.isfinite(h_jax))
    np.testing.assert_allclose(h_torch, h_jax, rtol=1e-11, atol=1e-12)


def test_odd_powers_keep_their_sign(jnp, xtorch):
    """xp.pow with float exponents is exact and sign-correct for negative bases on all backends."""
    import torch

    w = np.array([-2.0, -0.5, 0.0, 1.5])
    k = np.array([3.0, 1.0, 2.0, 3.0])
    expected = np.array([-8.0, -0.5, 0.0, 3.375])
    np.testing.assert_array_equal(np.pow(w, k), expected)
    np.testing.assert_array_equal(np.asarray(jnp.pow(jnp.asarray(w), jnp.asarray(k))), expected)
    np.testing.assert_array_equal(xtorch.pow(torch.asarray(w), torch.asarray(k)).numpy(), expected)
    model = get_model("normal_crossing", k=(3, 1))
    data = {"x": np.array([1.0]), "y": np.array([0.0])}
    # f = (-1)^3 · 2 = -2; loss = (0 - 1·(-2))²/2 = 2, and y = -2 gives 0
    assert model.per_sample_loss_numpy({"w": np.array([-1.0, 2.0])}, data)[0] == 2.0
    data_neg = {"x": np.array([1.0]), "y": np.array([-2.0])}
    assert model.per_sample_loss_numpy({"w": np.array([-1.0, 2.0])}, data_neg)[0] == 0.0


# ------------------------------------------------------------------------- centres


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_centre_is_a_minimum_of_the_population_loss(case):
    model = _model(case)
    rng = np.random.default_rng(11)
    if case[0] in ("powers", "norm_power"):
        data = model.generate(5, seed=0)
        assert np.all(model.per_sample_loss_numpy(model.centre, data) == 0.0)
        for _ in range(20):
            assert np.all(model.per_sample_loss_numpy(_random_params(model, rng), data) > 0.0)
        return
    data = model.generate(20000, seed=5)
    at_centre = float(np.mean(model.per_sample_loss_numpy(model.centre, data)))
    for _ in range(20):
        perturbed = {}
        for k, v in model.centre.items():
            step = rng.choice([-1.0, 1.0], size=v.shape) * rng.uniform(0.5, 1.5, size=v.shape)
            perturbed[k] = v + step
        assert float(np.mean(model.per_sample_loss_numpy(perturbed, data))) > at_centre


def test_regular_centre_fn_is_least_squares_minimum():
    model = get_model("regular", d=3, w_true=[1.0, -2.0, 0.5])
    data = model.generate(200, seed=2)
    centre = model.centre_for(data)
    np.testing.assert_allclose(centre["w"], np.linalg.lstsq(data["x"], data["y"], rcond=None)[0], rtol=1e-12)
    post = GibbsPosterior(model, data)
    base = post.loss_at_centre
    rng = np.random.default_rng(0)
    for _ in range(10):
        assert post.loss({"w": centre["w"] + 1e-3 * rng.standard_normal(3)}) > base
    split = get_model("regular", d=3, w_true=[1.0, -2.0, 0.5], split=2)
    c2 = split.centre_for(data)
    np.testing.assert_allclose(np.concatenate([c2["u"], c2["v"]]), centre["w"], rtol=1e-12)


# ------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("name", "kwargs", "argname"),
    [
        ("regular", {"d": 0}, "d"),
        ("regular", {"d": 2.5}, "d"),
        ("regular", {"d": True}, "d"),
        ("regular", {"sigma": 0.0}, "sigma"),
        ("regular", {"sigma": float("nan")}, "sigma"),
        ("regular", {"w_true": [1.0, 2.0, 3.0]}, "w_true"),
        ("regular", {"split": 2}, "split"),
        ("regular", {"split": 0}, "split"),
        ("normal_crossing", {"k": (1, 0)}, "k"),
        ("normal_crossing", {"k": (1.5, 2)}, "k"),
        ("normal_crossing", {"k": ()}, "k"),
        ("normal_crossing", {"k": 2}, "k"),
        ("normal_crossing", {"sigma": -1.0}, "sigma"),
        ("product", {"sigma": "1"}, "sigma"),
        ("powers", {"k": (1, 2), "c": (1.0,)}, "c"),
        ("powers", {"c": (1.0, 0.0)}, "c"),
        ("powers", {"k": (-1, 2)}, "k"),
        ("powers", {"split": 5}, "split"),
        ("rrr", {"M": 0}, "M"),
        ("rrr", {"N": -2}, "N"),
        ("rrr", {"H": 1.5}, "H"),
        ("rrr", {"r": 4}, "r"),
        ("rrr", {"r": -1}, "r"),
        ("rrr", {"sigma": 0}, "sigma"),
        ("dln", {"widths": (2,)}, "widths"),
        ("dln", {"widths": (2, 0, 2)}, "widths"),
        ("dln", {"widths": 3}, "widths"),
        ("dln", {"r": 3}, "r"),
        ("dln", {"sigma": float("inf")}, "sigma"),
        ("norm_power", {"d": 0}, "d"),
        ("norm_power", {"k": 1.5}, "k"),
        ("norm_power", {"k": 0}, "k"),
        ("tanh", {"H": 0}, "H"),
        ("tanh", {"H": 2.0}, "H"),
        ("tanh", {"sigma": -0.1}, "sigma"),
        ("gaussian_mixture", {"variant": "symmetric"}, "variant"),
        ("gaussian_mixture", {"variant": 1}, "variant"),
        ("gaussian_mixture", {"sigma": 0.0}, "sigma"),
        ("gaussian_mixture", {"variant": "weight", "weight": 1.0}, "weight"),
        ("gaussian_mixture", {"variant": "weight", "weight": 0.0}, "weight"),
        ("gaussian_mixture", {"weight": float("nan")}, "weight"),
    ],
)
def test_bad_factory_arguments_raise_value_error_naming_them(name, kwargs, argname):
    with pytest.raises(ValueError, match=f"`{argname}"):
        get_model(name, **kwargs)


def test_get_model_unknown_name_and_keyword():
    with pytest.raises(ValueError, match="valid models are: regular, normal_crossing"):
        get_model("sigmoid")
    with pytest.raises(ValueError, match=r"unknown keyword argument\(s\) \['D'\].*valid ones are: d, sigma"):
        get_model("regular", D=3)


# ------------------------------------------------------------- regular: exact target


def _weighted_ls(x, y, c):
    return np.linalg.solve(x.T @ (c[:, None] * x), x.T @ (c * y))


@pytest.mark.parametrize("n_beta", [0.5, 7.0, 300.0, 1e6])
def test_regular_target_is_half_dim_at_least_squares_centre(n_beta):
    for d, split in ((1, None), (3, None), (4, 1)):
        model = get_model("regular", d=d, w_true=np.linspace(-1.0, 1.0, d), split=split)
        data = model.generate(50, seed=d)
        post = GibbsPosterior(model, data, n_beta=n_beta)  # centre = LS estimate
        assert post.model.target_fn(post) == pytest.approx(d / 2, abs=1e-9)
        if split is not None:
            for sampled, dim in ((("u",), split), (("v",), d - split)):
                assert model.target_fn(post.with_(sampled=sampled)) == pytest.approx(dim / 2, abs=1e-9)
    # weighted: the exact minimiser is the weighted LS estimate
    model = get_model("regular", d=2)
    data = model.generate(60, seed=9)
    rho = np.random.default_rng(1).uniform(0.2, 3.0, size=60)
    w_hat = _weighted_ls(data["x"], data["y"], rho)
    for norm in (False, True):
        post = GibbsPosterior(model, data, centre={"w": w_hat}, n_beta=n_beta, weights=rho, normalize_weights=norm)
        assert model.target_fn(post) == pytest.approx(1.0, abs=1e-9)
        # localization at the minimiser: ½ Σ_k nβh_k/(nβh_k + γ) < d/2 (docs/math.md §6)
        x, c = data["x"], post.effective_weights
        h = np.linalg.eigvalsh(x.T @ (c[:, None] * x) / 60)
        gamma = 2.5
        expected = 0.5 * float(np.sum(n_beta * h / (n_beta * h + gamma)))
        got = model.target_fn(post.with_(gamma=gamma))
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert got < 1.0


def _quad_target_1d(loss_1d, centre, n_beta, gamma):
    """nβ(E[L] - L(w*)) for p(w) ∝ exp(-nβ L(w) - γ/2 (w - w*)²) by plain scipy quad."""
    def potential(w):
        return n_beta * loss_1d(w) + 0.5 * gamma * (w - centre) ** 2

    mode = optimize.minimize_scalar(potential).x
    h = 1e-4
    curv = (potential(mode + h) - 2 * potential(mode) + potential(mode - h)) / h**2
    width = 40.0 / math.sqrt(curv)
    u0 = potential(mode)

    def dens(w):
        return math.exp(-(potential(w) - u0))

    lo, hi = mode - width, mode + width
    z = integrate.quad(dens, lo, hi, epsabs=0, epsrel=1e-13, limit=200, points=[mode])[0]
    base = loss_1d(centre)
    m = integrate.quad(lambda w: dens(w) * (loss_1d(w) - base), lo, hi, epsabs=0, epsrel=1e-13, limit=200,
                       points=[mode])[0]
    return n_beta * m / z


@pytest.mark.parametrize(("n_beta", "gamma"), [(3.0, 0.0), (3.0, 2.0), (40.0, 0.5), (500.0, 30.0)])
def test_regular_target_matches_quadrature_in_one_dimension(n_beta, gamma):
    model = get_model("regular", d=1, w_true=[0.4])
    data = model.generate(30, seed=4)
    rho = np.random.default_rng(2).uniform(0.0, 2.0, size=30)
    centre = {"w": np.array([0.9])}  # not the LS estimate
    post = GibbsPosterior(model, data, centre=centre, n_beta=n_beta, gamma=gamma, weights=rho)

    def loss_1d(w):
        return post.loss({"w": np.array([w])})

    expected = _quad_target_1d(loss_1d, 0.9, n_beta, gamma)
    assert model.target_fn(post) == pytest.approx(expected, rel=1e-8, abs=1e-9)


@pytest.mark.parametrize("gamma", [0.0, 1.5])
def test_regular_restricted_target_matches_quadrature(gamma):
    """Sample v only, u frozen at u*: a 1-D integral over v."""
    model = get_model("regular", d=2, w_true=[1.0, -0.5], split=1)
    data = model.generate(40, seed=6)
    centre = {"u": np.array([0.7]), "v": np.array([-0.1])}
    post = GibbsPosterior(model, data, centre=centre, n_beta=25.0, gamma=gamma, sampled=("v",))

    def loss_1d(v):
        return post.loss({"v": np.array([v])})

    expected = _quad_target_1d(loss_1d, -0.1, 25.0, gamma)
    assert model.target_fn(post) == pytest.approx(expected, rel=1e-8, abs=1e-9)


def test_regular_target_matches_least_squares_form():
    """The brief's form nβ(½tr(HΣ) + ½(m-ŵ)ᵀH(m-ŵ) + L(ŵ) - L(w*)) with L evaluated directly."""
    model = get_model("regular", d=3, sigma=0.8)
    data = model.generate(80, seed=12)
    rho = np.random.default_rng(5).uniform(0.1, 2.0, size=80)
    centre = {"w": np.array([0.3, -0.2, 0.5])}
    for n_beta, gamma in ((5.0, 0.0), (5.0, 3.0), (200.0, 10.0)):
        post = GibbsPosterior(model, data, centre=centre, n_beta=n_beta, gamma=gamma, weights=rho)
        x, c, n = data["x"], post.effective_weights, post.n
        H = x.T @ (c[:, None] * x) / (n * 0.8**2)
        w_hat = _weighted_ls(x, data["y"], c)
        cov = np.linalg.inv(n_beta * H + gamma * np.eye(3))
        m = cov @ (n_beta * H @ w_hat + gamma * centre["w"])
        expected = n_beta * (0.5 * np.trace(H @ cov) + 0.5 * (m - w_hat) @ H @ (m - w_hat)
                             + post.loss({"w": w_hat}) - post.loss_at_centre)
        assert model.target_fn(post) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_regular_target_none_when_improper():
    model = get_model("regular", d=3)
    data = model.generate(2, seed=0)  # n < d: H singular
    post = GibbsPosterior(model, data, centre={"w": np.zeros(3)}, n_beta=5.0)
    assert model.target_fn(post) is None
    assert model.target_fn(post.with_(gamma=1.0)) is not None


# -------------------------------------------------------------- powers: exact target


@pytest.mark.parametrize("n_beta", [0.1, 3.0, 1e3, 1e7])
def test_powers_target_at_gamma_zero_is_exact_lambda(n_beta):
    model = get_model("powers", k=(1, 2, 3), c=(0.5, 1.0, 4.0))
    data = model.generate(20, seed=0)
    expected = 0.5 + 0.25 + 1 / 6
    post = GibbsPosterior(model, data, n_beta=n_beta)
    assert model.target_fn(post) == pytest.approx(expected, abs=1e-12)
    assert model.lam == pytest.approx(expected, abs=1e-15)
    rho = np.random.default_rng(0).uniform(0.0, 2.0, size=20)
    assert model.target_fn(post.with_(weights=rho)) == pytest.approx(expected, abs=1e-12)
    # a non-zero centre: subtract nβ ρ̄ K(w*)
    w_star = np.array([0.1, -0.2, 0.3])
    post_c = post.with_(centre={"w": w_star})
    k_star = 0.5 * 0.1**2 + 1.0 * 0.2**4 + 4.0 * 0.3**6
    assert model.target_fn(post_c) == pytest.approx(expected - n_beta * k_star, rel=1e-12, abs=1e-12)


def test_powers_restricted_target():
    model = get_model("powers", k=(1, 2, 3), c=(1.0, 1.0, 1.0), split=1)
    data = model.generate(10, seed=0)
    post = GibbsPosterior(model, data, n_beta=50.0)
    assert model.target_fn(post) == pytest.approx(0.5 + 0.25 + 1 / 6, abs=1e-12)
    assert model.target_fn(post.with_(sampled=("u",))) == pytest.approx(0.5, abs=1e-12)
    assert model.target_fn(post.with_(sampled=("v",))) == pytest.approx(0.25 + 1 / 6, abs=1e-12)


def test_powers_defaults_and_degenerate_weights():
    model = get_model("powers", k=(1, 2, 5))
    np.testing.assert_array_equal(model.consts["c"], np.ones(3))
    data = model.generate(5, seed=0)
    # all-zero weights leave no data in the loss: refused on construction (issue 9), so the
    # target functions never see a degenerate posterior
    with pytest.raises(ValueError, match="weights"):
        GibbsPosterior(model, data, n_beta=10.0, weights=np.zeros(5))


def _generalised_normal_importance(k, s, gamma, n_draws, rng):
    """E[s w^{2k}] under ∝ exp(-s w^{2k} - γw²/2) by exact sampling of the generalised
    normal ∝ exp(-s w^{2k}) (|w| = (G/s)^{1/2k}, G ~ Gamma(1/2k)) reweighted by exp(-γw²/2).
    Returns (estimate, standard error of the self-normalised estimator)."""
    g = rng.gamma(1.0 / (2 * k), 1.0, size=n_draws)
    w = (g / s) ** (1.0 / (2 * k))  # the sign is irrelevant: both factors are even
    omega = np.exp(-0.5 * gamma * w * w)
    est = float(np.sum(omega * g) / np.sum(omega))
    se = float(np.std(omega * (g - est)) / (np.mean(omega) * math.sqrt(n_draws)))
    return est, se


@pytest.mark.parametrize(("n_beta", "gamma"), [(2.0, 1.0), (10.0, 5.0), (1e3, 200.0)])
def test_powers_target_with_localization_matches_exact_sampling(n_beta, gamma):
    k, c = (1, 2, 3), (1.0, 0.5, 2.0)
    model = get_model("powers", k=k, c=c)
    data = model.generate(8, seed=0)
    post = GibbsPosterior(model, data, n_beta=n_beta, gamma=gamma)
    got = model.target_fn(post)
    lam = sum(1 / (2 * ki) for ki in k)
    assert got < lam
    rng = np.random.default_rng(2024)
    total, var = 0.0, 0.0
    for ki, ci in zip(k, c):
        est, se = _generalised_normal_importance(ki, n_beta * ci, gamma, 400_000, rng)
        total += est
        var += se**2
    assert abs(got - total) < 5 * math.sqrt(var)
    # k = 1 coordinate in closed form: s w² with precision 2s + γ gives s/(2s + γ)
    model1 = get_model("powers", k=(1,), c=(0.5,))
    post1 = GibbsPosterior(model1, model1.generate(4, seed=0), n_beta=n_beta, gamma=gamma)
    s = n_beta * 0.5
    assert model1.target_fn(post1) == pytest.approx(s / (2 * s + gamma), rel=1e-10)


# --------------------------------------------- normal crossing / product: exact target


def _crossing_quadratic(post):
    """L_n^ρ as a function of f = Π w^k, (Q0, Q1, Q2): L = Q0 - Q1 f + Q2 f²/2."""
    sigma2 = float(post.model.consts["sigma"]) ** 2
    x, y, c, n = post.data["x"], post.data["y"], post.effective_weights, post.n
    return (float(np.sum(c * y * y)) / (2 * n * sigma2), float(np.sum(c * x * y)) / (n * sigma2),
            float(np.sum(c * x * x)) / (n * sigma2))


def _grid_target_2d(f_of, q, centre, n_beta, gamma, half_width=12.0, panels=60, nodes=20):
    """nβ(E[L] - L(w*)) in 2-D on a composite Gauss–Legendre tensor grid (independent check)."""
    t, wt = np.polynomial.legendre.leggauss(nodes)
    edges = np.linspace(-half_width, half_width, panels + 1)
    mid, rad = 0.5 * (edges[1:] + edges[:-1]), 0.5 * np.diff(edges)
    pts = (mid[:, None] + rad[:, None] * t[None, :]).reshape(-1)
    wts = (rad[:, None] * wt[None, :]).reshape(-1)
    a = centre[0] + pts[:, None]
    b = centre[1] + pts[None, :]
    q0, q1, q2 = q
    f = f_of(a, b)
    loss = q0 - q1 * f + 0.5 * q2 * f * f
    f_star = f_of(np.array(centre[0]), np.array(centre[1]))
    loss_star = q0 - q1 * f_star + 0.5 * q2 * f_star * f_star
    log_p = -n_beta * (loss - loss_star) - 0.5 * gamma * ((a - centre[0]) ** 2 + (b - centre[1]) ** 2)
    p = np.exp(log_p - log_p.max()) * wts[:, None] * wts[None, :]
    return n_beta * float(np.sum(p * (loss - loss_star)) / np.sum(p))


@pytest.mark.parametrize(("n_beta", "gamma", "centre"), [(20.0, 1.0, (0.0, 0.0)), (8.0, 2.0, (0.3, -0.6))])
def test_product_target_matches_2d_grid(n_beta, gamma, centre):
    model = get_model("product", sigma=0.8)
    data = model.generate(30, seed=8)
    rho = np.random.default_rng(3).uniform(0.5, 1.5, size=30)
    post = GibbsPosterior(model, data, centre={"a": centre[0], "b": centre[1]}, n_beta=n_beta, gamma=gamma,
                          weights=rho)
    q = _crossing_quadratic(post)
    for a_, b_ in ((0.4, -1.3), (2.0, 0.1)):  # the quadratic form is the model's loss
        f = a_ * b_
        assert post.loss({"a": a_, "b": b_}) == pytest.approx(q[0] - q[1] * f + 0.5 * q[2] * f * f, rel=1e-12)
    expected = _grid_target_2d(lambda a, b: a * b, q, centre, n_beta, gamma)
    assert model.target_fn(post) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert model.target_fn(post.with_(gamma=0.0)) is None  # improper without localization


def test_normal_crossing_target_matches_2d_grid():
    model = get_model("normal_crossing", k=(1, 2))
    data = model.generate(40, seed=1)
    post = GibbsPosterior(model, data, centre={"w": np.array([0.2, -0.4])}, n_beta=15.0, gamma=1.5)
    q = _crossing_quadratic(post)
    # b² steepens the features at large |b|: 120 panels (60 misses by 3e-8 relative)
    expected = _grid_target_2d(lambda a, b: a * b * b, q, (0.2, -0.4), 15.0, 1.5, panels=120)
    assert model.target_fn(post) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # k = (2, 2): no exponent 1, so no semi-analytic form; the target falls back to the 2-D
    # cubature of models._quad2d, checked here against the independent tensor grid
    model22 = get_model("normal_crossing", k=(2, 2))
    post22 = GibbsPosterior(model22, data, n_beta=15.0, gamma=1.5)
    expected22 = _grid_target_2d(lambda a, b: a * a * b * b, q, (0.0, 0.0), 15.0, 1.5, panels=120)
    assert model22.target_fn(post22) == pytest.approx(expected22, rel=1e-8, abs=1e-11)
    assert model22.target_fn(post22.with_(gamma=0.0)) is None  # improper: flat along both axes


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_one_dimensional_crossing_targets_match_quadrature(gamma):
    # normal crossing with one coordinate and k = 3: L is a polynomial of degree 6 in w
    model = get_model("normal_crossing", k=(3,))
    data = model.generate(25, seed=2)
    post = GibbsPosterior(model, data, centre={"w": np.array([0.25])}, n_beta=30.0, gamma=gamma)
    expected = _quad_target_1d(lambda w: post.loss({"w": np.array([w])}), 0.25, 30.0, gamma)
    assert model.target_fn(post) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # product with b frozen at 0.7: Gaussian in a (closed form)
    prod = get_model("product")
    post_a = GibbsPosterior(prod, data, centre={"a": 0.1, "b": 0.7}, n_beta=30.0, gamma=gamma, sampled=("a",))
    expected_a = _quad_target_1d(lambda a: post_a.loss({"a": a}), 0.1, 30.0, gamma)
    assert prod.target_fn(post_a) == pytest.approx(expected_a, rel=1e-8, abs=1e-9)


def test_product_target_below_lambda_and_rising_with_n_beta():
    """At the true centre with γ fixed the target increases towards λ = 1/2 (m = 2 makes the
    approach slow, docs/math.md §6); the data here are noise-free so L_n(0) is the exact minimum."""
    model = get_model("product")
    x = np.random.default_rng(0).standard_normal(200)
    data = {"x": x, "y": np.zeros(200)}
    values = [model.target_fn(GibbsPosterior(model, data, n_beta=nb, gamma=1.0)) for nb in (10.0, 1e3, 1e5, 1e7)]
    assert all(0 < v < 0.5 for v in values)
    assert all(b > a for a, b in zip(values, values[1:]))


# ------------------------------------------------- norm_power, tanh, gaussian_mixture


def test_new_losses_match_their_formulas():
    rng = np.random.default_rng(0)
    # norm_power: ‖w‖^{2k} on every sample
    for d, k in ((1, 1), (2, 2), (3, 3)):
        model = get_model("norm_power", d=d, k=k)
        w = rng.standard_normal(d)
        out = model.per_sample_loss_numpy({"w": w}, model.generate(4))
        np.testing.assert_allclose(out, np.full(4, np.sum(w * w) ** k), rtol=1e-14)
    # tanh: (y - Σ a_h tanh(b_h x))²/(2σ²)
    model = get_model("tanh", H=3, sigma=0.5)
    data = model.generate(9, seed=1)
    a, b = rng.standard_normal(3), rng.standard_normal(3)
    f = np.tanh(np.outer(data["x"], b)) @ a
    np.testing.assert_allclose(model.per_sample_loss_numpy({"a": a, "b": b}, data), (data["y"] - f) ** 2 / 0.5,
                               rtol=1e-13)
    assert np.all(np.abs(data["x"]) <= 1.0)  # x ~ U(-1, 1)
    # mixtures: the negative log of the density, and finite for extreme parameters
    from scipy import stats

    x = np.array([-40.0, -2.0, 0.0, 0.3, 5.0, 60.0])
    mix = get_model("gaussian_mixture", sigma=1.5)
    for a_, b_ in ((0.2, -0.7), (0.0, 0.0), (3.0, 25.0)):
        dens = 0.5 * stats.norm.pdf(x, a_ + b_, 1.5) + 0.5 * stats.norm.pdf(x, a_ - b_, 1.5)
        got = mix.per_sample_loss_numpy({"a": a_, "b": b_}, {"x": x})
        ok = dens > 1e-300
        np.testing.assert_allclose(got[ok], -np.log(dens[ok]), rtol=1e-12)
    wmix = get_model("gaussian_mixture", variant="weight", weight=0.3)
    assert float(wmix.centre["s"]) == pytest.approx(math.log(0.3 / 0.7), rel=1e-14)
    for s_, b_ in ((0.4, 1.2), (-3.0, -0.5)):
        wt = 1.0 / (1.0 + math.exp(-s_))
        dens = (1 - wt) * stats.norm.pdf(x, 0.0, 1.0) + wt * stats.norm.pdf(x, b_, 1.0)
        got = wmix.per_sample_loss_numpy({"s": s_, "b": b_}, {"x": x})
        ok = dens > 1e-300
        np.testing.assert_allclose(got[ok], -np.log(dens[ok]), rtol=1e-12)
    for params in ({"a": 1e3, "b": -1e3}, {"a": -50.0, "b": 0.0}):
        assert np.all(np.isfinite(mix.per_sample_loss_numpy(params, {"x": x})))
    for params in ({"s": 800.0, "b": 40.0}, {"s": -800.0, "b": -40.0}, {"s": 0.0, "b": 1e4}):
        assert np.all(np.isfinite(wmix.per_sample_loss_numpy(params, {"x": x})))


def test_tanh_population_loss_for_one_unit():
    """The module docstring's K(a, b) = a²(1 - tanh(b)/b)/(2σ²) for H = 1, from the loss."""
    model = get_model("tanh", H=1, sigma=0.8)
    x, w = np.polynomial.legendre.leggauss(60)
    data = {"x": x, "y": np.zeros(60)}
    for a_, b_ in ((0.7, 1.3), (-2.0, 0.05), (1.0, 4.0)):
        k = 0.5 * float(w @ model.per_sample_loss_numpy({"a": np.array([a_]), "b": np.array([b_])}, data))
        assert k == pytest.approx(a_**2 * (1 - math.tanh(b_) / b_) / (2 * 0.64), rel=1e-12)


def test_mixture_population_loss_is_quadratic_plus_quartic():
    """K(a, b) of the "means" mixture: K(a, 0) ≈ a²/(2σ²) and K(0, b) ≈ b⁴/(4σ⁴) near 0 (the
    equivalence to a² + b⁴ behind λ = 3/4), from the model's loss by Gauss–Hermite."""
    sigma = 1.3
    model = get_model("gaussian_mixture", sigma=sigma)
    x, w = np.polynomial.hermite_e.hermegauss(60)
    data = {"x": sigma * x}
    w = w / w.sum()
    base = model.per_sample_loss_numpy(model.centre, data)

    def k(a_, b_):
        return float(w @ (model.per_sample_loss_numpy({"a": a_, "b": b_}, data) - base))

    assert k(1e-3, 0.0) == pytest.approx(1e-6 / (2 * sigma**2), rel=1e-6)
    assert k(0.0, 0.02) == pytest.approx(0.02**4 / (4 * sigma**4), rel=1e-3)
    assert k(0.3, 0.2) == pytest.approx(k(-0.3, 0.2), rel=1e-10) == pytest.approx(k(0.3, -0.2), rel=1e-10)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_norm_power_target(d):
    model = get_model("norm_power", d=d, k=2)
    data = model.generate(6)
    rho = np.random.default_rng(d).uniform(0.0, 2.0, size=6)
    w_star = np.linspace(0.3, -0.2, d)
    post = GibbsPosterior(model, data, n_beta=40.0, weights=rho, centre={"w": w_star})
    # γ = 0: d/(2k) - nβ ρ̄ K(w*), for every nβ
    assert model.target_fn(post) == pytest.approx(d / 4 - 40.0 * rho.mean() * np.sum(w_star**2) ** 2, rel=1e-12)
    with pytest.raises(ValueError, match="weights"):  # no data left in the loss: refused
        post.with_(weights=np.zeros(6))
    # γ > 0, k = 1: Gaussian with precision 2s + γ and mean γw*/(2s + γ), so
    # E[s‖w‖²] = s(d + γ²‖w*‖²/(2s + γ))/(2s + γ) (checks the spherical-average factor)
    lin = get_model("norm_power", d=d, k=1)
    s, gamma = 40.0 * rho.mean(), 3.0
    post1 = GibbsPosterior(lin, data, n_beta=40.0, gamma=gamma, weights=rho, centre={"w": w_star})
    r2 = float(np.sum(w_star**2))
    expected = s * (d + gamma**2 * r2 / (2 * s + gamma)) / (2 * s + gamma) - s * r2
    assert lin.target_fn(post1) == pytest.approx(expected, rel=1e-9)
    # γ > 0, k = 2, off-centre: against the 2-D cubature (d ≤ 2)
    if d <= 2:
        from pplpatterning.models import finite_target_by_quadrature

        post2 = post.with_(gamma=gamma)
        assert model.target_fn(post2) == pytest.approx(finite_target_by_quadrature(post2)[0], rel=1e-8)
