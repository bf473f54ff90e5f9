"""The radial power K(w) = ‖w‖^{2k} in R^d as a per-sample loss.

Every sample has loss l_i(w) = K(w) (the data is a dummy array ``z`` of shape (n,) the loss
broadcasts over, as in :mod:`.powers`), so L_n^ρ(w) = ρ̄ K(w) with ρ̄ the mean effective
weight. At w* = 0, λ = d/(2k) and m = 1: in polar coordinates
Z(n) = ∫ e^{-n r^{2k}} r^{d-1} dr dΩ = Γ(d/(2k)) |S^{d-1}| / (2k) · n^{-d/(2k)} exactly
(docs/math.md §5; :func:`~pplpatterning.models.lambdas.norm_power_lambda`).

Exact finite-nβ target. With s = nβ ρ̄ the posterior is p(w) ∝ exp(-s ‖w‖^{2k} - γ‖w - w*‖²/2).

- γ = 0: u = s r^{2k} is Gamma(d/(2k), 1) distributed (the radial density
  r^{d-1} e^{-s r^{2k}} is a generalised gamma), so E[s K] = d/(2k) for every nβ and

      E[λ̂] = d/(2k) - s K(w*).

- γ > 0: averaging e^{γ⟨w, w*⟩} over the sphere of radius r gives
  A(z) = Γ(d/2) (2/z)^{d/2-1} I_{d/2-1}(z), z = γ r ‖w*‖ (A = cosh z for d = 1, A = 1 when
  w* = 0), so E[s r^{2k}] is a 1-D quadrature over r with density
  ∝ r^{d-1} exp(-s r^{2k} - γ r²/2) A(γ r ‖w*‖) (:func:`~._quad.expectation_1d`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from pplpatterning.spec.model import Model

from ._quad import expectation_1d
from ._validate import positive_int
from .lambdas import norm_power_lambda

__all__ = ["norm_power", "norm_power_loss", "norm_power_data", "norm_power_target"]


def norm_power_loss(params, batch, consts, xp):
    """l_i = (Σ_j w_j²)^k for every sample i (broadcast over the dummy data ``z``).

    The k-th power is a product of k copies (``consts["ones_k"]`` has length k), not
    ``pow``: exact and twice differentiable at 0 for every k (JAX's Hessian of
    ``pow(s, 1.0)`` at s = 0 is NaN). Broadcasts over leading grid axes: w of shape
    (G, 1, d) gives (G, n).
    """
    w = params["w"]
    sq = xp.sum(w * w, axis=-1)
    potential = xp.prod(sq[..., None] * consts["ones_k"], axis=-1)
    return potential + 0.0 * batch["z"]


def norm_power_data(n, rng, consts):
    """A dummy data set: z = zeros(n) (the loss does not depend on the data)."""
    return {"z": np.zeros(n)}


def _log_sphere_average(z: float, d: int) -> float:
    """log A(z), A(z) = average of e^{z cos θ} over the unit sphere S^{d-1}."""
    if z < 1e-12:
        return z * z / (2.0 * d)
    if d == 1:
        return z + math.log1p(math.exp(-2.0 * z)) - math.log(2.0)
    nu = 0.5 * d - 1.0
    return math.lgamma(0.5 * d) + nu * math.log(2.0 / z) + math.log(special.ive(nu, z)) + z


def norm_power_target(posterior):
    """Exact E[λ̂] (see the module docstring); None if the posterior is improper (γ = 0 and
    all weights zero) or the radial quadrature misses its tolerance."""
    consts = posterior.model.consts
    k = int(consts["ones_k"].shape[0])
    w_star = np.asarray(posterior.centre["w"], dtype=np.float64)
    d = w_star.shape[0]
    s = float(posterior.n_beta) * float(np.mean(posterior.effective_weights))
    gamma = float(posterior.gamma)
    r_star = float(np.linalg.norm(w_star))
    at_centre = s * r_star ** (2 * k)
    if gamma == 0.0:
        if not s > 0:
            return None
        return d / (2 * k) - at_centre
    if s == 0.0:
        return 0.0  # the loss is constant: λ̂ = 0

    def log_density(r: float) -> float:
        r = abs(r)
        if r == 0.0:
            return 0.0 if d == 1 else -math.inf
        return ((d - 1) * math.log(r) - s * r ** (2 * k) - 0.5 * gamma * r * r
                + _log_sphere_average(gamma * r * r_star, d))

    out = expectation_1d(log_density, lambda r: s * abs(r) ** (2 * k), anchors=(0.0, r_star))
    return None if out is None else out[0] - at_centre


def norm_power(d: int = 2, k: int = 2) -> Model:
    """K(w) = ‖w‖^{2k} in R^d as a per-sample loss; λ = d/(2k), m = 1, centre 0.

    Parameters
    ----------
    d
        Dimension, positive integer. Default 2.
    k
        Half-exponent, positive integer. Default 2 (λ = 1/2 in two dimensions).

    One parameter ``w`` of shape (d,). ``target_fn`` is exact for every d, k, centre, γ and
    data weights.
    """
    d = positive_int(d, "d")
    k = positive_int(k, "k")
    lam, mult = norm_power_lambda(d, k)
    return Model(
        name="norm_power",
        loss=norm_power_loss,
        param_shapes={"w": (d,)},
        centre={"w": np.zeros(d)},
        consts={"ones_k": np.ones(k)},
        data_generator=norm_power_data,
        lam=float(lam),
        multiplicity=mult,
        target_fn=norm_power_target,
        description=f"radial power K(w) = ‖w‖^(2k), d={d}, k={k}; λ = d/(2k)",
    )
