"""Separable powers: the potential K(w) = Σ_i c_i w_i^{2k_i} as a per-sample loss.

Every sample has loss l_i(w) = K(w) (the data is a dummy array ``z`` of shape (n,) the loss
broadcasts over), so L_n^ρ(w) = ρ̄ K(w) with ρ̄ the mean effective weight. At w* = 0,
λ = Σ_i 1/(2k_i) and m = 1 (Watanabe 2009, Ch. 7: λ of a sum of functions of disjoint
variables is the sum; docs/math.md §5).

Exact finite-nβ target (docs/math.md §6). The posterior factorises over coordinates: coordinate
i has density ∝ exp(-s_i w^{2k_i} - γ(w - w*_i)²/2), s_i = nβ ρ̄ c_i. With γ = 0 it is a
generalised normal and E[s_i w^{2k_i}] = 1/(2k_i) exactly, so for the sampled set S

    E[λ̂] = Σ_{i∈S} ( 1/(2k_i) - s_i (w*_i)^{2k_i} )      (γ = 0, any nβ, any centre)

For γ > 0 each coordinate's E[s_i w^{2k_i}] is a 1-D quadrature (``expectation_1d``,
adaptive Gauss–Kronrod with its own error estimate).

Parameter layout: one vector ``w`` (d,), or with ``split=s`` the vectors ``u`` (first s
coordinates) and ``v`` (the rest), for weight-restricted posteriors.
"""

from __future__ import annotations

import numpy as np

from pplpatterning.spec.model import Model

from ._quad import expectation_1d
from ._validate import int_exponents, positive_floats, split_point
from .lambdas import powers_lambda

__all__ = ["powers", "powers_loss", "powers_data", "powers_target"]


def powers_loss(params, batch, consts, xp):
    """l_i = Σ_j c_j w_j^{2k_j} for every sample i (broadcast over the dummy data ``z``).

    Broadcasts over leading grid axes of the parameters: w of shape (G, 1, d) gives (G, n).
    """
    w = params["w"] if "w" in params else xp.concat([params["u"], params["v"]], axis=-1)
    potential = xp.sum(consts["c"] * xp.pow(w, 2.0 * consts["k"]), axis=-1)  # (..., 1) on a grid
    return potential + 0.0 * batch["z"]


def powers_data(n, rng, consts):
    """A dummy data set: z = zeros(n) (the loss does not depend on the data)."""
    return {"z": np.zeros(n)}


def _layout(d: int, split: int | None) -> dict[str, slice]:
    if split is None:
        return {"w": slice(0, d)}
    return {"u": slice(0, split), "v": slice(split, d)}


def powers_target(posterior):
    """Exact E[λ̂] (see the module docstring); None if the posterior is improper or the
    quadrature misses its tolerance."""
    consts = posterior.model.consts
    c = np.asarray(consts["c"], dtype=np.float64)
    k = np.asarray(consts["k"], dtype=np.float64).astype(int)
    d = c.shape[0]
    split = int(consts["split"])
    layout = _layout(d, split if split > 0 else None)
    centre = np.empty(d)
    for name, sl in layout.items():
        centre[sl] = posterior.centre[name]
    idx = np.concatenate([np.arange(d)[layout[name]] for name in posterior.sampled])
    rho_bar = float(np.mean(posterior.effective_weights))
    nb, gamma = float(posterior.n_beta), float(posterior.gamma)
    total = 0.0
    for i in idx:
        s = nb * rho_bar * float(c[i])
        ki, wi = int(k[i]), float(centre[i])
        at_centre = s * wi ** (2 * ki)
        if gamma == 0.0:
            if not s > 0:
                return None  # flat in this coordinate: improper
            total += 1.0 / (2 * ki) - at_centre
            continue
        if s == 0.0:
            continue  # the loss does not depend on this coordinate
        out = expectation_1d(
            lambda w, s=s, ki=ki, wi=wi: -s * w ** (2 * ki) - 0.5 * gamma * (w - wi) ** 2,
            lambda w, s=s, ki=ki: s * w ** (2 * ki),
            anchors=(0.0, wi),
        )
        if out is None:
            return None
        total += out[0] - at_centre
    return float(total)


def powers(k=(1, 2), c=None, split: int | None = None) -> Model:
    """K(w) = Σ_i c_i w_i^{2k_i} as a per-sample loss; λ = Σ 1/(2k_i), m = 1, centre 0.

    Parameters
    ----------
    k
        Half-exponents, positive integers (one per coordinate). Default (1, 2).
    c
        Positive coefficients, same length as ``k``. Default None: all ones, (1, 1) for the
        default ``k``.
    split
        None (one parameter ``w``) or 1 ≤ split ≤ d-1: parameters ``u`` = first ``split``
        coordinates and ``v`` = the rest.
    """
    k = int_exponents(k, "k")
    c = (1.0,) * len(k) if c is None else positive_floats(c, "c", length=len(k), length_name="k")
    d = len(k)
    split = split_point(split, d)
    layout = _layout(d, split)
    lam, mult = powers_lambda(k)
    return Model(
        name="powers",
        loss=powers_loss,
        param_shapes={name: (sl.stop - sl.start,) for name, sl in layout.items()},
        centre={name: np.zeros(sl.stop - sl.start) for name, sl in layout.items()},
        consts={
            "c": np.asarray(c, dtype=np.float64),
            "k": np.asarray(k, dtype=np.float64),
            "split": 0.0 if split is None else float(split),
        },
        data_generator=powers_data,
        lam=float(lam),
        multiplicity=mult,
        target_fn=powers_target,
        description=f"separable powers K(w) = Σ c_i w_i^(2k_i), k={list(k)}, c={list(c)}; λ = Σ 1/(2k_i)",
    )
