"""Normal-crossing regression: y = x · Π_i w_i^{k_i} + N(0, σ²), x ~ N(0, 1), truth w = 0.

Per-sample loss l_i(w) = (y_i - x_i f(w))² / (2σ²) with f(w) = Π_i w_i^{k_i}. The
population excess loss is K(w) = E[x²] f(w)² / (2σ²) = Π_i w_i^{2k_i} / (2σ²), a normal
crossing, so at w* = 0 (Watanabe 2009, Ch. 2 and 7; docs/math.md §5)

    λ = 1 / (2 max_i k_i),   m = #{i : k_i = max_j k_j}.

Exact finite-nβ target. L_n^ρ depends on w only through f: with weights c ρ_i,
Q1 = Σ cρ x y / (nσ²) and Q2 = Σ cρ x² / (nσ²),

    L_n^ρ(w) - L_n^ρ(w*) = (f - f*)(-Q1 + ½ Q2 (f + f*)).

``crossing_target`` evaluates E[λ̂] = nβ E[L_n^ρ(w) - L_n^ρ(w*)] when at most two
coordinates are sampled:
- one sampled coordinate with exponent 1: Gaussian, closed form;
- one sampled coordinate with exponent > 1: 1-D quadrature;
- two sampled coordinates, one of them (j) with exponent 1, and γ > 0: given the other
  coordinate s, w_j is Gaussian with precision p = nβ Q2 t² + γ and mean
  μ = (nβ Q1 t + γ w*_j)/p (t = s^{k_s} times the frozen factors); integrating w_j out
  analytically leaves a 1-D quadrature in s with log-density -½ log p + p μ²/2 - γ(s - s*)²/2.
Otherwise (three or more sampled coordinates, no exponent 1, or γ = 0 with two sampled
coordinates, where the posterior is improper) it returns None; the model's ``target_fn``
then falls back, for two coordinates, to the 2-D cubature of :mod:`._quad2d` (which returns
None for the improper γ = 0 posterior).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pplpatterning.spec.model import Model

from ._quad import expectation_1d
from ._quad2d import quadrature_target
from ._validate import int_exponents, positive_float
from .lambdas import normal_crossing_lambda

__all__ = ["normal_crossing", "normal_crossing_loss", "crossing_data", "crossing_target"]


def normal_crossing_loss(params, batch, consts, xp):
    """l_i = (y_i - x_i Π_j w_j^{k_j})² / (2σ²).

    Π_j w_j^{k_j} is evaluated as the product of w gathered at ``consts["factor_index"]``
    (index j repeated k_j times) rather than with ``pow``: exact and sign-correct for negative
    w, and twice differentiable at w = 0 (JAX's second derivative of pow(w, 1.0) at 0 is NaN).
    """
    factors = xp.take(params["w"], xp.astype(consts["factor_index"], xp.int32), axis=-1)
    f = xp.prod(factors, axis=-1)  # (..., 1) for parameters with leading grid axes (G, 1, d)
    resid = batch["y"] - batch["x"] * f
    return resid * resid / (2.0 * consts["sigma"] ** 2)


def crossing_data(n, rng, consts):
    """x ~ N(0, 1), y = σ ε (the truth is f = 0)."""
    x = rng.standard_normal(n)
    y = float(consts["sigma"]) * rng.standard_normal(n)
    return {"x": x, "y": y}


@dataclass(frozen=True)
class _CrossingStats:
    """What E[λ̂] depends on (module docstring): Q1, Q2, f* = f(w*), the product of the
    frozen coordinates' factors, nβ and γ."""

    q1: float
    q2: float
    f_star: float
    frozen: float
    nb: float
    gamma: float

    def delta_loss(self, f):
        """L_n^ρ(w) - L_n^ρ(w*) = (f - f*)(-Q1 + ½ Q2 (f + f*)) as a function of f = f(w)."""
        return (f - self.f_star) * (-self.q1 + 0.5 * self.q2 * (f + self.f_star))


def _one_sampled_target(st: _CrossingStats, ki: int, ci: float) -> float | None:
    """One sampled coordinate with exponent ``ki`` and centre ``ci``: closed form for ki = 1
    (f is Gaussian), else a 1-D quadrature."""
    nb, gamma, frozen, q1, q2 = st.nb, st.gamma, st.frozen, st.q1, st.q2
    if ki == 1:
        precision = nb * q2 * frozen**2 + gamma
        if not precision > 0:
            return None
        mu = (nb * q1 * frozen + gamma * ci) / precision
        ef = frozen * mu
        # E[(f - f*)(-Q1 + ½Q2(f + f*))] with f Gaussian of mean ef, variance frozen²/p
        return nb * (st.delta_loss(ef) + 0.5 * q2 * frozen**2 / precision)
    if gamma == 0.0 and not q2 * frozen**2 > 0:
        return None

    def log_q(s):
        return -nb * st.delta_loss(frozen * s**ki) - 0.5 * gamma * (s - ci) ** 2

    def func(s):
        return nb * st.delta_loss(frozen * s**ki)

    out = expectation_1d(log_q, func, anchors=(0.0, ci))
    return None if out is None else out[0]


def _two_sampled_target(st: _CrossingStats, ki: int, ci: float, cj: float) -> float | None:
    """Two sampled coordinates, j with exponent 1 (centre ``cj``) and the other with exponent
    ``ki`` (centre ``ci``), γ > 0: w_j integrated out analytically, then a 1-D quadrature."""
    nb, gamma, frozen, q1, q2 = st.nb, st.gamma, st.frozen, st.q1, st.q2

    def moments(s):
        t = frozen * s**ki
        p = nb * q2 * t * t + gamma
        b = nb * q1 * t + gamma * cj
        return t, p, b

    def log_q(s):
        t, p, b = moments(s)
        return -0.5 * math.log(p) + 0.5 * b * b / p - 0.5 * gamma * (s - ci) ** 2

    def func(s):
        t, p, b = moments(s)
        ef = t * b / p
        return nb * (st.delta_loss(ef) + 0.5 * q2 * t * t / p)

    out = expectation_1d(log_q, func, anchors=(0.0, ci))
    return None if out is None else out[0]


def crossing_target(*, k, centre, sampled, data, weights, sigma, n_beta, gamma):
    """Exact E[λ̂] for y = x Π w_i^{k_i} + noise, or None (see the module docstring).

    ``k``, ``centre`` and ``sampled`` are per-coordinate sequences (exponent, centre value,
    whether the coordinate is sampled).
    """
    k = [int(v) for v in k]
    centre = [float(v) for v in centre]
    x = np.asarray(data["x"], dtype=np.float64).reshape(-1)
    y = np.asarray(data["y"], dtype=np.float64).reshape(-1)
    c = np.asarray(weights, dtype=np.float64)
    n = x.shape[0]
    st = _CrossingStats(
        q1=float(np.sum(c * x * y)) / (n * sigma**2),
        q2=float(np.sum(c * x * x)) / (n * sigma**2),
        f_star=math.prod(ci**ki for ci, ki in zip(centre, k)),
        frozen=math.prod(centre[i] ** k[i] for i in range(len(k)) if not sampled[i]),
        nb=float(n_beta), gamma=float(gamma),
    )
    free = [i for i, s in enumerate(sampled) if s]
    if len(free) == 1:
        (i,) = free
        return _one_sampled_target(st, k[i], centre[i])
    if len(free) == 2 and st.gamma > 0.0:
        linear = [i for i in free if k[i] == 1]
        if not linear:
            return None
        j = linear[0]
        (i,) = [v for v in free if v != j]
        return _two_sampled_target(st, k[i], centre[i], centre[j])
    return None


def _normal_crossing_target(posterior):
    consts = posterior.model.consts
    k = consts["k"]
    sampled = [True] * len(k) if "w" in posterior.sampled else [False] * len(k)
    value = crossing_target(
        k=k, centre=np.asarray(posterior.centre["w"]), sampled=sampled, data=posterior.data,
        weights=posterior.effective_weights, sigma=float(consts["sigma"]),
        n_beta=posterior.n_beta, gamma=posterior.gamma,
    )
    if value is None and len(k) == 2:
        # two coordinates without an exponent 1 (or γ = 0): 2-D cubature, None if improper
        return quadrature_target(posterior)
    return value


def normal_crossing(k=(1, 2), sigma: float = 1.0) -> Model:
    """y = x Π_i w_i^{k_i} + N(0, σ²), x ~ N(0, 1), truth and centre w = 0.

    Parameters
    ----------
    k
        Exponents, a non-empty sequence of positive integers (one per parameter coordinate).
        Default (1, 2): λ = 1/4, m = 1.
    sigma
        Noise standard deviation σ > 0. Default 1.

    One parameter ``w`` of shape (len(k),). ``target_fn`` is exact for len(k) ≤ 2 (closed form,
    1-D quadrature, or 2-D cubature; None for the improper γ = 0 posterior in two
    coordinates) and returns None for len(k) ≥ 3.
    """
    k = int_exponents(k, "k")
    sigma = positive_float(sigma, "sigma")
    lam, mult = normal_crossing_lambda(k)
    return Model(
        name="normal_crossing",
        loss=normal_crossing_loss,
        param_shapes={"w": (len(k),)},
        centre={"w": np.zeros(len(k))},
        consts={
            "k": np.asarray(k, dtype=np.float64),
            "factor_index": np.repeat(np.arange(len(k)), k).astype(np.float64),
            "sigma": sigma,
        },
        data_generator=crossing_data,
        lam=float(lam),
        multiplicity=mult,
        target_fn=_normal_crossing_target,
        description=(
            f"normal crossing y = x·Π w_i^k_i + N(0, σ²), k={list(k)}, σ={sigma:g}, x ~ N(0, 1); "
            "λ = 1/(2 max k)"
        ),
    )
