"""Exact λ and exact finite-nβ targets of the 1- and 2-dimensional zoo models (issue 4).

1. The cubature behind ``finite_target_by_quadrature``: its Gauss–Kronrod rules and its
   integrals against closed forms.
2. The cubature target agrees with every closed-form target (regular, powers, norm_power,
   normal crossing, product) to 1e-6 relative, on hypothesis-drawn posteriors (data,
   weights, centre, nβ, γ, restriction); improper posteriors give ``None``.
3. λ and m of every 1–2-dimensional model agree with the scaling of
   Z(n) = ∫ exp(-n K(w)) dw ~ C n^{-λ} (log n)^{m-1} (uniform prior on the unit box around
   the centre), K the population loss computed with the model's own loss function.
4. The finite-nβ target approaches λ as nβ grows, fast for m = 1 and slowly
   (~ (m - 1)/log nβ) for m = 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, special

from pplpatterning import GibbsPosterior
from pplpatterning.models import finite_target_by_quadrature, get_model
from pplpatterning.models._cubature import adaptive_cubature, gauss_kronrod
from pplpatterning.models._quad2d import graded_breakpoints as _graded, posterior_energy, quadrature_target

HYP = settings(max_examples=14, deadline=None, derandomize=True)

# ------------------------------------------------------------------ 1. the cubature


@pytest.mark.parametrize(("order", "kronrod_degree", "gauss_degree"), [(15, 23, 13), (7, 11, 5)])
def test_gauss_kronrod_rules_are_exact_to_their_degree(order, kronrod_degree, gauss_degree):
    x, wk, wg = gauss_kronrod(order)
    assert x.size == order and np.all(np.diff(x) > 0)
    def error(weights, deg):
        exact = 0.0 if deg % 2 else 2.0 / (deg + 1)
        return abs(weights @ x**deg - exact)

    assert max(error(wk, deg) for deg in range(kronrod_degree + 1)) < 1e-14
    assert max(error(wg, deg) for deg in range(gauss_degree + 1)) < 1e-14
    # and not beyond (odd degrees are exact by symmetry; the next even degree is not)
    assert error(wk, kronrod_degree + 1) > 1e-10 and error(wg, gauss_degree + 1) > 1e-4


def test_adaptive_cubature_matches_closed_forms():
    # correlated Gaussian: E[(v - μ)ᵀ A (v - μ)] = tr(A Σ), mass = 2π sqrt(det Σ)
    prec = np.array([[3.0, 1.2], [1.2, 0.8]])
    mu = np.array([0.4, -1.0])
    cov = np.linalg.inv(prec)
    a = np.array([[1.0, 0.3], [0.3, 2.0]])

    def energy(p):
        z = p - mu
        return 0.5 * np.einsum("pi,ij,pj->p", z, prec, z), np.einsum("pi,ij,pj->p", z, a, z)

    breaks = [np.linspace(m - 40.0, m + 40.0, 9) for m in mu]
    out = adaptive_cubature(energy, breaks, rel_tol=1e-12, shift=0.0)
    assert out["converged"]
    assert out["value"] == pytest.approx(np.trace(a @ cov), rel=1e-11)
    assert out["mass"] == pytest.approx(2 * np.pi * math.sqrt(np.linalg.det(cov)), rel=1e-11)
    assert out["error"] < 1e-10
    # a singular integrand at large n: Z(n) = ∫∫_{[-1,1]²} exp(-n a²b²/2) against its 1-D form
    for n in (1e4, 1e10):
        def energy_n(p, n=n):
            return 0.5 * n * (p[:, 0] * p[:, 1]) ** 2, np.ones(p.shape[0])

        out = adaptive_cubature(energy_n, [_graded([0.0], -1.0, 1.0, 0.125, 12, 4)] * 2, rel_tol=1e-10, shift=0.0)

        def inner(b, n=n):  # ∫_{-1}^{1} exp(-n a² b²/2) da
            return math.sqrt(2 * math.pi / n) / b * special.erf(math.sqrt(n / 2) * b) if b > 0 else 2.0

        exact = 2 * integrate.quad(inner, 0.0, 1.0, points=[10.0**-k for k in range(1, 12)], limit=500,
                                   epsabs=0.0, epsrel=1e-13)[0]
        assert out["converged"] and out["mass"] == pytest.approx(exact, rel=1e-8)


def test_zoo_losses_broadcast_over_a_grid_axis():
    """The 1–2-dimensional zoo models evaluate a whole grid of parameters in one call (the
    vectorised path of the cubature, checked inside against point-by-point evaluation)."""
    cases = [("regular", {"d": 2}), ("regular", {"d": 3, "split": 1}), ("normal_crossing", {}), ("product", {}),
             ("powers", {"split": 1}), ("norm_power", {}), ("tanh", {}), ("tanh", {"H": 2}),
             ("gaussian_mixture", {}), ("gaussian_mixture", {"variant": "weight"})]
    for name, kwargs in cases:
        model = get_model(name, **kwargs)
        post = GibbsPosterior(model, model.generate(7, seed=1), n_beta=3.0, gamma=1.0,
                              sampled=(list(model.param_shapes)[-1],) if name in ("regular", "tanh") else None)
        _, _, vectorised = posterior_energy(post)
        assert vectorised, (name, kwargs)


def matmul_loss(params, batch, consts, xp):
    """A user-style loss that does not broadcast over a grid axis (``x @ w``)."""
    resid = batch["y"] - batch["x"] @ params["w"]
    return resid * resid / 2.0


def test_cubature_falls_back_to_pointwise_evaluation():
    from pplpatterning import Model

    user = Model("user", matmul_loss, {"w": (1,)}, {"w": np.array([0.2])})
    reg = get_model("regular", d=1)
    data = reg.generate(12, seed=5)
    post = GibbsPosterior(user, data, n_beta=7.0, gamma=0.5)
    assert posterior_energy(post)[2] is False
    expected = reg.target_fn(GibbsPosterior(reg, data, centre={"w": np.array([0.2])}, n_beta=7.0, gamma=0.5))
    assert finite_target_by_quadrature(post)[0] == pytest.approx(expected, rel=1e-8)


# ------------------------------------------------- 2. cubature against closed forms


def _closed_form_posterior(draw):
    """A posterior of a model with a closed-form (or semi-analytic) target, 1–2 sampled coords."""
    name = draw(st.sampled_from(["regular", "regular_split", "powers", "norm_power", "product", "crossing"]))
    n = draw(st.integers(3, 30))
    seed = draw(st.integers(0, 2**16))
    gamma = draw(st.sampled_from([0.0, 0.3, 5.0]))
    sampled = None
    if name == "regular":
        model = get_model("regular", d=draw(st.integers(1, 2)), w_true=None, sigma=draw(st.sampled_from([0.5, 1.0])))
    elif name == "regular_split":
        model = get_model("regular", d=3, split=draw(st.integers(1, 2)))
        sampled = (draw(st.sampled_from(["u", "v"])),)
        if model.param_shapes[sampled[0]][0] > 2:
            sampled = ("u",) if sampled == ("v",) else ("v",)
    elif name == "powers":
        k = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
        model = get_model("powers", k=k, c=[draw(st.sampled_from([0.5, 1.0, 3.0])) for _ in k])
    elif name == "norm_power":
        model = get_model("norm_power", d=draw(st.integers(1, 2)), k=draw(st.integers(1, 3)))
    elif name == "product":
        model = get_model("product", sigma=draw(st.sampled_from([0.7, 1.0])))
        sampled = draw(st.sampled_from([None, ("a",), ("b",)]))
        if sampled is None:
            gamma = draw(st.sampled_from([0.3, 5.0]))  # proper only with localization
    else:
        model = get_model("normal_crossing", k=(1, draw(st.integers(1, 3))))
        gamma = draw(st.sampled_from([0.3, 5.0]))
    data = model.generate(n, seed=seed)
    rng = np.random.default_rng(seed)
    offset = draw(st.sampled_from([0.0, 0.05, 0.3]))
    centre = {k: v + offset * rng.standard_normal(v.shape) for k, v in model.centre.items()}
    weights = draw(st.sampled_from(["none", "raw", "normalised"]))
    rho = None if weights == "none" else rng.uniform(0.2, 2.0, size=n)
    n_beta = 10.0 ** draw(st.floats(-0.3, 4.0))
    return GibbsPosterior(model, data, centre=centre, n_beta=n_beta, gamma=gamma, weights=rho,
                          normalize_weights=weights == "normalised", sampled=sampled)


@HYP
@given(data=st.data())
def test_cubature_target_agrees_with_closed_forms(data):
    post = _closed_form_posterior(data.draw)
    expected = post.model.target_fn(post)
    got = finite_target_by_quadrature(post)
    if expected is None:  # improper (e.g. γ = 0 and a flat direction): both say so
        assert got is None
        return
    assert got is not None, post
    value, error = got
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-8), post
    assert 0 <= error <= 1e-6 * max(1.0, abs(expected))


@pytest.mark.parametrize("n_beta", [2.0, 300.0, 1e5])
def test_cubature_target_matches_exact_values_at_the_minimum(n_beta):
    """Closed forms that need no code: d/2 for regular models at the least-squares centre,
    Σ 1/(2k_i) for powers and d/(2k) for norm_power at γ = 0, for every nβ."""
    reg = get_model("regular", d=2, w_true=[0.5, -1.0])
    post = GibbsPosterior(reg, reg.generate(25, seed=3), n_beta=n_beta)  # centre = LS estimate
    assert finite_target_by_quadrature(post)[0] == pytest.approx(1.0, rel=1e-7)
    pw = get_model("powers", k=(1, 3))
    assert finite_target_by_quadrature(GibbsPosterior(pw, pw.generate(4), n_beta=n_beta))[0] == pytest.approx(
        0.5 + 1 / 6, rel=1e-7)
    npw = get_model("norm_power", d=2, k=3)
    assert finite_target_by_quadrature(GibbsPosterior(npw, npw.generate(4), n_beta=n_beta))[0] == pytest.approx(
        1 / 3, rel=1e-7)


def test_improper_posteriors_and_dimension_limits():
    prod = get_model("product")
    data = prod.generate(20, seed=0)
    assert finite_target_by_quadrature(GibbsPosterior(prod, data, n_beta=50.0)) is None  # flat axes
    tanh = get_model("tanh")
    assert tanh.target_fn(GibbsPosterior(tanh, tanh.generate(20, seed=0), n_beta=50.0)) is None
    for variant in ("means", "weight"):  # bounded loss along a ray: improper although e^{-nβ log 2} is tiny
        mix = get_model("gaussian_mixture", variant=variant)
        post = GibbsPosterior(mix, mix.generate(20, seed=0), n_beta=500.0)
        assert mix.target_fn(post) is None
        assert mix.target_fn(post.with_(gamma=1.0)) is not None
    reg = get_model("regular", d=2)
    assert finite_target_by_quadrature(GibbsPosterior(reg, reg.generate(1, seed=0), n_beta=5.0)) is None  # n < d
    # more than two sampled coordinates: the target function says "unknown", the cubature refuses
    tanh2 = get_model("tanh", H=2)
    post2 = GibbsPosterior(tanh2, tanh2.generate(10, seed=0), n_beta=5.0, gamma=1.0)
    assert tanh2.target_fn(post2) is None and quadrature_target(post2) is None
    with pytest.raises(ValueError, match="1 or 2 sampled coordinates"):
        finite_target_by_quadrature(post2)
    assert tanh2.target_fn(post2.with_(sampled=("b",))) is not None  # two coordinates again


def test_cubature_target_matches_an_independent_grid_for_tanh_and_mixture():
    """The models with no closed form against a plain composite Gauss–Legendre tensor grid."""
    t, wt = np.polynomial.legendre.leggauss(12)
    for name, kwargs, n_beta, gamma in (("tanh", {}, 40.0, 2.0), ("gaussian_mixture", {}, 30.0, 1.0),
                                        ("gaussian_mixture", {"variant": "weight"}, 60.0, 3.0)):
        model = get_model(name, **kwargs)
        post = GibbsPosterior(model, model.generate(15, seed=4), n_beta=n_beta, gamma=gamma)
        energy, centre, _ = posterior_energy(post)
        edges = np.linspace(-9.0, 9.0, 61)
        mid, rad = 0.5 * (edges[1:] + edges[:-1]), 0.5 * np.diff(edges)
        pts1 = (mid[:, None] + rad[:, None] * t).ravel()
        w1 = (rad[:, None] * wt).ravel()
        grid = np.stack(np.meshgrid(centre[0] + pts1, centre[1] + pts1, indexing="ij"), -1).reshape(-1, 2)
        u, g = energy(grid)
        p = np.exp(-(u - u.min())) * np.outer(w1, w1).ravel()
        expected = float(np.sum(p * g) / np.sum(p))
        assert model.target_fn(post) == pytest.approx(expected, rel=1e-8), name


# ------------------------------------------------------- 3. λ from the scaling of Z(n)


def _population_posterior(model: str, kwargs: dict, n_beta: float, gamma: float) -> GibbsPosterior:
    """A posterior whose L_n(w) - L_n(w*) is the population K(w): the data are quadrature nodes
    of the input distribution (with y = 0, the truth) and the weights their quadrature
    weights (renormalised), so that L^ρ is the expectation of the model's loss."""
    m = get_model(model, **kwargs)
    if model in ("powers", "norm_power"):
        data, w = m.generate(1), None
    elif model == "tanh":  # x ~ U(-1, 1)
        x, w = np.polynomial.legendre.leggauss(32)
        data = {"x": x, "y": np.zeros(x.size)}
    elif model == "gaussian_mixture":  # x ~ N(0, σ²)
        x, w = np.polynomial.hermite_e.hermegauss(40)
        data = {"x": float(m.consts["sigma"]) * x}
    else:  # x ~ N(0, I): the losses are quadratic in x, 3 Gauss–Hermite nodes per axis are exact
        x, w = np.polynomial.hermite_e.hermegauss(3)
        if model == "regular":
            grid = np.stack(np.meshgrid(*([x] * m.dim), indexing="ij"), -1).reshape(-1, m.dim)
            w = np.prod(np.stack(np.meshgrid(*([w] * m.dim), indexing="ij"), -1).reshape(-1, m.dim), axis=1)
            x = grid
        data = {"x": x, "y": np.zeros(x.shape[0])}
    return GibbsPosterior(m, data, n_beta=n_beta, gamma=gamma, weights=w, normalize_weights=w is not None)


