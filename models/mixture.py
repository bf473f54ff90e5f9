"""Two-component Gaussian mixtures with truth q = N(0, σ²) (docs/math.md §5).

Per-sample loss: the negative log-likelihood l_i = -log p(x_i | w), computed with a
log-sum-exp written in the array-API ops (``_logaddexp``), stable for any parameters.

Two parametrisations, both with unconstrained real parameters (``variant``):

``"means"`` (default): p(x | a, b) = ½ N(x; a + b, σ²) + ½ N(x; a - b, σ²), equal weights,
    location a and half-separation b (a linear reparametrisation of the two means
    μ_{1,2} = a ± b, so λ is that of the means). Centre (0, 0), the only true parameter up
    to the label swap b ↦ -b. K(a, b) = (a² + b²)/(2σ²) - E log cosh(b(x - a)/σ²) is even
    in a and in b, with K(a, b) - K(0, b) = a² u(a, b), u(0, 0) = 1/(2σ²), and
    K(0, b) = b⁴ v(b), v(0) = 1/(4σ⁴): K is equivalent to a² + b⁴, so λ = 1/2 + 1/4 = 3/4,
    m = 1 (Watanabe 2009, Ch. 2 and 7: equivalent functions have the same λ and m, λ of a
    sum in disjoint variables is the sum). The quadratic-plus-quartic structure is the
    moment ideal ⟨E z, E z²⟩ = ⟨a, b²⟩ of the mixing distribution z ∈ {a ± b} (Hermite
    expansion of p/q), as in Yamazaki & Watanabe 2003, "Singularities in mixture models
    and upper bounds of stochastic complexity", Neural Networks 16(7).

``"weight"``: p(x | s, b) = (1 - σ(s)) N(x; 0, σ²) + σ(s) N(x; b, σ²), mixing weight
    a = σ(s) = 1/(1 + e^{-s}) through the logistic map, so that a stays in (0, 1) for every
    real s. Centre (s*, 0) with a* = σ(s*) = ``weight`` (default ½, s* = 0). Here
    K = a² b² u(a, b) with u(0, 0) = 1/(2σ²) > 0 (the standard example of a singular
    mixture, K ≈ a²b²/(2σ²) near the origin); at an interior weight a* ∈ (0, 1) the factor a²
    is a unit, so K is equivalent to b²: λ = 1/2, m = 1, with s a flat direction. The
    logistic map is a diffeomorphism R → (0, 1), and λ, m do not change under a
    diffeomorphism at the centre. The origin a = 0, b = 0 (λ = 1/2, m = 2 for a prior
    positive there) lies on the boundary of the weight's domain and is reached by no
    unconstrained diffeomorphic chart, which is why it is not offered as a centre.

Exact finite-nβ target: by cubature (:func:`~._quad2d.finite_target_by_quadrature`), for
any data, weights, centre, γ and restriction. With γ = 0 both posteriors are improper
(one component can move away while the other fits the data, so the loss stays bounded
along a ray; "weight": the loss is flat as s → -∞) and the target is ``None``.
"""

from __future__ import annotations

import math

import numpy as np

from pplpatterning.spec.model import Model

from ._quad2d import quadrature_target
from ._validate import positive_float
from .lambdas import gaussian_mixture_lambda

__all__ = ["gaussian_mixture", "mixture_loss", "mixture_data"]

_VARIANTS = ("means", "weight")


def _logaddexp(u, v, xp):
    """log(e^u + e^v) as m + log(e^{u-m} + e^{v-m}) with m = max(u, v).

    The expression equals log(e^u + e^v) for every value of m, so its derivatives of every
    order are exact whatever an autodiff system does with max at ties (u = v happens at
    the centre of the "means" mixture).
    """
    m = xp.maximum(u, v)
    return m + xp.log(xp.exp(u - m) + xp.exp(v - m))


