"""The two_solutions toy (models/two_solutions.py): contract, data, solutions, exact masses, λ.

No MCMC except one marked slow test (NUTS against the exact mass fraction).
"""

from __future__ import annotations

import inspect
import sys

import numpy as np
import pytest

from pplpatterning import GibbsPosterior, Model
from pplpatterning.models import MODELS, get_model
from pplpatterning.models._quad2d import finite_target_by_quadrature, posterior_energy
from pplpatterning.models.two_solutions import (
    DEMO_CENTRE, on_solution_a, on_solution_b, posterior_energy_fast, solution_masses, two_solutions,
    two_solutions_loss,
)


def _grid_fraction(post, half: float = 4.0, num: int = 3001) -> float:
    """P(|a| > |b|) on a dense uniform grid (independent of the cubature); the diagonal gets ½."""
    g = np.linspace(-half + 0.5, half + 0.5, num)
    A, B = np.meshgrid(g, g, indexing="ij")
    u, _ = posterior_energy_fast(post)(np.stack([A.ravel(), B.ravel()], axis=1))
    p = np.exp(-(u - u.min())).reshape(A.shape)
    inside = np.where(np.abs(A) > np.abs(B), 1.0, np.where(np.abs(A) == np.abs(B), 0.5, 0.0))
    return float(np.sum(p * inside) / np.sum(p))


def test_registered_and_follows_the_contract():
    model = get_model("two_solutions", p=0.3, noise=0.2, sigma=0.5)
    assert MODELS["two_solutions"] is two_solutions
    assert isinstance(model, Model) and model.dim == 2 and dict(model.param_shapes) == {"a": (), "b": ()}
    loss = model.loss
    assert inspect.isfunction(loss) and loss.__closure__ is None and loss.__qualname__ == loss.__name__
    assert getattr(sys.modules[loss.__module__], loss.__name__) is loss
    assert get_model("two_solutions").loss is loss
    assert all(v.dtype == np.float64 for v in model.consts.values())
    assert model.lam == pytest.approx(1 / 3) and model.multiplicity == 1 and model.description


def test_data_channels_counts_and_noise():
    model = two_solutions(p=0.7)
    data = model.generate(1000, seed=3)
    x, y = data["x"], data["y"]
    assert x.shape == (1000, 2) and y.shape == (1000,)
    # exactly one channel per input, value ±1; exactly round(p n) channel-1 inputs; both signs occur
    assert np.all(np.count_nonzero(x, axis=1) == 1) and set(np.unique(np.abs(x[x != 0]))) == {1.0}
    assert np.count_nonzero(x[:, 0]) == 700 and np.count_nonzero(x[:, 1]) == 300
    assert (x[:, 0] > 0).sum() > 300 and (x[:, 0] < 0).sum() > 300
    assert np.all(y == 0.0)
    again = model.generate(1000, seed=3)
    assert all(np.array_equal(data[k], again[k]) for k in data)
    other = model.generate(1000, seed=4)
    assert not np.array_equal(data["x"], other["x"])
    noisy = two_solutions(p=0.7, noise=0.5).generate(4000, seed=0)["y"]
    assert 0.45 < noisy.std() < 0.55


def test_loss_formula_and_both_solutions_fit_every_sample():
    model = two_solutions(p=0.4)
    data = model.generate(50, seed=0)
    x = data["x"]
    a, b = 0.7, -1.3
    expected = (a * b * (a * x[:, 0] + b * x[:, 1])) ** 2 / 2
    np.testing.assert_allclose(model.per_sample_loss_numpy({"a": a, "b": b}, data), expected, rtol=1e-14)
    for point in ({"a": 1.7, "b": 0.0}, {"a": 0.0, "b": -2.2}):
        assert np.all(model.per_sample_loss_numpy(point, data) == 0.0)
    # off solution A only channel-1 inputs see the deviation (to first order in b), and vice versa
    off_a = model.per_sample_loss_numpy({"a": 1.0, "b": 1e-4}, data)
    assert np.all(off_a[x[:, 1] != 0] < 1e-15) and np.all(off_a[x[:, 0] != 0] > 1e-9)
    # observables: indicators of the nearer solution
    assert float(on_solution_a({"a": np.float64(1.0), "b": np.float64(0.1)}, np)) == 1.0
    assert float(on_solution_b({"a": np.float64(1.0), "b": np.float64(0.1)}, np)) == 0.0


def test_loss_and_observables_agree_across_numpy_jax_torch():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    import torch
    import array_api_compat.torch as xt

    with jax.enable_x64(True):  # float64 JAX arrays for this check only, as the backend does
        model = two_solutions(p=0.6, noise=0.3)
        data = model.generate(30, seed=1)
        params = {"a": 0.8, "b": -0.35}
        ref = model.per_sample_loss_numpy(params, data)
        consts = dict(model.consts)
        out_j = two_solutions_loss({k: jnp.asarray(v) for k, v in params.items()},
                                   {k: jnp.asarray(v) for k, v in data.items()},
                                   {k: jnp.asarray(v) for k, v in consts.items()}, jnp)
        out_t = two_solutions_loss({k: torch.tensor(v, dtype=torch.float64) for k, v in params.items()},
                                   {k: torch.from_numpy(np.array(v)) for k, v in data.items()},
                                   {k: torch.from_numpy(np.array(v)) for k, v in consts.items()}, xt)
        np.testing.assert_allclose(np.asarray(out_j), ref, rtol=1e-13)
        np.testing.assert_allclose(out_t.numpy(), ref, rtol=1e-13)
        for fn, want in ((on_solution_a, 1.0), (on_solution_b, 0.0)):
            assert float(fn({k: jnp.asarray(v) for k, v in params.items()}, jnp)) == want
            assert float(fn({k: torch.tensor(v, dtype=torch.float64) for k, v in params.items()}, xt)) == want


