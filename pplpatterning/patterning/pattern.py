"""Patterning: invert susceptibilities into a data re-weighting (MATH.md §4).

Susceptibilities read how the posterior's observables respond to the data; patterning
writes: given a desired change dμ of the expectations of k observables, find the data
re-weighting that produces it to first order (Murfet & Wang 2026, "Patterning: the dual of
interpretability", arXiv 2601.13548: "dh = χ⁺ dμ"; Wang, Donoway & Murfet 2026,
"Patterning in practice").

Per-sample level. Row a of X (k × N) holds the per-sample susceptibilities χ_{z_j}(φ_a) =
-Cov(φ_a, l_j - L^c) of :func:`~pplpatterning.estimators.susceptibility.attribution`, at a posterior
with effective weights c (1 when unweighted). Changing the weights to c + δ changes
nβ L^c by β Σ_j δ_j l_j (β = nβ/n), and linear response gives

    ΔE[φ_a] = β Σ_j δ_j χ_{z_j}(φ_a) - β (Σ_j δ_j) Cov(φ_a, L^c) + O(δ²),

so with Σ_j δ_j = 0 the first-order change is exactly β X δ. We write δ = α s:

    s = X_c⁺ dμ                      (minimum norm; least squares outside the range)
    ρ_j = c_j + α s_j                (new weights; 1 + α s_j for an unweighted posterior)
    predicted Δμ = α β X s           (= α β dμ when dμ is in the range of X)

with X_c = X (I - 11ᵀ/N) the row-centred matrix. The centring imposes Σ s = 0; for the
equal-weight estimator X 1 = 0 already (MATH.md §3), so X_c = X and s = X⁺ dμ is the
textbook minimum-norm solution, whose Σ s_j = 0 holds automatically.

Group level. With χ from :func:`~pplpatterning.estimators.susceptibility.susceptibility` over probe data
sets q'_k (rows = probes), mixing the data toward the probes, q_h = (1 - Σ_k h_k) q + Σ_k h_k q'_k,
changes E[φ] by nβ χ h to first order, so

    dh = χ⁺ dμ / nβ,   i.e. s = χ⁺ dμ, dh = α s, predicted Δμ = α nβ χ s.

Both levels share one solver with the scale κ = β (samples) or κ = nβ (groups); a
per-sample probe δ_z is the group h_z = δ_z / n.

Step size α. ``fraction`` f asks for the fraction f of the target: α = f/κ (predicted
Δμ = f dμ when dμ is in range). ``max_weight_change`` c caps the largest weight change:
α = c / max_j |s_j| (groups: the largest |dh_k|). Given both, the smaller α wins; given
neither, f = 1. The prediction is first order: keep α small enough for linear response,
and check with :func:`~pplpatterning.patterning.verify.verify`.

Solvers (all scale-free: ``ridge`` is relative to σ_max(X_c)², the largest squared
singular value):

- ``"min_norm"`` (ridge = 0): s = X_c⁺ dμ by SVD, singular values below ``rcond``·σ_max
  treated as zero (the rank is reported);
- ``"ridge"`` (ridge > 0): s = X_cᵀ (X_c X_cᵀ + ridge σ_max² I)⁻¹ dμ, which damps the
  directions of small singular value (noisy or nearly collinear rows of χ);
- ``"nonnegative"``: the weight change δ = α s itself solves the bounded ridge problem

      min_δ ||κ X_c δ - f dμ||² + ridge' σ_max(κ X_c)² ||δ||²
      s.t.  max(-c_j, -C) ≤ δ_j ≤ C,   Σ_j δ_j = 0

  (per sample: new weights c_j + δ_j ≥ 0, changes bounded by C = ``max_weight_change``
  if given; groups: 0 ≤ dh_k ≤ C, no sum constraint), with ridge' = ``ridge``, or 1e-9
  when ``ridge`` is 0 (a negligible ridge makes the solution unique: among the weightings
  that reach the target it picks the one of least norm). It is solved exactly through
  its concave dual (k multipliers, the sum constraint's eliminated exactly) by
  semi-smooth Newton (:func:`bounded_ridge_lstsq`);
  α = f/κ and s = δ/α are reported so that ρ = c + α s still holds. The residual it had
  to accept is reported.

The result is a :class:`PatternPlan`: weights, the predicted first-order change of every
observable in χ (targeted or not: the side effects), the residual of the targeted ones, and
the singular values, rank and condition number of X_c.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["pattern", "PatternPlan", "bounded_ridge_lstsq", "check_pattern_options", "verify", "Verification"]

_TINY_RIDGE = 1e-9


# ----------------------------------------------------------------------------- checks
def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"`{name}` must be a finite positive number, got {value!r}.")
    return float(value)


def check_pattern_options(target: Any, *, fraction: Any = None, max_weight_change: Any = None, ridge: Any = 0.0,
                          rcond: Any = 1e-12) -> tuple[dict[str, float], float | None, float | None, float, float]:
    """Validate :func:`pattern`'s options (cheap; the CLI calls it before sampling).

    Returns ``(target, fraction, max_weight_change, ridge, rcond)`` with the target as
    ``{observable: float}``.
    """
    if isinstance(target, (pd.Series, xr.DataArray)):
        target = {str(k): v for k, v in zip(target.index if isinstance(target, pd.Series)
                                            else target["observable"].values, np.asarray(target).tolist())}
    if not isinstance(target, Mapping) or not target:
        raise TypeError("`target` must be a non-empty mapping {observable name: desired change dμ}, "
                        "e.g. {'loss': -0.01}.")
    out = {}
    for name, value in target.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(value)):
            raise ValueError(f"`target[{name!r}]` must be a finite number (the desired change of E[{name}]), "
                             f"got {value!r}.")
        out[str(name)] = float(value)
    if all(v == 0.0 for v in out.values()):
        raise ValueError("`target` asks for no change (every dμ is 0); give at least one non-zero change.")
    f = None if fraction is None else _positive(fraction, "fraction")
    c = None if max_weight_change is None else _positive(max_weight_change, "max_weight_change")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(ridge)) or float(ridge) < 0:
        raise ValueError(f"`ridge` must be a finite number ≥ 0 (relative to σ_max(X)²), got {ridge!r}.")
    rc = _positive(rcond, "rcond")
    if rc >= 1:
        raise ValueError(f"`rcond` must be below 1 (singular values under rcond·σ_max count as zero), got {rcond!r}.")
    return out, f, c, float(ridge), rc


# ------------------------------------------------------------------ bounded ridge solve
def _mu_star(w: np.ndarray, r: float, lo: np.ndarray, hi: np.ndarray) -> float:
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


def bounded_ridge_lstsq(A: np.ndarray, t: np.ndarray, r: float, lo: np.ndarray, hi: np.ndarray, *,
                        sum_zero: bool, tol: float = 1e-12, max_iter: int = 200) -> np.ndarray:
    """argmin_δ ½||A δ - t||² + ½ r ||δ||²  s.t.  lo ≤ δ ≤ hi  (and Σ δ = 0 if ``sum_zero``).

    ``A`` is (k, N) with k small, r > 0, and 0 must be feasible (lo ≤ 0 ≤ hi; ±inf allowed).
    Solved exactly through the concave dual. With multipliers ν ∈ R^k for the residual and
    μ for Σ δ = 0, the Lagrangian's minimiser over the box is

        δ(ν, μ) = clip(-(Aᵀν + μ 1)/r, lo, hi),

    and the dual g(ν, μ) = -½||ν||² - νᵀt + Σ_j (½ r δ_j² + (Aᵀν + μ)_j δ_j) is concave and
    C¹ with ∇_ν g = A δ - t - ν, ∇_μ g = Σ_j δ_j. μ is eliminated exactly for each ν
    (Σ_j δ_j = 0 is a monotone piecewise-linear equation, :func:`_mu_star`), leaving the
    concave g̃(ν) = max_μ g, maximised by semi-smooth Newton with Armijo backtracking; its
    generalized Hessian on the free coordinates F is -I - A_F (I - 11ᵀ/|F|) A_Fᵀ / r
    (without the projection when there is no sum constraint), never singular. At the
    optimum ν = A δ - t is the residual. O(k N + N log N) per iteration.
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

    def parts(nu):
        w = A.T @ nu
        mu = _mu_star(w, r, lo, hi) if sum_zero else 0.0
        wm = w + mu
        delta = np.clip(-wm / r, lo, hi)
        g = -0.5 * nu @ nu - nu @ t + float(np.sum(0.5 * r * delta * delta + wm * delta))
        return g, A @ delta - t - nu, delta, wm

    nu = np.zeros(k)
    g, grad, delta, wm = parts(nu)
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
            g_new, grad_new, delta_new, wm_new = parts(nu + size * step)
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


