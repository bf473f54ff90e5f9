"""Deep linear network: y = W_L ··· W_1 x + N(0, σ² I), x ~ N(0, I).

Widths [H_1 (input), ..., H_{L+1} (output)]; parameters ``W1`` (H_2×H_1), ...,
``WL`` (H_{L+1}×H_L). Per-sample loss l_i = ||y_i - W_L···W_1 x_i||² / (2σ²).
The truth is the rank-r matrix [I_r 0; 0 0] (H_{L+1}×H_1); the centre is every W_l equal
to [I_r 0; 0 0] (zeros when r = 0), a safe centre (docs/math.md §6). λ and m come from
Aoyagi 2024, "Consideration on the learning efficiency of multiple-layered neural networks
with linear units", Neural Networks (see :func:`~pplpatterning.models.lambdas.dln_lambda`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pplpatterning.spec.model import Model

from ._validate import nonnegative_int, positive_float, positive_int
from .lambdas import dln_lambda
from .rrr import identity_block, matrix_regression_data

__all__ = ["dln", "dln_loss"]


def dln_loss(params, batch, consts, xp):
    """l_i = ||y_i - W_L···W_1 x_i||² / (2σ²), the layers ``W1``, ``W2``, ... applied in order."""
    h = batch["x"]
    layer = 1
    while f"W{layer}" in params:  # control flow on parameter names only, never on values
        h = h @ params[f"W{layer}"].T
        layer += 1
    resid = batch["y"] - h
    return xp.sum(resid * resid, axis=-1) / (2.0 * consts["sigma"] ** 2)


def dln(widths: Sequence[int] = (2, 3, 3, 2), r: int = 0, sigma: float = 1.0) -> Model:
    """Deep linear network with the given widths [input, hidden..., output] and true rank r.

    Default widths (2, 3, 3, 2), r = 0: λ = 2, m = 3 (docs/math.md §5). Requires at least two
    widths, all positive integers, and 0 ≤ r ≤ min(widths); σ > 0 is the noise scale.
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise ValueError(f"`widths` must be a sequence of positive integers, e.g. (2, 3, 3, 2); got {widths!r}.")
    widths = tuple(positive_int(h, f"widths[{i}]") for i, h in enumerate(widths))
    if len(widths) < 2:
        raise ValueError(f"`widths` needs at least 2 entries (input and output width), got {widths!r}.")
    r = nonnegative_int(r, "r")
    if r > min(widths):
        raise ValueError(f"`r` (true rank) must be ≤ min(widths) = {min(widths)}, got {r}.")
    sigma = positive_float(sigma, "sigma")
    lam, mult = dln_lambda(widths, r)
    shapes = {f"W{l + 1}": (widths[l + 1], widths[l]) for l in range(len(widths) - 1)}
    return Model(
        name="dln",
        loss=dln_loss,
        param_shapes=shapes,
        centre={name: identity_block(*shape, r) for name, shape in shapes.items()},
        consts={"sigma": sigma, "C_true": identity_block(widths[-1], widths[0], r)},
        data_generator=matrix_regression_data,
        lam=float(lam),
        multiplicity=mult,
        description=(
            f"deep linear network widths={list(widths)}, true rank r={r}, σ={sigma:g}; "
            "λ from Aoyagi 2024"
        ),
    )