@pytest.mark.parametrize("kwargs", [{"p": 0.0}, {"p": 1.0}, {"p": -0.2}, {"noise": -1.0}, {"sigma": 0.0},
                                    {"noise": float("nan")}])
def test_bad_arguments_name_the_argument(kwargs):
    with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}`"):
        two_solutions(**kwargs)


def test_fast_energy_matches_the_generic_one():
    """The six-moment energy equals the model's loss summed sample by sample (up to the
    constant nβ L(w*)), with noise, weights and any centre."""
    model = two_solutions(p=0.65, noise=0.4, sigma=0.8)
    data = model.generate(200, seed=2)
    w = np.random.default_rng(0).uniform(0, 2, 200)
    post = GibbsPosterior(model, data, centre=DEMO_CENTRE, gamma=3.0, n_beta=57.0, weights=w)
    pts = np.random.default_rng(1).normal(size=(7, 2))
    fast = posterior_energy_fast(post)(pts)[0]
    generic = posterior_energy(post)[0](pts)[0]
    np.testing.assert_allclose(fast - generic, post.n_beta * post.loss_at_centre, rtol=1e-12)


@pytest.mark.parametrize("p, beta, gamma", [(0.7, 1.0, 8.0), (0.35, 0.3, 4.0), (0.2, 1.0, 2.0)])
def test_solution_masses_match_a_dense_grid(p, beta, gamma):
    model = two_solutions(p=p)
    post = GibbsPosterior(model, model.generate(500, seed=0), centre=DEMO_CENTRE, gamma=gamma, n_beta=beta * 500)
    exact = solution_masses(post)
    assert exact["A"] + exact["B"] == pytest.approx(1.0, abs=1e-14) and exact["error"] < 1e-7
    assert exact["A"] == pytest.approx(_grid_fraction(post), abs=2e-6)  # grid error ~3e-7 here
    # channel-1 data constrain solution A: with more of them, less mass on A
    assert (exact["A"] < 0.5) == (p > 0.5)


def test_solution_masses_symmetric_data_and_reweighting_direction():
    model = two_solutions(p=0.5)
    data = model.generate(400, seed=0)
    post = GibbsPosterior(model, data, centre=DEMO_CENTRE, gamma=8.0, n_beta=400.0)
    assert solution_masses(post)["A"] == pytest.approx(0.5, abs=1e-9)  # channels swap with a ↔ b
    ch2 = data["x"][:, 1] != 0
    fractions = [solution_masses(post.with_(weights=np.where(ch2, 1 + t, 1 - t)))["A"] for t in (0.0, 0.3, 0.6)]
    assert fractions[0] < fractions[1] < fractions[2]  # up-weighting channel 2 moves mass to A
    with pytest.raises(ValueError, match="γ > 0"):
        solution_masses(post.with_(gamma=0.0))
    with pytest.raises(ValueError, match="samples both a and b"):
        solution_masses(post.with_(sampled=("a",)))


def test_lambda_one_third_exact_at_gamma_zero_and_the_limit_of_cubature():
    """nβ E[L] = 1/3 exactly at γ = 0 (homogeneity); the generic cubature target with γ > 0
    (which knows nothing of that) approaches it as γ/(nβ)^(1/3) → 0, from below."""
    model = two_solutions(p=0.7)
    data = model.generate(100, seed=0)
    assert model.target_fn(GibbsPosterior(model, data, gamma=0.0, n_beta=37.0)) == pytest.approx(1 / 3, abs=1e-15)
    values = [finite_target_by_quadrature(GibbsPosterior(model, data, gamma=g, n_beta=nb))[0]
              for nb, g in ((1e2, 1.0), (1e4, 1.0), (1e6, 1.0), (1e6, 0.01))]
    assert values == sorted(values) and values[-1] < 1 / 3
    assert abs(values[-1] - 1 / 3) < 0.005
    # noise, or a centre off the crossing, fall back to the cubature (None here: γ = 0 is improper-looking)
    noisy = two_solutions(p=0.7, noise=0.1)
    assert noisy.target_fn(GibbsPosterior(noisy, noisy.generate(100, seed=0), gamma=0.0, n_beta=37.0)) != 1 / 3


@pytest.mark.slow
def test_nuts_mass_fraction_matches_exact():
    from pplpatterning import sample
    from pplpatterning.estimators.convergence import series_stats

    model = two_solutions(p=0.7)
    post = GibbsPosterior(model, model.generate(1000, seed=0), centre=DEMO_CENTRE, gamma=8.0, n_beta=1000.0)
    exact = solution_masses(post)["A"]
    tr = sample(post, sampler="nuts", num_chains=4, num_draws=2000, num_burnin=500, seed=5, progress_bar=False,
                target_accept=0.95, observables={"A": on_solution_a})
    st = series_stats(tr["observables"]["A"])
    print(f"P(A): NUTS {st.mean:.4f} ± {st.mcse:.4f} (ESS {st.ess_bulk:.0f}, R-hat {st.rhat:.3f}), exact {exact:.4f}")
    assert st.rhat < 1.02 and abs(st.mean - exact) < 4 * st.mcse
