"""The result of patterning: :class:`PatternPlan`, a data re-weighting with its first-order
prediction (docs/math.md §4), how it prints, and how it is applied to a posterior.

Built by :func:`~pplpatterning.patterning.pattern.pattern`; checked by
:func:`~pplpatterning.patterning.verify.verify`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from pplpatterning.spec.posterior import GibbsPosterior

__all__ = ["PatternPlan"]


@dataclass(frozen=True, eq=False)
class PatternPlan:
    """A data re-weighting found by :func:`~pplpatterning.patterning.pattern.pattern`, with its first-order prediction.

    Attributes
    ----------
    level
        ``"sample"`` (per-sample weights) or ``"group"`` (mixture weights dh over probes).
    mode
        ``"min_norm"``, ``"ridge"`` or ``"nonnegative"`` (see :mod:`pplpatterning.patterning.solver`).
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
        """The dimension of the rows: ``"sample"`` (per-sample plans) or ``"probe"`` (group plans)."""
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

    def apply(self, posterior: GibbsPosterior,
              datasets: Mapping[str, Mapping[str, Any]] | None = None) -> GibbsPosterior:
        """The re-weighted :class:`~pplpatterning.GibbsPosterior` (nβ, centre and γ unchanged).

        Per-sample plans and group plans built with ``groups``: ``posterior.with_(weights=...)``.
        Group plans over external probe data sets: pass ``datasets`` ({probe: data}, the
        ones χ was measured with); the data become the training data followed by every
        probe's samples, with raw weights N(1 - Σh)c_i/n on training samples and
        N h_k/m_k on probe k's m_k samples (N the new total), so that
        L^ρ = (1 - Σh) L_q^c + Σ_k h_k L_{q'_k} exactly.
        """
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
        return self._mix_in(posterior, datasets)

    def _mix_in(self, posterior: GibbsPosterior, datasets: Mapping[str, Mapping[str, Any]] | None) -> GibbsPosterior:
        """:meth:`apply` for a group plan over external probe data sets (its docstring)."""
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
