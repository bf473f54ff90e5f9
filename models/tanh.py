"""A one-hidden-layer tanh network: y = Σ_{h≤H} a_h tanh(b_h x) + N(0, σ²), x ~ U(-1, 1).

Per-sample loss l_i = (y_i - Σ_h a_h tanh(b_h x_i))² / (2σ²). The truth is the zero function;
the centre is a = b = 0, where (Aoyagi & Watanabe 2005; Aoyagi 2006; Watanabe 2009, Ch. 7;
docs/math.md §5), with i = ⌊√H⌋,

    λ = (H + i² + i)/(4i + 2),   m = 2 if i² = H else 1

(see :func:`~pplpatterning.models.lambdas.tanh_lambda`; H = 1: λ = 1/2, m = 2; H = 2: 2/3;
H = 3: 5/6; H = 4: 1, m = 2).

Parameters ``a`` (H,) output weights and ``b`` (H,) input weights. The population excess
loss for H = 1 is K(a, b) = a² (1 - tanh(b)/b) / (2σ²) (E_x tanh²(bx) = 1 - tanh(b)/b).

Exact finite-nβ target: by cubature (:func:`~._quad2d.finite_target_by_quadrature`) when at
most 2 scalar coordinates are sampled (H = 1, or H = 2 with one of ``a``, ``b`` frozen);
``None`` otherwise. With γ = 0 and both of a, b sampled the posterior is improper (a is
flat where b = 0) and the target is ``None``.
"""

from __future__ import annotations

import numpy as np

from pplpatterning.spec.model import Model

from ._quad2d import quadrature_target
from ._validate import positive_float, positive_int
from .lambdas import tanh_lambda

__all__ = ["tanh", "tanh_loss", "tanh_data"]


def tanh_loss(params, batch, consts, xp):
    """l_i = (y_i - Σ_h a_h tanh(b_h x_i))² / (2σ²).

    Broadcasts over leading grid axes: a, b of shape (G, 1, H) give (G, n).
    """
    hidden = xp.tanh(batch["x"][:, None] * params["b"])  # (n, H), or (G, n, H) on a grid
    f = xp.sum(params["a"] * hidden, axis=-1)
    resid = batch["y"] - f
    return resid * resid / (2.0 * consts["sigma"] ** 2)


def tanh_data(n, rng, consts):
    """x ~ U(-1, 1), y = σ ε (the truth is the zero function)."""
    x = rng.uniform(-1.0, 1.0, size=n)
    y = float(consts["sigma"]) * rng.standard_normal(n)
    return {"x": x, "y": y}


def tanh(H: int = 1, sigma: float = 1.0) -> Model:
    """y = Σ_{h≤H} a_h tanh(b_h x) + N(0, σ²), x ~ U(-1, 1), truth 0, centre a = b = 0.

    Parameters
    ----------
    H
        Number of hidden units, positive integer. Default 1 (λ = 1/2, m = 2, 2 parameters,
        exact finite-nβ target by cubature).
    sigma
        Noise standard deviation σ > 0. Default 1.
    """
    H = positive_int(H, "H")
    sigma = positive_float(sigma, "sigma")
    lam, mult = tanh_lambda(H)
    return Model(
        name="tanh",
        loss=tanh_loss,
        param_shapes={"a": (H,), "b": (H,)},
        centre={"a": np.zeros(H), "b": np.zeros(H)},
        consts={"sigma": sigma},
        data_generator=tanh_data,
        lam=float(lam),
        multiplicity=mult,
        target_fn=quadrature_target,
        description=(
            f"tanh network y = Σ a_h tanh(b_h x) + N(0, σ²), H={H}, σ={sigma:g}, x ~ U(-1, 1); "
            "λ = (H + i² + i)/(4i + 2), i = ⌊√H⌋ (Aoyagi & Watanabe)"
        ),
    )