def _log_z(post: GibbsPosterior) -> float:
    """log ∫_{[w*-1, w*+1]^D} exp(-nβ K(w)) dw by the adaptive cubature (relative error ≤ 1e-7)."""
    energy, centre, vectorised = posterior_energy(post)
    assert vectorised

    def mass_only(p):
        u, _ = energy(p)
        return u, np.ones_like(u)

    levels = int(np.clip(math.ceil(math.log(400.0 * math.sqrt(post.n_beta)) / math.log(8.0)), 3, 12))
    breaks = [_graded([c], c - 1.0, c + 1.0, 0.125, levels, 4) for c in centre]
    out = adaptive_cubature(mass_only, breaks, rel_tol=1e-7, abs_tol=0.0, shift=0.0)
    assert out["converged"]
    return math.log(out["mass"]) - out["shift"]


def _fit_lambda(log_n: np.ndarray, log_z: np.ndarray, m: int) -> float:
    """λ such that Z(n) n^λ is best fitted by a polynomial of degree m - 1 in log n (the exact
    form of the leading asymptotics of Z(n), Watanabe 2009), in log space; the
    profile over λ has local minima, so a grid search precedes the polish."""
    def loss(lam):
        y = log_z + lam * log_n
        y = np.exp(y - y.max())
        design = np.vander(log_n, m)
        coef, *_ = np.linalg.lstsq(design / y[:, None], np.ones_like(y), rcond=None)
        fit = design @ coef
        return float(np.sum((np.log(fit) - np.log(y)) ** 2)) if np.all(fit > 0) else np.inf

    grid = np.arange(0.02, 3.0, 0.01)
    i = int(np.argmin([loss(v) for v in grid]))
    res = optimize.minimize_scalar(loss, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]),
                                   method="bounded", options={"xatol": 1e-12})
    return float(res.x)