def _means_nll(params, batch, consts, xp):
    sigma = consts["sigma"]
    z1 = (batch["x"] - params["a"] - params["b"]) / sigma
    z2 = (batch["x"] - params["a"] + params["b"]) / sigma
    log_norm = xp.log(sigma) + 0.5 * math.log(2.0 * math.pi)
    return log_norm + math.log(2.0) - _logaddexp(-0.5 * z1 * z1, -0.5 * z2 * z2, xp)


def _weight_nll(params, batch, consts, xp):
    sigma = consts["sigma"]
    z0 = batch["x"] / sigma
    z1 = (batch["x"] - params["b"]) / sigma
    log_norm = xp.log(sigma) + 0.5 * math.log(2.0 * math.pi)
    s = params["s"]
    log_mix = _logaddexp(-0.5 * z0 * z0, s - 0.5 * z1 * z1, xp) - _logaddexp(s, 0.0 * s, xp)
    return log_norm - log_mix


def mixture_loss(params, batch, consts, xp):
    """l_i = -log p(x_i | w), the variant chosen by the parameter names (never by values):

    - ``a``, ``b``: -log(½N(x_i; a + b, σ²) + ½N(x_i; a - b, σ²));
    - ``s``, ``b``: -log((1 - σ(s))N(x_i; 0, σ²) + σ(s)N(x_i; b, σ²)), written as
      log(N_0 + e^s N_b) - log(1 + e^s), two log-sum-exps.

    Broadcasts over leading grid axes: scalar parameters of shape (G, 1) give (G, n).
    """
    if "s" in params:
        return _weight_nll(params, batch, consts, xp)
    return _means_nll(params, batch, consts, xp)


def mixture_data(n, rng, consts):
    """x ~ N(0, σ²), the true distribution."""
    return {"x": float(consts["sigma"]) * rng.standard_normal(n)}


def gaussian_mixture(variant: str = "means", sigma: float = 1.0, weight: float = 0.5) -> Model:
    """A two-component Gaussian mixture with truth N(0, σ²) (see the module docstring).

    Parameters
    ----------
    variant
        ``"means"`` (default): ½N(a + b, σ²) + ½N(a - b, σ²), scalar parameters ``a``, ``b``,
        centre (0, 0), λ = 3/4, m = 1. ``"weight"``: (1 - σ(s))N(0, σ²) + σ(s)N(b, σ²),
        scalar parameters ``s`` (logit of the weight) and ``b``, centre (logit(weight), 0),
        λ = 1/2, m = 1.
    sigma
        Known component standard deviation σ > 0 (also the truth's). Default 1.
    weight
        The centre's mixing weight a* ∈ (0, 1) for ``variant="weight"``. Default 0.5.
    """
    if not isinstance(variant, str) or variant not in _VARIANTS:
        raise ValueError(f"`variant` must be one of {list(_VARIANTS)}, got {variant!r}.")
    sigma = positive_float(sigma, "sigma")
    weight = positive_float(weight, "weight")
    if not weight < 1.0:
        raise ValueError(f"`weight` must lie strictly between 0 and 1, got {weight!r}.")
    lam, mult = gaussian_mixture_lambda(variant)
    if variant == "means":
        names, centre_vals = ("a", "b"), (0.0, 0.0)
        desc = "½N(a+b, σ²) + ½N(a-b, σ²)"
    else:
        names, centre_vals = ("s", "b"), (math.log(weight / (1.0 - weight)), 0.0)
        desc = f"(1-σ(s))N(0, σ²) + σ(s)N(b, σ²), centre weight {weight:g}"
    return Model(
        name="gaussian_mixture",
        loss=mixture_loss,
        param_shapes={name: () for name in names},
        centre={name: np.asarray(v) for name, v in zip(names, centre_vals)},
        consts={"sigma": sigma},
        data_generator=mixture_data,
        lam=float(lam),
        multiplicity=mult,
        target_fn=quadrature_target,
        description=f"Gaussian mixture {desc}, truth N(0, σ²), σ={sigma:g}; λ = {lam}, m = {mult}",
    )
