"""Reduced-rank regression: y = B A x + N(0, σ² I_N), A: H×M, B: N×H, x ~ N(0, I_M).

Per-sample loss l_i = ||y_i - B A x_i||² / (2σ²). The truth is the rank-r matrix
C = [I_r 0; 0 0] (N×M); the centre is the "safe" factorisation A* = [I_r 0; 0 0] (H×M),
B* = [I_r 0; 0 0] (N×H) (all zeros when r = 0; docs/math.md §6), at which the local learning
coefficient equals the global one given by Aoyagi & Watanabe 2005, "Stochastic
complexities of reduced rank regression in Bayesian estimation", Neural Networks 18(7)
(see :func:`~pplpatterning.models.lambdas.rrr_lambda`).
"""

from __future__ import annotations

import numpy as np

from pplpatterning.spec.model import Model

from ._validate import positive_float
from .lambdas import rrr_dims, rrr_lambda

__all__ = ["rrr", "rrr_loss", "matrix_regression_data", "identity_block"]


def rrr_loss(params, batch, consts, xp):
    """l_i = ||y_i - B A x_i||² / (2σ²) with x_i a row of batch["x"] (n, M)."""
    pred = (batch["x"] @ params["A"].T) @ params["B"].T
    resid = batch["y"] - pred
    return xp.sum(resid * resid, axis=-1) / (2.0 * consts["sigma"] ** 2)


def matrix_regression_data(n, rng, consts):
    """x ~ N(0, I_M), y = C x + σ ε with C = consts["C_true"] (N×M), ε ~ N(0, I_N)."""
    c_true = np.asarray(consts["C_true"], dtype=np.float64)
    x = rng.standard_normal((n, c_true.shape[1]))
    y = x @ c_true.T + float(consts["sigma"]) * rng.standard_normal((n, c_true.shape[0]))
    return {"x": x, "y": y}


def identity_block(rows: int, cols: int, r: int) -> np.ndarray:
    """The rows×cols matrix with I_r in the top-left corner and zeros elsewhere."""
    out = np.zeros((rows, cols))
    out[:r, :r] = np.eye(r)
    return out


def rrr(M: int = 3, N: int = 3, H: int = 3, r: int = 1, sigma: float = 1.0) -> Model:
    """Reduced-rank regression with input dim M, output dim N, inner dim H, true rank r.

    Parameters ``A`` (H, M) and ``B`` (N, H). Defaults (M, N, H, r) = (3, 3, 3, 1):
    λ = 4, m = 1. Requires 0 ≤ r ≤ min(M, N, H); σ > 0 is the noise standard deviation.
    """
    M, N, H, r = rrr_dims(M, N, H, r)
    sigma = positive_float(sigma, "sigma")
    lam, mult = rrr_lambda(M, N, H, r)
    return Model(
        name="rrr",
        loss=rrr_loss,
        param_shapes={"A": (H, M), "B": (N, H)},
        centre={"A": identity_block(H, M, r), "B": identity_block(N, H, r)},
        consts={"sigma": sigma, "C_true": identity_block(N, M, r)},
        data_generator=matrix_regression_data,
        lam=float(lam),
        multiplicity=mult,
        description=(
            f"reduced-rank regression y = BAx + N(0, σ²I), M={M}, N={N}, H={H}, true rank r={r}, "
            f"σ={sigma:g}; λ from Aoyagi & Watanabe 2005"
        ),
    )