ZOO_2D = [
    ("regular", {"d": 1}), ("regular", {"d": 2}), ("normal_crossing", {"k": (1, 2)}),
    ("normal_crossing", {"k": (2, 2)}), ("product", {}), ("powers", {"k": (1, 2)}), ("powers", {"k": (2, 3)}),
    ("norm_power", {"d": 2, "k": 2}), ("norm_power", {"d": 1, "k": 3}), ("tanh", {}), ("gaussian_mixture", {}),
    ("gaussian_mixture", {"variant": "weight"}),
]


@pytest.mark.parametrize(("name", "kwargs"), ZOO_2D, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ZOO_2D)])
def test_lambda_matches_the_scaling_of_the_partition_function(name, kwargs):
    """-log Z(n) = λ log n - (m-1) log log n + O(1): λ fitted (with the model's m) on a low and a
    high decade range; the fit's own drift between the two ranges bounds its error, and the
    model's λ must lie within twice that drift (at least 1e-3) of the high-range fit. The
    tolerance is also required to be far below the gap between neighbouring candidate values
    (≥ 1/12 for these models), so a wrong λ cannot pass."""
    model = get_model(name, **kwargs)
    # mixtures: the loss differences cancel against an O(1) negative log-likelihood, so nK
    # carries round-off ~ n·1e-16; stop at n = 1e9 there
    log10_n = np.arange(3.0, 9.5) if name == "gaussian_mixture" else np.arange(4.0, 11.5)
    log_z = np.array([_log_z(_population_posterior(name, kwargs, 10.0**e, 0.0)) for e in log10_n])
    log_n = log10_n * math.log(10.0)
    m = int(model.multiplicity)
    lam_lo = _fit_lambda(log_n[:5], log_z[:5], m)
    lam_hi = _fit_lambda(log_n[-5:], log_z[-5:], m)
    tol = max(2.0 * abs(lam_hi - lam_lo), 1e-3)
    assert tol <= 0.02, (lam_lo, lam_hi)
    assert abs(lam_hi - model.lam) <= tol, (lam_lo, lam_hi, model.lam)
    if m == 2:  # the log log n term matters: fitting with m = 1 misses λ
        assert abs(_fit_lambda(log_n[-5:], log_z[-5:], 1) - model.lam) > 0.03


