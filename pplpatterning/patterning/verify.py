"""Verification of a patterning plan: re-sample with the new weights, compare with the prediction.

Verification is part of the method (docs/math.md §4; Murfet & Wang 2026, arXiv 2601.13548;
Wang, Donoway & Murfet 2026, "Patterning in practice"): the plan's Δμ = α κ X s is a
first-order prediction, so re-sample the re-weighted posterior and measure what happened.

For every observable φ (targeted or not):

- realized R = E_new[φ] - E_old[φ], with se_R = √(MCSE_new² + MCSE_old²) (independent runs;
  MCSE = sd/√ESS of the per-draw series, :func:`pplpatterning.estimators.convergence.series_stats`);
- predicted P = the plan's α κ X s. Its standard error comes from the baseline trace: by
  linearity of the empirical covariance, κ Σ_j δ_j χ̂_{z_j}(φ) = -κ Cov̂(φ, ΔL_δ) with the
  single combined probe ΔL_δ = Σ_j δ_j (l_j - L) (groups: Σ_k dh_k (L_k - L)), so se_P is the
  MCSE of that one product series (the estimator of :mod:`pplpatterning.estimators.susceptibility`),
  which accounts for the correlations between the χ̂_{z_j}. A baseline that streamed
  per-sample moments gives the same P from the δ-weighted moments (sums and products are
  linear in ΔL, :func:`pplpatterning.estimators.moments_chi.combine_rows`), with the
  batch-means se of the same product series. It needs the baseline's
  per-sample (or probe) losses; without them se_P is NaN. When the baseline is the trace
  the plan came from, the trace's value equals P to rounding (tests/test_patterning_exact.py);
- the linear-response ratio R/P with se from the delta method,
  se = √(se_R² + (R/P)² se_P²)/|P| (R and P treated as independent: P is a covariance
  and E_old a mean of the same draws, uncorrelated to first order for symmetric
  fluctuations), and z = (R - P)/√(se_R² + se_P²). Linear response holds within the
  errors when |z| ≲ 2; a ratio away from 1 measures by how much it broke down.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from pplpatterning.estimators.convergence import series_stats
from pplpatterning.estimators.moments_chi import combine_rows, moments_chi
from pplpatterning.estimators.susceptibility import negative_covariance
from pplpatterning.trace.access import (observable_array, probe_deltas, sample_deltas, sample_moments,
                                        uses_sample_moments)
from pplpatterning.patterning.plan import PatternPlan
from pplpatterning.sampling.core import sample
from pplpatterning.spec.observables import validate_observables
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.spec.probes import Probes
from pplpatterning.trace import trace_attr

__all__ = ["verify", "Verification", "prediction_from_trace"]


def prediction_from_trace(trace: xr.DataTree, plan: PatternPlan) -> xr.Dataset:
    """κ Σ_j δ_j χ̂_j (or nβ Σ_k dh_k χ̂_k) for every observable of ``trace`` that the plan
    predicts, with its MCSE, as one covariance with the combined probe (module docstring).

    Returns a Dataset with ``predicted`` and ``se`` over ``observable``.
    """
    change = plan.change
    names = [str(o) for o in plan.predicted["observable"].values
             if o in trace["observables"].data_vars]
    if plan.level == "sample" and uses_sample_moments(trace):
        rows = change["sample"].values
        weights = xr.DataArray(change.values, dims="sample", coords={"sample": rows})
        combined = combine_rows(sample_moments(trace, "train", rows), weights, "plan")
        res = moments_chi(combined, names).sel(combo="plan", drop=True)
        return xr.Dataset({"predicted": plan.scale * res["chi"], "se": plan.scale * res["se"]})
    if plan.level == "sample":
        rows = change["sample"].values
        deltas = sample_deltas(trace, "train", rows)
        combined = (deltas * xr.DataArray(change.values, dims="sample", coords={"sample": rows})).sum("sample")
    else:
        probes = [str(p) for p in change["probe"].values]
        deltas = probe_deltas(trace, probes, None)
        combined = (deltas * xr.DataArray(change.values, dims="probe", coords={"probe": probes})).sum("probe")
    phi = observable_array(trace, names).sel(draw=combined["draw"].values)
    res = negative_covariance(phi, combined.expand_dims(combo=["plan"]).transpose("chain", "draw", "combo"))
    res = res.sel(combo="plan", drop=True)
    return xr.Dataset({"predicted": plan.scale * res["chi"], "se": plan.scale * res["se"]})


@dataclass(frozen=True, eq=False)
class Verification:
    """Realized vs predicted change of every observable after re-weighting.

    ``table`` has one row per observable: ``before``, ``before_se``, ``after``, ``after_se``
    (posterior means and MCSEs), ``realized`` = after - before and ``realized_se``,
    ``predicted`` and ``predicted_se``, ``ratio`` = realized/predicted and ``ratio_se``,
    ``z`` = (realized - predicted)/√(se_R² + se_P²), ``targeted``. ``trace`` is the
    re-weighted run, ``baseline`` the run before; ``seconds`` the wall time of each step.
    """

    table: pd.DataFrame
    plan: PatternPlan
    trace: xr.DataTree
    baseline: xr.DataTree
    posterior: GibbsPosterior
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table.reset_index().to_dict(orient="records"), "seconds": dict(self.seconds)}

    def __str__(self) -> str:
        lines = ["Verification: re-sampled with the plan's weights (realized = E_new - E_old ± combined MCSE; "
                 "ratio = realized/predicted)"]
        head = (f"  {'observable':<16} {'before':>10} {'after':>10} {'realized ± se':>22} {'predicted ± se':>22} "
                f"{'ratio ± se':>16} {'z':>6}")
        lines.append(head)
        for name, r in self.table.iterrows():
            pred_se = "—" if not np.isfinite(r["predicted_se"]) else f"{r['predicted_se']:.2e}"
            ratio = "—" if not np.isfinite(r["ratio"]) else f"{r['ratio']:.3f} ± {r['ratio_se']:.3f}"
            z = "—" if not np.isfinite(r["z"]) else f"{r['z']:+.2f}"
            mark = "" if r["targeted"] else "  (not targeted)"
            lines.append(f"  {str(name):<16} {r['before']:>10.4g} {r['after']:>10.4g} "
                         f"{r['realized']:>+11.4g} ± {r['realized_se']:<8.2e} {r['predicted']:>+11.4g} ± {pred_se:<8} "
                         f"{ratio:>16} {z:>6}{mark}")
        if self.seconds:
            lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        return "\n".join(lines)


def _check_trace(trace: xr.DataTree, posterior: GibbsPosterior, names: list[str], what: str) -> None:
    """Check that ``trace`` (the ``what`` argument) has the observables ``names`` and was sampled at nβ."""
    if not isinstance(trace, xr.DataTree):
        raise TypeError(f"`{what}` must be a Trace (xarray DataTree) from sample(), got {type(trace).__name__}.")
    if "observables" not in trace.children:
        raise ValueError(f"`{what}` has no observables; sample it with observables=... .")
    missing = [k for k in names if k not in trace["observables"].data_vars]
    if missing:
        raise ValueError(f"`{what}` lacks the observables {missing}; sample it with the same `observables`.")
    nb = float(trace_attr(trace, "n_beta"))
    if not math.isclose(nb, float(posterior.n_beta), rel_tol=1e-12):
        raise ValueError(f"`{what}` was sampled at nβ = {nb:g}, the posterior has nβ = {posterior.n_beta:g}; "
                         "verify against the posterior the plan was computed for.")


def _check_inputs(posterior: GibbsPosterior, plan: PatternPlan, observables: Any) -> None:
    """Check verify()'s posterior, plan and observables against each other (before any sampling)."""
    if not isinstance(posterior, GibbsPosterior):
        raise TypeError(f"`posterior` must be a GibbsPosterior, got {type(posterior).__name__}.")
    if not isinstance(plan, PatternPlan):
        raise TypeError(f"`plan` must be a PatternPlan from pattern(), got {type(plan).__name__}.")
    if not isinstance(observables, Mapping) or not observables:
        raise TypeError("`observables` must be a mapping {name: phi(params, xp)} including the plan's targets.")
    missing = [k for k in plan.observables if k not in observables]
    if missing:
        raise ValueError(f"`observables` lacks the plan's targeted observables {missing}.")
    if not math.isclose(plan.n_beta, float(posterior.n_beta), rel_tol=1e-12):
        raise ValueError(f"The plan was computed at nβ = {plan.n_beta:g}; the posterior has nβ = "
                         f"{posterior.n_beta:g}. Verify against the posterior whose trace gave χ.")
    validate_observables(observables, posterior)


