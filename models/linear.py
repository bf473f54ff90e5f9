"""The regular model: linear regression y = wᵀx + N(0, σ²), x ~ N(0, I_d).

Per-sample loss l_i(w) = (y_i - wᵀx_i)² / (2σ²). It is regular: λ = d/2, m = 1 at every
centre (Watanabe 2009, §1.4 and §6).

Parameter layout: one vector ``w`` of shape (d,), or with ``split=s`` two vectors
``u`` (the first s coordinates) and ``v`` (the other d - s), so that weight-restricted
posteriors (sample v, freeze u at u*) can be tested against an exact answer.

Exact finite-nβ target (docs/math.md §6–7). L_n^ρ(w) = (1/n) Σ c ρ_i l_i is quadratic with
Hessian H = Xᵀ diag(cρ) X / (nσ²). Expanding at the centre w*, with gradient
g = ∇L_n^ρ(w*) = -Xᵀ diag(cρ)(y - Xw*)/(nσ²) restricted to the sampled coordinates S,
the posterior over w_S is N(m, Σ) with Σ = (nβ H_SS + γI)⁻¹ and m - w*_S = -nβ Σ g_S, so

    E[λ̂] = nβ ( ½ tr(H_SS Σ) + g_Sᵀ(m - w*_S) + ½ (m - w*_S)ᵀ H_SS (m - w*_S) )

with nβ·tr(H_SS Σ) = |S| - γ tr Σ exactly. This equals the form in the brief,
nβ(½tr(HΣ) + ½(m-ŵ)ᵀH(m-ŵ) + L(ŵ) - L(w*)) with ŵ the weighted least-squares minimiser,
but needs no ŵ (so it also holds when H is singular and γ > 0). With γ = 0 and
w* = ŵ it is |S|/2 exactly, for every nβ.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from pplpatterning.spec.model import Model

from ._validate import finite_vector, positive_float, positive_int, split_point
from .lambdas import regular_lambda

__all__ = ["regular", "linear_loss", "linear_data", "least_squares_centre", "linear_target"]


def _weights_vector(params, xp):
    if "w" in params:
        return params["w"]
    return xp.concat([params["u"], params["v"]], axis=-1)


def linear_loss(params, batch, consts, xp):
    """l_i = (y_i - wᵀx_i)² / (2σ²); w = params["w"] or concat(params["u"], params["v"]).

    Parameters with leading grid axes, shape (G, 1, d), give losses of shape (G, n) (the
    quadrature in :mod:`._quad2d` evaluates a whole grid in one call); the branch is on the
    static number of dimensions, never on values.
    """
    w = _weights_vector(params, xp)
    pred = batch["x"] @ w if w.ndim == 1 else xp.sum(batch["x"] * w, axis=-1)
    resid = batch["y"] - pred
    return resid * resid / (2.0 * consts["sigma"] ** 2)


def linear_data(n, rng, consts):
    """x ~ N(0, I_d), y = w_trueᵀx + σ ε with ε ~ N(0, 1)."""
    w_true = np.asarray(consts["w_true"], dtype=np.float64)
    x = rng.standard_normal((n, w_true.shape[0]))
    y = x @ w_true + float(consts["sigma"]) * rng.standard_normal(n)
    return {"x": x, "y": y}


def _layout(d: int, split: int | None) -> dict[str, slice]:
    if split is None:
        return {"w": slice(0, d)}
    return {"u": slice(0, split), "v": slice(split, d)}


def _split_layout(consts) -> dict[str, slice]:
    d = int(consts["w_true"].shape[0])
    s = int(consts["split"])
    return _layout(d, s if s > 0 else None)


def least_squares_centre(data, consts):
    """The unweighted least-squares estimate ŵ (the exact minimiser of L_n), in the model's layout."""
    x = np.asarray(data["x"], dtype=np.float64)
    y = np.asarray(data["y"], dtype=np.float64)
    w_hat = np.linalg.lstsq(x, y, rcond=None)[0]
    return {name: w_hat[sl].copy() for name, sl in _split_layout(consts).items()}


def linear_target(posterior):
    """Exact E[λ̂] for the Gaussian posterior of the linear model (see the module docstring).

    Handles any centre, γ ≥ 0, data weights and weight restriction. Returns None when the
    posterior is improper (γ = 0 and H restricted to the sampled coordinates is singular).
    """
    model = posterior.model
    consts = model.consts
    layout = _split_layout(consts)
    sigma2 = float(consts["sigma"]) ** 2
    x = np.asarray(posterior.data["x"], dtype=np.float64)
    y = np.asarray(posterior.data["y"], dtype=np.float64)
    c = np.asarray(posterior.effective_weights, dtype=np.float64)
    n, d = x.shape
    w_star = np.empty(d)
    for name, sl in layout.items():
        w_star[sl] = posterior.centre[name]
    idx = np.concatenate([np.arange(d)[layout[name]] for name in posterior.sampled])
    hess = (x.T @ (c[:, None] * x)) / (n * sigma2)
    grad = -(x.T @ (c * (y - x @ w_star))) / (n * sigma2)
    h_s = hess[np.ix_(idx, idx)]
    g_s = grad[idx]
    nb, gamma = float(posterior.n_beta), float(posterior.gamma)
    precision = nb * h_s + gamma * np.eye(idx.size)
    try:
        chol = linalg.cho_factor(precision, lower=True)
    except linalg.LinAlgError:
        return None
    if gamma == 0.0 and np.linalg.cond(precision) > 1e12:
        return None
    cov = linalg.cho_solve(chol, np.eye(idx.size))
    shift = -nb * linalg.cho_solve(chol, g_s)  # m - w*_S
    trace_term = 0.5 * (idx.size - gamma * float(np.trace(cov)))  # = ½ nβ tr(H_SS Σ)
    mean_term = nb * (float(g_s @ shift) + 0.5 * float(shift @ h_s @ shift))
    return float(trace_term + mean_term)


def regular(d: int = 2, sigma: float = 1.0, w_true=None, split: int | None = None) -> Model:
    """Linear regression with d parameters (λ = d/2, m = 1).

    Parameters
    ----------
    d
        Number of parameters (input dimension), positive integer. Default 2.
    sigma
        Noise standard deviation σ > 0. Default 1.
    w_true
        True weight vector (length d); default zeros. It is the default centre.
    split
        None (one parameter ``w``) or 1 ≤ split ≤ d-1: parameters ``u`` = first ``split``
        coordinates and ``v`` = the rest.

    The data-dependent centre (``centre_fn``) is the unweighted least-squares estimate.
    """
    d = positive_int(d, "d")
    sigma = positive_float(sigma, "sigma")
    w_true = np.zeros(d) if w_true is None else finite_vector(w_true, "w_true", d)
    split = split_point(split, d)
    layout = _layout(d, split)
    lam, mult = regular_lambda(d)
    return Model(
        name="regular",
        loss=linear_loss,
        param_shapes={name: (sl.stop - sl.start,) for name, sl in layout.items()},
        centre={name: w_true[sl] for name, sl in layout.items()},
        consts={"sigma": sigma, "w_true": w_true, "split": 0.0 if split is None else float(split)},
        data_generator=linear_data,
        lam=float(lam),
        multiplicity=mult,
        centre_fn=least_squares_centre,
        target_fn=linear_target,
        description=f"linear regression y = wᵀx + N(0, σ²), d={d}, σ={sigma:g}, x ~ N(0, I); λ = d/2",
    )