# ---------------------------------------------------- 4. the finite-nβ target → λ


APPROACH = [
    ("regular", {"d": 2}), ("normal_crossing", {"k": (1, 2)}), ("normal_crossing", {"k": (2, 2)}), ("product", {}),
    ("powers", {"k": (1, 2)}), ("norm_power", {"d": 2, "k": 2}), ("tanh", {}), ("gaussian_mixture", {}),
    ("gaussian_mixture", {"variant": "weight"}),
]


@pytest.mark.parametrize(("name", "kwargs"), APPROACH, ids=[f"{n}-{i}" for i, (n, _) in enumerate(APPROACH)])
def test_finite_target_approaches_lambda(name, kwargs):
    """On the population loss with γ = 1, |E[λ̂] - λ| decreases over nβ = 1e2..1e6; with m = 1
    it is within 5% of λ at nβ = 1e6, with m = 2 the target is still below λ by a gap of the
    order (m - 1)/log nβ."""
    model = get_model(name, **kwargs)
    n_betas = [1e2, 1e3, 1e4, 1e5, 1e6]
    targets = [model.target_fn(_population_posterior(name, kwargs, nb, 1.0)) for nb in n_betas]
    assert all(t is not None for t in targets), targets
    gaps = [abs(t - model.lam) for t in targets]
    assert all(b < a for a, b in zip(gaps, gaps[1:])), targets
    if model.multiplicity == 1:
        assert gaps[-1] <= 0.05 * model.lam, targets
    else:
        slow = (model.multiplicity - 1) / math.log(n_betas[-1])
        assert all(t < model.lam for t in targets)
        assert 0.2 * slow <= gaps[-1] <= 2.0 * slow, targets