def _baseline_probes(plan: PatternPlan, datasets: Mapping[str, Mapping[str, Any]] | None) -> Probes | None:
    """The probes a baseline sampled by verify() records: the losses the prediction's error needs."""
    if plan.level == "sample":
        return Probes(per_sample=plan.change["sample"].values.astype(np.int64))
    if datasets is not None:
        return Probes(datasets={str(p): datasets[str(p)] for p in plan.change["probe"].values})
    return None


def _compare(name: str, plan: PatternPlan, baseline: xr.DataTree, trace: xr.DataTree,
             pred: xr.Dataset | None) -> dict[str, Any]:
    """One row of :attr:`Verification.table`: realized vs predicted change of ``name`` (module docstring)."""
    before, after = series_stats(baseline["observables"][name]), series_stats(trace["observables"][name])
    realized = after.mean - before.mean
    r_se = math.hypot(after.mcse, before.mcse)
    in_plan = name in plan.predicted["observable"].values
    P = float(plan.predicted.sel(observable=name)) if in_plan else math.nan
    p_se = math.nan
    if pred is not None and name in pred["observable"].values:
        p_se = float(pred["se"].sel(observable=name))
    ratio = realized / P if in_plan and P != 0 else math.nan
    ratio_se = (math.sqrt(r_se**2 + (ratio**2) * (p_se**2 if np.isfinite(p_se) else 0.0)) / abs(P)
                if np.isfinite(ratio) else math.nan)
    z_den = math.hypot(r_se, p_se if np.isfinite(p_se) else 0.0)
    return {"observable": name, "before": before.mean, "before_se": before.mcse, "after": after.mean,
            "after_se": after.mcse, "realized": realized, "realized_se": r_se, "predicted": P,
            "predicted_se": p_se, "ratio": ratio, "ratio_se": ratio_se,
            "z": (realized - P) / z_den if in_plan and z_den > 0 else math.nan,
            "targeted": name in plan.observables}