# ------------------------------------------------------------------------------ result
@dataclass(frozen=True, eq=False)
class PatternPlan:
    """A data re-weighting found by :func:`pattern`, with its first-order prediction.

    Attributes
    ----------
    level
        ``"sample"`` (per-sample weights) or ``"group"`` (mixture weights dh over probes).
    mode
        ``"min_norm"``, ``"ridge"`` or ``"nonnegative"`` (see the module docstring).
    target
        The requested change dμ, dims (observable,), targeted observables only.
    requested
        The part of the target the step aims at, (α κ) dμ (min_norm/ridge) or f dμ
        (nonnegative): the target times :attr:`fraction`.
    predicted
        The first-order change α κ X s of every observable in χ, dims (observable,),
        targeted or not (the side effects).
    residual
        ``predicted - requested`` on the targeted observables.
    direction, change
        s and the applied change δ = α s, dims (row,) with row = ``sample`` (training
        indices) or ``probe``.
    weights
        Per-sample level: the new effective weights of all n training samples, c + δ
        (unrecorded samples unchanged), a float64 array for
        ``posterior.with_(weights=plan.weights)``. Group level: the per-sample weights
        (1 - Σh) c + Σ_k h_k (n/|S_k|) 1_{S_k} when the probes are training rows given
        as ``groups``; else ``None`` (use :meth:`apply` with the probe data sets).
    alpha, alpha_source, fraction
        The step α, what fixed it ("fraction", "max_weight_change" or "bounded solve"),
        and the effective fraction α κ (nonnegative: the requested f).
    scale
        κ = β = nβ/n (samples) or nβ (groups).
    singular_values, rank, condition
        Of X_c (targeted rows; rank with the ``rcond`` cut-off; condition σ_max/σ_min,
        ∞ when rank-deficient).
    """

    level: str
    mode: str
    target: xr.DataArray
    requested: xr.DataArray
    predicted: xr.DataArray
    residual: xr.DataArray
    direction: xr.DataArray
    change: xr.DataArray
    weights: np.ndarray | None
    alpha: float
    alpha_source: str
    fraction: float
    scale: float
    n_beta: float
    n: int | None
    ridge: float
    singular_values: np.ndarray
    rank: int
    condition: float
    base_weights: np.ndarray | None = None
    groups: Mapping[str, np.ndarray] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ derived
    @property
    def observables(self) -> tuple[str, ...]:
        """The targeted observables."""
        return tuple(str(o) for o in self.target["observable"].values)

    @property
    def row_dim(self) -> str:
        return "sample" if self.level == "sample" else "probe"

    @property
    def residual_norm(self) -> float:
        """||predicted - requested|| over the targeted observables."""
        return float(np.linalg.norm(self.residual.values))

    @property
    def relative_residual(self) -> float:
        """||predicted - requested|| / ||requested||."""
        norm = float(np.linalg.norm(self.requested.values))
        return self.residual_norm / norm if norm > 0 else math.inf

    @property
    def table(self) -> pd.DataFrame:
        """One row per observable: target, requested, predicted, residual, targeted."""
        obs = [str(o) for o in self.predicted["observable"].values]
        tgt = dict(zip(self.observables, self.target.values.tolist()))
        req = dict(zip(self.observables, self.requested.values.tolist()))
        res = dict(zip(self.observables, self.residual.values.tolist()))
        return pd.DataFrame({
            "observable": obs,
            "target": [tgt.get(o, np.nan) for o in obs],
            "requested": [req.get(o, np.nan) for o in obs],
            "predicted": self.predicted.values,
            "residual": [res.get(o, np.nan) for o in obs],
            "targeted": [o in tgt for o in obs],
        }).set_index("observable")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (without the per-row arrays)."""
        out = {
            "level": self.level, "mode": self.mode, "alpha": self.alpha, "alpha_source": self.alpha_source,
            "fraction": self.fraction, "scale": self.scale, "n_beta": self.n_beta, "n": self.n, "ridge": self.ridge,
            "rank": self.rank, "condition": self.condition, "singular_values": self.singular_values.tolist(),
            "residual_norm": self.residual_norm, "relative_residual": self.relative_residual,
            "sum_change": float(self.change.sum()),
            "table": self.table.reset_index().to_dict(orient="records"),
        }
        if self.weights is not None:
            w = self.weights
            out["weights"] = {"min": float(w.min()), "max": float(w.max()), "mean": float(w.mean()),
                              "max_abs_change": float(np.max(np.abs(self.change.values))),
                              "changed": int(np.count_nonzero(self.change.values))}
        return out

    def apply(self, posterior, datasets: Mapping[str, Mapping[str, Any]] | None = None):
        """The re-weighted :class:`~pplpatterning.GibbsPosterior` (nβ, centre and γ unchanged).

        Per-sample plans and group plans built with ``groups``: ``posterior.with_(weights=...)``.
        Group plans over external probe data sets: pass ``datasets`` ({probe: data}, the
        ones χ was measured with); the data become the training data followed by every
        probe's samples, with raw weights N(1 - Σh)c_i/n on training samples and
        N h_k/m_k on probe k's m_k samples (N the new total), so that
        L^ρ = (1 - Σh) L_q^c + Σ_k h_k L_{q'_k} exactly.
        """
        from pplpatterning.spec.posterior import GibbsPosterior

        if not isinstance(posterior, GibbsPosterior):
            raise TypeError(f"`posterior` must be a GibbsPosterior, got {type(posterior).__name__}.")
        if self.n is not None and posterior.n != self.n:
            raise ValueError(f"The plan is for n = {self.n} training samples; the posterior has n = {posterior.n}. "
                             "Apply it to the posterior whose trace gave χ (or pass pattern(..., n=posterior.n)).")
        if self.weights is not None:
            base = np.asarray(posterior.effective_weights, dtype=np.float64)
            if self.base_weights is not None and not np.allclose(base, self.base_weights, rtol=1e-9, atol=1e-12):
                raise ValueError("The posterior's effective weights differ from those the plan was computed at; "
                                 "apply the plan to the posterior whose trace gave χ.")
            return posterior.with_(weights=self.weights)
        if datasets is None:
            raise ValueError("This group-level plan mixes in external probe data sets: pass `datasets` "
                             "({probe name: data}), or build the plan with `groups` (probe → training rows).")
        missing = [p for p in self.change["probe"].values if p not in datasets]
        if missing:
            raise ValueError(f"`datasets` lacks the probes {missing} of the plan.")
        h = {str(p): float(v) for p, v in zip(self.change["probe"].values, self.change.values)}
        total_h = sum(h.values())
        if total_h > 1 or any(v < 0 for v in h.values()):
            raise ValueError(f"Mixture weights dh = {h} need dh_k ≥ 0 (probe data can only be added) and "
                             f"Σ dh ≤ 1 (got {total_h:.4g}); use nonnegative=True or a smaller fraction.")
        names = [p for p, v in h.items() if v > 0]
        sizes = {p: int(np.asarray(next(iter(datasets[p].values()))).shape[0]) for p in names}
        N = posterior.n + sum(sizes.values())
        data = {k: np.concatenate([np.asarray(posterior.data[k])]
                                  + [np.asarray(datasets[p][k]) for p in names], axis=0)
                for k in posterior.data}
        w = [N * (1.0 - total_h) * np.asarray(posterior.effective_weights) / posterior.n]
        w += [np.full(sizes[p], N * h[p] / sizes[p]) for p in names]
        return posterior.with_(data=data, weights=np.concatenate(w), normalize_weights=False,
                               n_beta=float(posterior.n_beta))

    def __str__(self) -> str:
        kind = "per-sample weights" if self.level == "sample" else "probe mixture weights dh"
        scale = "β = nβ/n" if self.level == "sample" else "nβ"
        n_txt = f"n = {self.n}, " if self.n is not None else ""
        lines = [f"Patterning plan ({kind}; {n_txt}nβ = {self.n_beta:.5g}, κ = {scale} = {self.scale:.5g}; "
                 f"mode {self.mode}{f', ridge {self.ridge:g}' if self.ridge else ''})"]
        sv = ", ".join(f"{v:.3g}" for v in self.singular_values)
        lines.append(f"  X: {len(self.observables)} targeted observable(s) × {self.change.sizes[self.row_dim]} "
                     f"{self.row_dim}s, rank {self.rank}, condition {self.condition:.3g}, singular values [{sv}]")
        lines.append(f"  step: α = {self.alpha:.5g} ({self.alpha_source}), fraction of target α·κ = "
                     f"{self.fraction:.4g}; Σ change = {float(self.change.sum()):.2e}")
        ch = self.change.values
        if self.weights is not None:
            w = self.weights
            lines.append(f"  weights ρ: min {w.min():.4g}, max {w.max():.4g}, mean {w.mean():.4g}; "
                         f"{np.count_nonzero(ch)} of {ch.size} recorded samples changed, max |Δρ| = "
                         f"{np.max(np.abs(ch)):.4g}")
        if self.level == "group":
            lines.append("  dh: " + ", ".join(f"{p}: {v:+.4g}" for p, v in zip(self.change["probe"].values, ch)))
        lines.append(f"  residual ||predicted - requested|| = {self.residual_norm:.3g} "
                     f"({100 * self.relative_residual:.3g} % of the request)")
        tab = self.table
        lines.append(f"  {'observable':<16} {'target':>12} {'requested':>12} {'predicted':>12} {'residual':>11}")
        for name, row in tab.iterrows():
            mark = "" if row["targeted"] else "   (not targeted)"
            fmt = (lambda v: f"{v:>+12.5g}" if np.isfinite(v) else f"{'—':>12}")
            res = f"{row['residual']:>11.2e}" if np.isfinite(row["residual"]) else f"{'—':>11}"
            lines.append(f"  {str(name):<16} {fmt(row['target'])} {fmt(row['requested'])} {fmt(row['predicted'])} "
                         f"{res}{mark}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------ solve
def _matrix(chi: xr.Dataset) -> tuple[str, xr.DataArray]:
    if not isinstance(chi, xr.Dataset) or "chi" not in chi:
        raise TypeError("`chi` must be the Dataset of attribution(trace) (per-sample level) or "
                        "susceptibility(trace) (group level), with a 'chi' variable.")
    mat = chi["chi"]
    if mat.ndim != 2 or "observable" not in mat.dims:
        raise ValueError(f"`chi['chi']` must have dims (row, observable), got {mat.dims}.")
    row = [d for d in mat.dims if d != "observable"][0]
    if row == "held_out_sample":
        raise ValueError("`chi` holds held-out points, which are not in the training set and cannot be re-weighted; "
                         "use attribution(trace, samples='train').")
    if row not in ("sample", "probe"):
        raise ValueError(f"`chi` rows must be 'sample' (attribution) or 'probe' (susceptibility), got {row!r}.")
    if "n_beta" not in chi.attrs:
        raise ValueError("`chi` has no 'n_beta' attribute; pass the Dataset returned by attribution()/susceptibility().")
    return row, mat.transpose("observable", row).astype(np.float64)


def _group_weights(groups, probes, dh, base, n) -> np.ndarray:
    if not isinstance(groups, Mapping):
        raise TypeError("`groups` must map every probe name to the training-row indices it consists of.")
    missing = [p for p in probes if p not in groups]
    if missing:
        raise ValueError(f"`groups` lacks the probes {missing}; give the training rows of every probe in χ.")
    w = (1.0 - float(np.sum(dh))) * base
    for p, h in zip(probes, dh):
        idx = np.asarray(groups[p])
        if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"`groups[{p!r}]` must be a non-empty 1-D array of training indices in [0, {n}).")
        np.add.at(w, idx, h * n / idx.size)
    return w


def pattern(chi: xr.Dataset, target: Mapping[str, float], *, fraction: float | None = None,
            max_weight_change: float | None = None, ridge: float = 0.0, nonnegative: bool = False,
            n: int | None = None, base_weights: np.ndarray | None = None,
            groups: Mapping[str, Sequence[int]] | None = None, rcond: float = 1e-12) -> PatternPlan:
    """Find the data re-weighting that changes E[φ_a] by ``target[a]`` to first order.

    Parameters
    ----------
    chi
        ``attribution(trace)`` (per-sample level: rows are training samples) or
        ``susceptibility(trace)`` (group level: rows are probe data sets).
    target
        ``{observable: dμ}``, the desired change of each targeted observable's expectation.
        Other observables in ``chi`` are free; their predicted change is reported.
    fraction, max_weight_change
        Choose the step α (module docstring); default ``fraction=1``.
    ridge
        Relative ridge (≥ 0, times σ_max(X_c)²); 0 = minimum norm.
    nonnegative
        Solve the bounded problem so that every new weight is ≥ 0 (groups: dh ≥ 0), and
        report the residual it had to accept. Otherwise a step that would make a weight
        negative raises ``ValueError`` naming the largest valid ``fraction``.
    n
        Number of training samples (per-sample level). Default: the number of rows of
        ``chi``, which must then be every training sample (``Probes(per_sample="all")``);
        pass it when only some samples were recorded.
    base_weights
        The effective weights c of all n samples at the posterior χ was computed at;
        default: the recorded ``weight`` of ``chi`` (ones for samples not recorded, which
        requires the recorded weights to be all 1).
    groups
        Group level only: ``{probe: training-row indices}`` when the probes are
        sub-populations of the training set, so that the plan has per-sample weights.
    rcond
        Relative cut-off below which singular values count as zero (rank, min-norm solve).
    """
    target, f, cap, ridge, rcond = check_pattern_options(target, fraction=fraction, max_weight_change=max_weight_change,
                                                         ridge=ridge, rcond=rcond)
    row, mat = _matrix(chi)
    available = [str(o) for o in mat["observable"].values]
    unknown = [k for k in target if k not in available]
    if unknown:
        raise ValueError(f"`target` names observables {unknown} that are not in `chi`; it has {available}.")
    names = list(target)
    X_all = mat.values
    if not np.all(np.isfinite(X_all)):
        bad = int(np.sum(~np.isfinite(X_all)))
        raise ValueError(f"`chi` has {bad} NaN/infinite entries; re-estimate χ with more draws or drop those rows.")
    rows = mat[row].values
    N = rows.size
    n_beta = float(chi.attrs["n_beta"])
    level = "sample" if row == "sample" else "group"

    base = None
    recorded_base = None
    if level == "sample":
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < N):
            raise ValueError(f"`n` must be an integer ≥ the {N} recorded samples, got {n!r}.")
        n_total = N if n is None else int(n)
        if n is None and not np.array_equal(np.sort(rows), np.arange(N)):
            raise ValueError(f"`chi` records {N} samples that are not the training indices 0..{N - 1}; pass `n` "
                             "(the number of training samples) so that β = nβ/n is right.")
        idx = np.asarray(rows, dtype=np.int64)
        if idx.min() < 0 or idx.max() >= n_total:
            raise ValueError(f"`chi` has sample indices outside [0, n={n_total}).")
        if base_weights is not None:
            base = np.asarray(base_weights, dtype=np.float64)
            if base.shape != (n_total,) or not np.all(np.isfinite(base)) or np.any(base < 0):
                raise ValueError(f"`base_weights` must be {n_total} finite non-negative effective weights.")
        else:
            rec = chi["weight"].sel(sample=rows).values.astype(np.float64) if "weight" in chi else np.ones(N)
            if N < n_total and not np.allclose(rec, 1.0):
                raise ValueError("Only some samples were recorded and the posterior is weighted: pass `base_weights` "
                                 "(posterior.effective_weights).")
            base = np.ones(n_total)
            base[idx] = rec
        recorded_base = base[idx]
        scale = n_beta / n_total
        X = X_all[[available.index(k) for k in names]]
        Xc = X - X.mean(axis=1, keepdims=True)
        X_all_c = X_all - X_all.mean(axis=1, keepdims=True)
    else:
        n_total = n
        scale = n_beta
        Xc = X_all[[available.index(k) for k in names]]
        X_all_c = X_all
        if groups is not None:
            if n is None:
                raise ValueError("With `groups`, pass `n` (the number of training samples).")
            base = np.ones(int(n)) if base_weights is None else np.asarray(base_weights, dtype=np.float64)
    dmu = np.array([target[k] for k in names])

    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    if S.size == 0 or S[0] == 0:
        raise ValueError(f"χ is zero for the targeted observables {names}: no re-weighting changes them to first "
                         "order. Check the observables, or record more samples.")
    rank = int(np.sum(S > rcond * S[0]))
    condition = float(S[0] / S[-1]) if S[-1] > rcond * S[0] and len(S) == len(names) else math.inf

    if not nonnegative:
        mode = "ridge" if ridge > 0 else "min_norm"
        if ridge > 0:
            inv = S / (S**2 + ridge * S[0] ** 2)
        else:
            inv = np.where(S > rcond * S[0], 1.0 / np.where(S > 0, S, 1.0), 0.0)
        s = Vt.T @ (inv * (U.T @ dmu))
        candidates = {}
        if f is not None or cap is None:
            candidates["fraction"] = (1.0 if f is None else f) / scale
        if cap is not None:
            candidates["max_weight_change"] = cap / float(np.max(np.abs(s)))
        source = min(candidates, key=candidates.get)
        alpha = candidates[source]
        delta = alpha * s
        lower = recorded_base if level == "sample" else None
        if lower is not None and np.any(lower + delta < 0):
            neg = s < 0
            f_max = scale * float(np.min(lower[neg] / -s[neg]))
            raise ValueError(
                f"The step α = {alpha:.4g} makes {int(np.sum(lower + delta < 0))} weight(s) negative "
                f"(min {float(np.min(lower + delta)):.3g}). Use fraction ≤ {f_max:.4g} (the largest step with "
                f"ρ ≥ 0), or max_weight_change < {float(np.min(lower[neg])):.3g}, or nonnegative=True.")
        requested = alpha * scale * dmu
        fraction_eff = alpha * scale
    else:
        mode = "nonnegative"
        f_eff = 1.0 if f is None else f
        A = scale * Xc
        r = (ridge if ridge > 0 else _TINY_RIDGE) * (scale * S[0]) ** 2
        cap_v = math.inf if cap is None else cap
        if level == "sample":
            lo = np.maximum(-recorded_base, -cap_v)
            hi = np.full(N, cap_v)
        else:
            lo, hi = np.zeros(N), np.full(N, cap_v)
        delta = bounded_ridge_lstsq(A, f_eff * dmu, r, lo, hi, sum_zero=(level == "sample"))
        alpha = f_eff / scale
        s = delta / alpha
        source = "bounded solve"
        requested = f_eff * dmu
        fraction_eff = f_eff
        ridge = ridge if ridge > 0 else _TINY_RIDGE

    predicted_all = scale * (X_all_c @ delta)
    predicted_t = predicted_all[[available.index(k) for k in names]]
    coords_row = {row: rows}
    weights = None
    if level == "sample":
        weights = base.copy()
        weights[np.asarray(rows, dtype=np.int64)] += delta
        weights = np.maximum(weights, 0.0)  # exact zeros from the bound, never below
    elif groups is not None:
        weights = _group_weights(groups, [str(p) for p in rows], delta, base, int(n))
        if np.any(weights < 0):
            raise ValueError(f"The mixture step makes {int(np.sum(weights < 0))} per-sample weight(s) negative; "
                             "use a smaller fraction or nonnegative=True.")
    obs_t = {"observable": names}
    return PatternPlan(
        level=level, mode=mode,
        target=xr.DataArray(dmu, dims="observable", coords=obs_t),
        requested=xr.DataArray(requested, dims="observable", coords=obs_t),
        predicted=xr.DataArray(predicted_all, dims="observable", coords={"observable": available}),
        residual=xr.DataArray(predicted_t - requested, dims="observable", coords=obs_t),
        direction=xr.DataArray(s, dims=row, coords=coords_row),
        change=xr.DataArray(delta, dims=row, coords=coords_row),
        weights=weights, alpha=float(alpha), alpha_source=source, fraction=float(fraction_eff), scale=float(scale),
        n_beta=n_beta, n=None if n_total is None else int(n_total), ridge=float(ridge),
        singular_values=S, rank=rank, condition=condition,
        base_weights=None if base is None else base.copy(),
        groups=None if groups is None else {str(k): np.asarray(v) for k, v in groups.items()},
        attrs={"estimator": chi.attrs.get("estimator", ""), "num_draws": chi.attrs.get("num_draws")},
    )


from pplpatterning.patterning.verify import Verification, verify  # noqa: E402  (re-export; imports PatternPlan above)
