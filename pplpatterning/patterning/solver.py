"""The linear algebra of patterning's inverse problem (docs/math.md §4): from the matrix X of
susceptibilities and a desired change dμ to the weight change δ = α s.

:func:`~pplpatterning.patterning.pattern.pattern` builds the row-centred matrix X_c (k
targeted observables × N rows) and the scale κ (β = nβ/n per sample, nβ per probe); this
module solves κ X_c δ ≈ f dμ. All solvers are scale-free: ``ridge`` is relative to
σ_max(X_c)², the largest squared singular value.

- ``"min_norm"`` (ridge = 0): s = X_c⁺ dμ by SVD, singular values below ``rcond``·σ_max
  treated as zero (the rank is reported);
- ``"ridge"`` (ridge > 0): s = X_cᵀ (X_c X_cᵀ + ridge σ_max² I)⁻¹ dμ, which damps the
  directions of small singular value (noisy or nearly collinear rows of χ);
- ``"nonnegative"``: the weight change δ = α s itself solves the bounded ridge problem

      min_δ ||κ X_c δ - f dμ||² + ridge' σ_max(κ X_c)² ||δ||²
      s.t.  max(-c_j, -C) ≤ δ_j ≤ C,   Σ_j δ_j = 0

  (per sample: new weights c_j + δ_j ≥ 0, changes bounded by C = ``max_weight_change``
  if given; groups: 0 ≤ dh_k ≤ C, no sum constraint), with ridge' = ``ridge``, or
  :data:`TINY_RIDGE` when ``ridge`` is 0 (a negligible ridge makes the solution unique:
  among the weightings that reach the target it picks the one of least norm). It is
  solved exactly through its concave dual (k multipliers, the sum constraint's eliminated
  exactly) by semi-smooth Newton (:func:`bounded_ridge_lstsq`); α = f/κ and s = δ/α are
  reported so that ρ = c + α s still holds. The residual it had to accept is reported.

Step size α of the unbounded solvers: ``fraction`` f gives α = f/κ, ``max_weight_change``
c gives α = c / max_j |s_j|; the smaller wins, neither means f = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TINY_RIDGE", "Spectrum", "spectrum", "Step", "least_norm_step", "bounded_step", "bounded_ridge_lstsq"]

TINY_RIDGE = 1e-9
"""The relative ridge of the ``"nonnegative"`` solve when none is asked for: small enough
not to move the solution, large enough to make it unique (the least-norm one)."""


# ----------------------------------------------------------------------------- spectrum
@dataclass(frozen=True, eq=False)
class Spectrum:
    """The thin SVD X_c = U diag(S) Vt of the targeted rows, with the rank (singular values
    above ``rcond``·σ_max) and the condition number σ_max/σ_min (∞ when rank-deficient)."""

    U: np.ndarray
    S: np.ndarray
    Vt: np.ndarray
    rank: int
    condition: float


def spectrum(Xc: np.ndarray, rcond: float, names: list[str]) -> Spectrum:
    """The :class:`Spectrum` of ``Xc`` (k × N, rows = the targeted observables ``names``).

    Raises ``ValueError`` when X_c is zero: then no re-weighting moves the targets to first order.
    """
    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    if S.size == 0 or S[0] == 0:
        raise ValueError(f"χ is zero for the targeted observables {names}: no re-weighting changes them to first "
                         "order. Check the observables, or record more samples.")
    rank = int(np.sum(S > rcond * S[0]))
    condition = float(S[0] / S[-1]) if S[-1] > rcond * S[0] and len(S) == len(names) else math.inf
    return Spectrum(U=U, S=S, Vt=Vt, rank=rank, condition=condition)


# --------------------------------------------------------------------------------- steps
@dataclass(frozen=True, eq=False)
class Step:
    """A solved weight change: the solver ``mode``, the direction s, the change δ = α s, the
    step α and what fixed it, the ``requested`` change of the targets ((α κ) dμ or f dμ),
    the effective ``fraction`` of the target, and the ``ridge`` actually used."""

    mode: str
    direction: np.ndarray
    change: np.ndarray
    alpha: float
    alpha_source: str
    requested: np.ndarray
    fraction: float
    ridge: float


def least_norm_step(spec: Spectrum, dmu: np.ndarray, *, scale: float, fraction: float | None,
                    max_weight_change: float | None, ridge: float, rcond: float,
                    base: np.ndarray | None) -> Step:
    """The ``"min_norm"`` (ridge = 0) or ``"ridge"`` step (module docstring).

    ``base``: the current weights of the rows when they are per-sample weights (the new
    weights ``base + δ`` must stay ≥ 0, else ``ValueError`` naming the largest valid
    ``fraction``); ``None`` for probe mixtures.
    """
    U, S, Vt = spec.U, spec.S, spec.Vt
    if ridge > 0:
        inv = S / (S**2 + ridge * S[0] ** 2)
    else:
        inv = np.where(S > rcond * S[0], 1.0 / np.where(S > 0, S, 1.0), 0.0)
    s = Vt.T @ (inv * (U.T @ dmu))
    candidates = {}
    if fraction is not None or max_weight_change is None:
        candidates["fraction"] = (1.0 if fraction is None else fraction) / scale
    if max_weight_change is not None:
        candidates["max_weight_change"] = max_weight_change / float(np.max(np.abs(s)))
    source = min(candidates, key=candidates.get)
    alpha = candidates[source]
    delta = alpha * s
    if base is not None and np.any(base + delta < 0):
        neg = s < 0
        f_max = scale * float(np.min(base[neg] / -s[neg]))
        raise ValueError(
            f"The step α = {alpha:.4g} makes {int(np.sum(base + delta < 0))} weight(s) negative "
            f"(min {float(np.min(base + delta)):.3g}). Use fraction ≤ {f_max:.4g} (the largest step with "
            f"ρ ≥ 0), or max_weight_change < {float(np.min(base[neg])):.3g}, or nonnegative=True.")
    return Step(mode="ridge" if ridge > 0 else "min_norm", direction=s, change=delta, alpha=alpha,
                alpha_source=source, requested=alpha * scale * dmu, fraction=alpha * scale, ridge=ridge)


def bounded_step(Xc: np.ndarray, spec: Spectrum, dmu: np.ndarray, *, scale: float, fraction: float | None,
                 max_weight_change: float | None, ridge: float, base: np.ndarray | None) -> Step:
    """The ``"nonnegative"`` step (module docstring) through :func:`bounded_ridge_lstsq`.

    ``base``: the current weights of the rows when they are per-sample weights (bounds
    δ ≥ -base, Σ δ = 0); ``None`` for probe mixtures (dh ≥ 0, no sum constraint).
    """
    f_eff = 1.0 if fraction is None else fraction
    A = scale * Xc
    r = (ridge if ridge > 0 else TINY_RIDGE) * (scale * spec.S[0]) ** 2
    cap_v = math.inf if max_weight_change is None else max_weight_change
    N = Xc.shape[1]
    if base is not None:
        lo = np.maximum(-base, -cap_v)
        hi = np.full(N, cap_v)
    else:
        lo, hi = np.zeros(N), np.full(N, cap_v)
    delta = bounded_ridge_lstsq(A, f_eff * dmu, r, lo, hi, sum_zero=base is not None)
    alpha = f_eff / scale
    return Step(mode="nonnegative", direction=delta / alpha, change=delta, alpha=alpha, alpha_source="bounded solve",
                requested=f_eff * dmu, fraction=f_eff, ridge=ridge if ridge > 0 else TINY_RIDGE)


# ------------------------------------------------------------------ bounded ridge solve
def _zero_sum_multiplier(w: np.ndarray, r: float, lo: np.ndarray, hi: np.ndarray) -> float:
    """The μ with Σ_j clip(-(w_j + μ)/r, lo_j, hi_j) = 0 (exists since lo ≤ 0 ≤ hi).

    The sum is non-increasing and piecewise linear in μ with breakpoints -w_j - r lo_j and
    -w_j - r hi_j: a binary search over the sorted breakpoints finds the segment, where the
    equation is linear and solved exactly.
    """
    def phi(mu):
        return float(np.sum(np.clip(-(w + mu) / r, lo, hi)))

    bps = np.concatenate([-w - r * lo, -w - r * hi])
    bps = np.unique(bps[np.isfinite(bps)])
    edges = np.concatenate([[-np.inf], bps, [np.inf]])
    # phi(edges[i]) ≥ 0 ≥ phi(edges[i + 1]) for the segment [edges[i], edges[i + 1]]
    lo_i, hi_i = 0, edges.size - 1
    while hi_i - lo_i > 1:
        mid = (lo_i + hi_i) // 2
        if phi(edges[mid]) >= 0:
            lo_i = mid
        else:
            hi_i = mid
    left, right = edges[lo_i], edges[hi_i]
    if np.isfinite(left) and np.isfinite(right):
        inside = 0.5 * (left + right)
    elif np.isfinite(left):
        inside = left + 1.0 + abs(left)
    elif np.isfinite(right):
        inside = right - 1.0 - abs(right)
    else:
        inside = 0.0
    z = -(w + inside) / r
    free = (z > lo) & (z < hi)
    if not np.any(free):  # φ is constant (= 0) on the segment
        return float(left if np.isfinite(left) else right if np.isfinite(right) else 0.0)
    fixed = float(np.sum(np.where(z <= lo, lo, 0.0)) + np.sum(np.where(z >= hi, hi, 0.0)))
    return float((r * fixed - np.sum(w[free])) / np.count_nonzero(free))


def _dual(A: np.ndarray, t: np.ndarray, r: float, lo: np.ndarray, hi: np.ndarray, sum_zero: bool,
          nu: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """The dual g̃(ν), its gradient A δ - t - ν, the primal δ(ν) and Aᵀν + μ (see below)."""
    w = A.T @ nu
    mu = _zero_sum_multiplier(w, r, lo, hi) if sum_zero else 0.0
    wm = w + mu
    delta = np.clip(-wm / r, lo, hi)
    g = -0.5 * nu @ nu - nu @ t + float(np.sum(0.5 * r * delta * delta + wm * delta))
    return g, A @ delta - t - nu, delta, wm


def bounded_ridge_lstsq(A: np.ndarray, t: np.ndarray, r: float, lo: np.ndarray, hi: np.ndarray, *,
                        sum_zero: bool, tol: float = 1e-12, max_iter: int = 200) -> np.ndarray:
    """argmin_δ ½||A δ - t||² + ½ r ||δ||²  s.t.  lo ≤ δ ≤ hi  (and Σ δ = 0 if ``sum_zero``).

    ``A`` is (k, N) with k small, r > 0, and 0 must be feasible (lo ≤ 0 ≤ hi; ±inf allowed).
    Solved exactly through the concave dual. With multipliers ν ∈ R^k for the residual and
    μ for Σ δ = 0, the Lagrangian's minimiser over the box is

        δ(ν, μ) = clip(-(Aᵀν + μ 1)/r, lo, hi),

    and the dual g(ν, μ) = -½||ν||² - νᵀt + Σ_j (½ r δ_j² + (Aᵀν + μ)_j δ_j) is concave and
    C¹ with ∇_ν g = A δ - t - ν, ∇_μ g = Σ_j δ_j. μ is eliminated exactly for each ν
    (Σ_j δ_j = 0 is a monotone piecewise-linear equation, :func:`_zero_sum_multiplier`),
    leaving the concave g̃(ν) = max_μ g, maximised by semi-smooth Newton with Armijo
    backtracking; its generalized Hessian on the free coordinates F is
    -I - A_F (I - 11ᵀ/|F|) A_Fᵀ / r (without the projection when there is no sum
    constraint), never singular. At the optimum ν = A δ - t is the residual.
    O(k N + N log N) per iteration.
    """
    A = np.asarray(A, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    k, N = A.shape
    if not r > 0:
        raise ValueError("bounded_ridge_lstsq needs a ridge r > 0.")
    if lo.shape != (N,) or hi.shape != (N,) or np.any(lo > 0) or np.any(hi < 0):
        raise ValueError("bounded_ridge_lstsq needs bounds of shape (N,) with 0 feasible (lo ≤ 0 ≤ hi).")
    scale_t = max(float(np.linalg.norm(t)), 1e-300)
    nu = np.zeros(k)
    g, grad, delta, wm = _dual(A, t, r, lo, hi, sum_zero, nu)
    for _ in range(max_iter):
        if np.linalg.norm(grad) <= tol * scale_t:
            break
        z = -wm / r
        free = (z > lo) & (z < hi)
        Af = A[:, free]
        if sum_zero and Af.shape[1]:
            Af = Af - Af.mean(axis=1, keepdims=True)
        H = -np.eye(k) - (Af @ Af.T) / r
        step = -np.linalg.solve(H, grad)
        slope = float(grad @ step)
        size = 1.0
        while True:
            g_new, grad_new, delta_new, wm_new = _dual(A, t, r, lo, hi, sum_zero, nu + size * step)
            if g_new >= g + 1e-4 * size * slope:
                break
            size *= 0.5
            if size < 1e-14:
                break
        if size < 1e-14:
            break
        nu, g, grad, delta, wm = nu + size * step, g_new, grad_new, delta_new, wm_new
    if sum_zero:  # 1/r amplifies round-off in Aᵀν + μ on free coordinates: restore Σ δ = 0 there
        z = -wm / r
        free = (z > lo) & (z < hi)
        if np.any(free):
            delta[free] = np.clip(delta[free] - float(np.sum(delta)) / np.count_nonzero(free), lo[free], hi[free])
    return delta