def verify(posterior: GibbsPosterior, plan: PatternPlan, *, observables: Mapping[str, Callable[..., Any]], baseline: xr.DataTree | None = None,
           datasets: Mapping[str, Mapping[str, Any]] | None = None, backend: str = "numpyro", sampler: str = "nuts",
           num_chains: int = 4, num_draws: int = 1000, num_burnin: int = 500, seed: int = 0,
           progress_bar: bool = False, **sample_options: Any) -> Verification:
    """Re-sample ``posterior`` re-weighted by ``plan`` and compare realized with predicted changes.

    Parameters
    ----------
    posterior
        The :class:`~pplpatterning.GibbsPosterior` χ was estimated at (its weights are the
        plan's base weights).
    plan
        A :class:`~pplpatterning.patterning.plan.PatternPlan`.
    observables
        ``{name: phi}``: the observable functions (at least the plan's targeted ones); they
        are evaluated on the new run (and on the baseline if it is sampled here).
    baseline
        The trace before re-weighting, normally the one χ came from (then the prediction's
        standard error is computed from its per-sample or probe losses). Default: sampled
        here with the same settings and seed + 1, recording the losses the prediction's
        error needs (the plan's samples, or the probe ``datasets``).
    datasets
        Group plans over external probe data sets: ``{probe: data}`` (see
        :meth:`PatternPlan.apply`).
    backend, sampler, num_chains, num_draws, num_burnin, seed, progress_bar, **sample_options
        Passed to :func:`~pplpatterning.sample` for the re-weighted run (seed as given).

    Everything is checked (plan against posterior, observables, baseline) before sampling.
    """
    _check_inputs(posterior, plan, observables)
    names = [str(k) for k in observables]
    new_post = plan.apply(posterior, datasets=datasets)  # validates n, base weights and ρ ≥ 0
    if baseline is not None:
        _check_trace(baseline, posterior, names, "baseline")
    kw = dict(backend=backend, sampler=sampler, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin,
              progress_bar=progress_bar, observables=dict(observables), **sample_options)
    seconds: dict[str, float] = {}
    if baseline is None:
        probes = _baseline_probes(plan, datasets)
        t0 = time.perf_counter()
        baseline = sample(posterior, seed=seed + 1, probes=probes, **kw)
        seconds["baseline"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    trace = sample(new_post, seed=seed, **kw)
    seconds["reweighted"] = time.perf_counter() - t0
    try:
        pred = prediction_from_trace(baseline, plan)
    except ValueError:  # the baseline lacks the per-sample/probe losses: no error bar for P
        pred = None
    table = pd.DataFrame([_compare(name, plan, baseline, trace, pred) for name in names]).set_index("observable")
    return Verification(table=table, plan=plan, trace=trace, baseline=baseline, posterior=new_post, seconds=seconds)
