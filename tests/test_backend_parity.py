"""The Pyro and NumPyro backends sample the same posterior.

1. Potentials and gradients agree in float64 to 1e-10 (relative) on every zoo model, for
   hypothesis-generated parameters, data weights, γ, nβ and weight restrictions, and both
   equal the NumPy reference ``post.potential``. On the Pyro side both routes are checked:
   the Pyro model NUTS/HMC integrate, and the direct vectorised potential of MALA/SG.
2. For the same spec and sampler, the two backends' λ̂ agree within 4 combined MCSE on the
   product model, a reduced-rank regression and a deep linear network (MALA, γ > 0), in
   runs whose R-hat is below 1.01.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pplpatterning as pp
from pplpatterning.models import MODELS, get_model

pb = pytest.importorskip("pplpatterning.backends.pyro")
nb = pytest.importorskip("pplpatterning.backends.numpyro")

RTOL = 1e-10
HYP = settings(derandomize=True, deadline=None, max_examples=12, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def posterior_specs(draw, name: str):
    model = get_model(name)
    names = list(model.param_shapes)
    mask = draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)).filter(any))
    return dict(
        model=model,
        seed=draw(st.integers(0, 2**16)),
        n=draw(st.integers(1, 40)),
        scale=draw(st.sampled_from([0.0, 0.05, 0.5, 1.5])),
        gamma=draw(st.sampled_from([0.0, 0.3, 7.0])),
        n_beta=draw(st.floats(0.5, 5e3)),
        weights=draw(st.sampled_from(["none", "raw", "normalised"])),
        sampled=tuple(n for n, keep in zip(names, mask) if keep),
    )


def _build(spec):
    model = spec["model"]
    rng = np.random.default_rng(spec["seed"])
    n = spec["n"]
    data = model.generate(n, seed=spec["seed"])
    weights = None
    if spec["weights"] != "none":
        weights = rng.uniform(0.0, 2.0, n) * (rng.uniform(size=n) > 0.2)  # some exact zeros
        if spec["weights"] == "normalised" and weights.sum() == 0:
            weights[0] = 1.0
    post = pp.GibbsPosterior(model, data, n_beta=spec["n_beta"], gamma=spec["gamma"], weights=weights,
                             normalize_weights=spec["weights"] == "normalised", sampled=spec["sampled"])
    params = {k: post.centre[k] + spec["scale"] * rng.standard_normal(post.centre[k].shape) for k in post.sampled}
    return post, params


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= RTOL * max(abs(scale), 1e-8)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_potentials_and_gradients_agree(name):
    @HYP
    @given(spec=posterior_specs(name))
    def check(spec):
        post, params = _build(spec)
        ref = post.potential(params)
        results = {
            "numpyro": nb.potential_and_grad(post, params),
            "pyro-model": pb.potential_and_grad(post, params),
            "pyro-direct": pb.potential_and_grad(post, params, route="direct"),
        }
        for route, (value, _) in results.items():
            assert _close(value, ref, ref), f"{route}: U = {value!r}, NumPy reference {ref!r}"
        g_ref = results["numpyro"][1]
        gscale = max(float(np.max(np.abs(g))) if np.size(g) else 0.0 for g in g_ref.values())
        for route in ("pyro-model", "pyro-direct"):
            grad = results[route][1]
            assert set(grad) == set(post.sampled)
            for k in post.sampled:
                assert np.shape(grad[k]) == tuple(post.model.param_shapes[k])
                err = float(np.max(np.abs(np.asarray(grad[k]) - np.asarray(g_ref[k])), initial=0.0))
                assert err <= RTOL * max(gscale, 1e-8), f"{route}: ∇U[{k}] differs from numpyro by {err:.3g}"

    check()


# ------------------------------------------------------------------ λ̂ parity
PARITY_CASES = {
    # model, γ: MALA with localization mixes well on these singular posteriors (R-hat < 1.01)
    # y = a·b·x: a chain occasionally runs out along the a·b ridges, so its MCSE has heavy tails
    # across seeds (Pyro 0.006-0.025 at 4×2000 draws, thinning 2); 4× the steps keep the
    # comparison's error bar below 6 % of λ̂.
    "product": dict(gamma=4.0, num_draws=4000, thinning=4),
    "rrr": dict(gamma=2.0),
    "dln": dict(gamma=2.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARITY_CASES))
def test_llc_agrees_across_backends(name):
    model = get_model(name)
    case = {"num_draws": 2000, "thinning": 2, **PARITY_CASES[name]}
    post = pp.GibbsPosterior(model, model.generate(500, seed=0), gamma=case["gamma"])
    est = {}
    for seed, backend in enumerate(("numpyro", "pyro")):
        tr = pp.sample(post, backend=backend, sampler="mala", num_chains=4, num_draws=case["num_draws"],
                       num_burnin=1000, thinning=case["thinning"], seed=seed, progress_bar=False)
        est[backend] = pp.llc(tr)
        e = est[backend]
        print(f"{name} {backend}: {e}")
        assert e.rhat < 1.01, e
        assert e.ess_bulk > 400, e
        assert 0.4 < float(tr["sample_stats"]["accept_prob"].mean()) < 0.8  # adaptation reached its target
    a, b = est["numpyro"], est["pyro"]
    combined = math.hypot(a.mcse, b.mcse)
    assert combined < 0.06 * max(abs(a.llc), abs(b.llc)), "runs too short for a meaningful comparison"
    assert abs(a.llc - b.llc) < 4 * combined, f"numpyro {a.llc:.4f} vs pyro {b.llc:.4f}, 4σ = {4 * combined:.4f}"
