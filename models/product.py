"""The product model y = a·b·x + N(0, σ²), x ~ N(0, 1), truth a·b = 0.

The normal crossing with k = (1, 1) and two scalar parameters ``a`` and ``b`` (shape ()),
so that each can be sampled or frozen on its own. Per-sample loss
l_i = (y_i - a b x_i)² / (2σ²); K(a, b) = a² b² / (2σ²), hence at the centre (0, 0)
λ = 1/2 and m = 2 (Watanabe 2009, Ch. 2; docs/math.md §5).

The exact finite-nβ target is :func:`~pplpatterning.models.normal_crossing.crossing_target`
with k = (1, 1): with both parameters sampled it needs γ > 0 (the posterior is improper
otherwise) and is one Gaussian integral inside a 1-D quadrature; with one parameter sampled
it is a Gaussian closed form.
"""

from __future__ import annotations

import numpy as np

from pplpatterning.spec.model import Model

from ._validate import positive_float
from .lambdas import normal_crossing_lambda
from .normal_crossing import crossing_data, crossing_target

__all__ = ["product", "product_loss"]


def product_loss(params, batch, consts, xp):
    """l_i = (y_i - a b x_i)² / (2σ²)."""
    resid = batch["y"] - params["a"] * params["b"] * batch["x"]
    return resid * resid / (2.0 * consts["sigma"] ** 2)


def _product_target(posterior):
    consts = posterior.model.consts
    return crossing_target(
        k=(1, 1),
        centre=(float(posterior.centre["a"]), float(posterior.centre["b"])),
        sampled=("a" in posterior.sampled, "b" in posterior.sampled),
        data=posterior.data, weights=posterior.effective_weights, sigma=float(consts["sigma"]),
        n_beta=posterior.n_beta, gamma=posterior.gamma,
    )


def product(sigma: float = 1.0) -> Model:
    """y = a·b·x + N(0, σ²), x ~ N(0, 1); scalar parameters ``a``, ``b`` (shape ()), centre 0.

    Parameters
    ----------
    sigma
        Noise standard deviation σ > 0. Default 1.
    """
    sigma = positive_float(sigma, "sigma")
    lam, mult = normal_crossing_lambda((1, 1))
    return Model(
        name="product",
        loss=product_loss,
        param_shapes={"a": (), "b": ()},
        centre={"a": np.zeros(()), "b": np.zeros(())},
        consts={"sigma": sigma},
        data_generator=crossing_data,
        lam=float(lam),
        multiplicity=mult,
        target_fn=_product_target,
        description=f"product y = a·b·x + N(0, σ²), σ={sigma:g}, x ~ N(0, 1); λ = 1/2, m = 2",
    )
