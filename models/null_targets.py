"""Null data, and the exact finite-nβ target of reduced-rank regression on them (docs/math.md §6).

*Null data* (:func:`null_data`) make the centre w* = 0 the exact minimiser of the empirical
loss: n/2 inputs from the model's generator, each used twice, with noise y_i and -y_i, so
that Σ_i y_i g(x_i) = 0 for every function g; with a linear first layer x is also whitened,
(1/n) Σ x xᵀ = I. For a model with Gaussian noise around f_w(x) (σ = 1) this gives

    L_n(w) - L_n(0) = (1/2n) Σ_i ‖f_w(x_i)‖²,

and for RRR and DLN L_n(A, B) - L_n(0) = ½‖BA‖²_F, the population K(w), exactly. The data
term of E[λ̂] (-nβ (L_n(w*) - min L_n), docs/math.md §6) is then zero and E[λ̂] does not
depend on n.

*The RRR target* (:func:`rrr_null_target`, :func:`rrr_side_integral`): for reduced-rank
regression with true rank r = 0 on whitened null data, E[λ̂] is an integral over the at most
two singular values of one factor, with B (or A) integrated out as a Gaussian given the
other and the singular-value density of a Gaussian matrix from Edelman 1989, "Eigenvalues
and condition numbers of random matrices", SIAM J. Matrix Anal. Appl. 9(4); the formula is
in :func:`rrr_null_target`.

Used by validation/run_validation.py as the reference target of its RRR null-data case;
checked there against NUTS (validation/settings.py) and, for (M, N, H) = (1, 1, 1), against
the product model's own quadrature target (tests/test_validation_quick.py).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["null_data", "rrr_null_target", "rrr_side_integral"]


def null_data(model, n: int, seed: int, *, whiten: bool = True) -> dict[str, np.ndarray]:
    """Data with truth f = 0 whose empirical loss has its exact minimum at w* = 0.

    Draws n/2 points from the model's generator and uses each x_i twice, with noise y_i and
    -y_i: then Σ_i y_i g(x_i) = 0 for every function g, so for a model with Gaussian noise
    around f_w(x), L_n(w) - L_n(0) = (1/2n) Σ_i ‖f_w(x_i)‖² ≥ 0 (σ = 1). With ``whiten``
    and a linear first layer, x is also whitened, (1/n) Σ x xᵀ = I, so that for RRR and
    DLN L_n(w) - L_n(0) = ½‖W_L···W_1‖²_F, the population K(w), exactly.
    Needs a model whose truth is the zero function (rrr/dln with r = 0, product,
    normal_crossing, tanh) and data keys ``x`` and ``y``.
    """
    if n < 2 or n % 2:
        raise ValueError(f"`n` must be an even number ≥ 2 for null data, got {n}.")
    base = model.generate(n // 2, seed=seed)
    if set(base) != {"x", "y"}:
        raise ValueError(f"null data needs a regression model with data keys x, y; {model.name!r} has {sorted(base)}.")
    c_true = model.consts.get("C_true")
    if c_true is not None and np.any(np.asarray(c_true) != 0):
        raise ValueError(f"null data needs a model whose truth is zero; {model.name!r} has true rank r > 0.")
    x = np.concatenate([base["x"], base["x"]])
    y = np.concatenate([base["y"], -base["y"]])
    if whiten:
        x2 = x.reshape(n, -1)
        chol = np.linalg.cholesky(x2.T @ x2 / n)
        x = np.linalg.solve(chol, x2.T).T.reshape(x.shape)
    return {"x": x, "y": y}


def rrr_null_target(M: int, N: int, H: int, n_beta: float, gamma: float, grid: int = 1201) -> float | None:
    """Exact E[λ̂] for reduced-rank regression with r = 0 on whitened null data.

    There L_n(A, B) - L_n(0) = ½‖BA‖²_F. Given A (H×M), each of the N rows of B is Gaussian
    with precision nβ AAᵀ + γI, so with σ_i² the eigenvalues of AAᵀ

        E[λ̂ | A] = (N/2) Σ_i nβσ_i² / (nβσ_i² + γ),
        p(A) ∝ exp(-γ‖A‖²/2) Π_i (nβσ_i² + γ)^(-N/2),

    and the p = min(H, M) singular values of a Gaussian H×M matrix have density
    ∝ Π_{i<j} |σ_i² - σ_j²| Π_i σ_i^{|H-M|} (Edelman 1989). The same holds with the roles
    of A and B (M ↔ N) exchanged; a side with p ≤ 2 is integrated on a log grid
    (:func:`rrr_side_integral`). Returns None when γ = 0 (improper) or both sides have p > 2.
    Checked against NUTS (validation/settings.py) and against the product model's own
    quadrature target for (M, N, H) = (1, 1, 1) (tests/test_validation_quick.py).
    """
    if gamma <= 0:
        return None
    sides = [(min(H, M), max(H, M), N), (min(H, N), max(H, N), M)]
    sides = [side for side in sides if side[0] <= 2]
    if not sides:
        return None
    return rrr_side_integral(*min(sides), n_beta=n_beta, gamma=gamma, grid=grid)


def rrr_side_integral(p: int, q: int, out: int, *, n_beta: float, gamma: float, grid: int = 1201) -> float:
    """E[(out/2) Σ_i nβσ_i²/(nβσ_i² + γ)] over the p ≤ 2 singular values σ_i of a q×p factor.

    The density of the σ_i (log grid x = log σ, dσ = σ dx) is
    Π_{i<j}|σ_i² - σ_j²| Π_i σ_i^{q-p} exp(-γσ_i²/2) (nβσ_i² + γ)^(-out/2); see :func:`rrr_null_target`.
    The grid runs over log σ from ½ log(γ/nβ) - 12 to ½ log(80/γ) + 1 with ``grid`` points
    (the Riemann sum on a log grid: its weights are the density times σ).
    """
    if p not in (1, 2):
        raise ValueError(f"`p` must be 1 or 2 singular values, got {p}.")
    s, g = float(n_beta), float(gamma)
    lo = 0.5 * math.log(g / s) - 12.0
    hi = 0.5 * math.log(80.0 / g) + 1.0
    sig2 = np.exp(2 * np.linspace(lo, hi, grid))
    log_w = (q - p + 1) * 0.5 * np.log(sig2) - g * sig2 / 2 - 0.5 * out * np.log(s * sig2 + g)
    f1 = s * sig2 / (s * sig2 + g)
    if p == 1:
        w = np.exp(log_w - log_w.max())
        return float(out / 2 * np.sum(w * f1) / np.sum(w))
    lw = log_w[:, None] + log_w[None, :] + np.log(np.abs(sig2[:, None] - sig2[None, :]) + 1e-300)
    w = np.exp(lw - lw.max())
    return float(out / 2 * np.sum(w * (f1[:, None] + f1[None, :])) / np.sum(w))
