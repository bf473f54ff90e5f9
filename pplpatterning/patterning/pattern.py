"""Patterning: invert susceptibilities into a data re-weighting (docs/math.md §4).

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
equal-weight estimator X 1 = 0 already (docs/math.md §3), so X_c = X and s = X⁺ dμ is the
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

The solvers (``"min_norm"``, ``"ridge"``, ``"nonnegative"``) and the bounded solve are in
:mod:`pplpatterning.patterning.solver`.

The result is a :class:`PatternPlan`: weights, the predicted first-order change of every
observable in χ (targeted or not: the side effects), the residual of the targeted ones, and
the singular values, rank and condition number of X_c.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from pplpatterning.patterning.plan import PatternPlan
from pplpatterning.patterning.solver import Spectrum, Step, bounded_step, least_norm_step, spectrum
__all__ = ["pattern", "PatternPlan", "check_pattern_options"]


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


# ------------------------------------------------------------------------------ inputs
def _chi_matrix(chi: xr.Dataset) -> tuple[str, xr.DataArray]:
    """The row dimension of ``chi`` ("sample" or "probe") and its matrix X, dims (observable, row)."""
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
    """Per-sample weights of a group plan over training sub-populations:
    (1 - Σh) c + Σ_k h_k (n/|S_k|) 1_{S_k}."""
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


@dataclass(frozen=True, eq=False)
class _Problem:
    """pattern()'s inputs, checked: the level, the rows of χ, the targeted observables
    ``names`` among ``available``, the centred matrices (all observables and the targeted
    ones), dμ, the scale κ, and the weights (``base`` of all n samples, ``recorded`` at
    the recorded rows)."""

    level: str
    row: str
    rows: np.ndarray
    names: list[str]
    available: list[str]
    X_all_c: np.ndarray
    Xc: np.ndarray
    dmu: np.ndarray
    scale: float
    n_beta: float
    n_total: int | None
    base: np.ndarray | None
    recorded: np.ndarray | None


def _targeted(mat: xr.DataArray, target: dict[str, float]) -> tuple[list[str], list[str]]:
    """The targeted and the available observables of χ, checking the target names and χ's entries."""
    available = [str(o) for o in mat["observable"].values]
    unknown = [k for k in target if k not in available]
    if unknown:
        raise ValueError(f"`target` names observables {unknown} that are not in `chi`; it has {available}.")
    if not np.all(np.isfinite(mat.values)):
        bad = int(np.sum(~np.isfinite(mat.values)))
        raise ValueError(f"`chi` has {bad} NaN/infinite entries; re-estimate χ with more draws or drop those rows.")
    return list(target), available


def _sample_weights(chi: xr.Dataset, rows: np.ndarray, n: Any,
                    base_weights: Any) -> tuple[int, np.ndarray, np.ndarray]:
    """Per-sample level: the number n of training samples, the base weights c of all n and
    the recorded rows as indices, checked against ``chi``."""
    N = rows.size
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
    return n_total, base, idx


def _problem(chi: xr.Dataset, target: dict[str, float], n: Any, base_weights: Any, groups: Any) -> _Problem:
    """Check ``chi`` and the level-specific options; centre the matrix (module docstring)."""
    row, mat = _chi_matrix(chi)
    names, available = _targeted(mat, target)
    X_all = mat.values
    rows = mat[row].values
    n_beta = float(chi.attrs["n_beta"])
    targeted = [available.index(k) for k in names]
    recorded = None
    if row == "sample":
        n_total, base, idx = _sample_weights(chi, rows, n, base_weights)
        recorded = base[idx]
        scale = n_beta / n_total
        X = X_all[targeted]
        Xc = X - X.mean(axis=1, keepdims=True)
        X_all_c = X_all - X_all.mean(axis=1, keepdims=True)
    else:
        n_total, base = n, None
        scale = n_beta
        Xc = X_all[targeted]
        X_all_c = X_all
        if groups is not None:
            if n is None:
                raise ValueError("With `groups`, pass `n` (the number of training samples).")
            base = np.ones(int(n)) if base_weights is None else np.asarray(base_weights, dtype=np.float64)
    return _Problem(level="sample" if row == "sample" else "group", row=row, rows=rows, names=names,
                    available=available, X_all_c=X_all_c, Xc=Xc, dmu=np.array([target[k] for k in names]),
                    scale=scale, n_beta=n_beta, n_total=n_total, base=base, recorded=recorded)


def _plan(chi: xr.Dataset, prob: _Problem, spec: Spectrum, step: Step, n: Any,
          groups: Mapping[str, Sequence[int]] | None) -> PatternPlan:
    """The :class:`PatternPlan` of a solved step: predictions, new weights, labelled arrays."""
    delta = step.change
    predicted_all = prob.scale * (prob.X_all_c @ delta)
    predicted_t = predicted_all[[prob.available.index(k) for k in prob.names]]
    weights = None
    if prob.level == "sample":
        weights = prob.base.copy()
        weights[np.asarray(prob.rows, dtype=np.int64)] += delta
        weights = np.maximum(weights, 0.0)  # exact zeros from the bound, never below
    elif groups is not None:
        weights = _group_weights(groups, [str(p) for p in prob.rows], delta, prob.base, int(n))
        if np.any(weights < 0):
            raise ValueError(f"The mixture step makes {int(np.sum(weights < 0))} per-sample weight(s) negative; "
                             "use a smaller fraction or nonnegative=True.")
    obs_t = {"observable": prob.names}
    coords_row = {prob.row: prob.rows}
    return PatternPlan(
        level=prob.level, mode=step.mode,
        target=xr.DataArray(prob.dmu, dims="observable", coords=obs_t),
        requested=xr.DataArray(step.requested, dims="observable", coords=obs_t),
        predicted=xr.DataArray(predicted_all, dims="observable", coords={"observable": prob.available}),
        residual=xr.DataArray(predicted_t - step.requested, dims="observable", coords=obs_t),
        direction=xr.DataArray(step.direction, dims=prob.row, coords=coords_row),
        change=xr.DataArray(delta, dims=prob.row, coords=coords_row),
        weights=weights, alpha=float(step.alpha), alpha_source=step.alpha_source, fraction=float(step.fraction),
        scale=float(prob.scale), n_beta=prob.n_beta, n=None if prob.n_total is None else int(prob.n_total),
        ridge=float(step.ridge), singular_values=spec.S, rank=spec.rank, condition=spec.condition,
        base_weights=None if prob.base is None else prob.base.copy(),
        groups=None if groups is None else {str(k): np.asarray(v) for k, v in groups.items()},
        attrs={"estimator": chi.attrs.get("estimator", ""), "num_draws": chi.attrs.get("num_draws")},
    )


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
    prob = _problem(chi, target, n, base_weights, groups)
    spec = spectrum(prob.Xc, rcond, prob.names)
    if nonnegative:
        step = bounded_step(prob.Xc, spec, prob.dmu, scale=prob.scale, fraction=f, max_weight_change=cap,
                            ridge=ridge, base=prob.recorded)
    else:
        step = least_norm_step(spec, prob.dmu, scale=prob.scale, fraction=f, max_weight_change=cap, ridge=ridge,
                               rcond=rcond, base=prob.recorded)
    return _plan(chi, prob, spec, step, n, groups)
