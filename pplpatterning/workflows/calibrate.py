"""Step-size calibration for the stochastic-gradient samplers: sweep ε, recommend one.

For each ε of a grid (optionally crossed with grids of nβ and γ) :func:`calibrate` runs the
sampler, then judges the run by three signs of health (docs/math.md §8; Lau et al. 2023,
arXiv 2308.12108, App. on hyperparameter selection; devinterp's MALA-acceptance diagnostic):

1. **MALA acceptance** ᾱ(ε) at the run's draws, with the proposal matched to the sampler's
   update rule (:func:`~pplpatterning.workflows.acceptance.mala_acceptance`, whose module
   docstring gives the formula): near 1 when one step of the sampler's discretisation is
   accurate on the posterior it is actually visiting.

2. **Health**, judged by :func:`~pplpatterning.diagnose` — the same findings as everywhere
   else: any error or warning rejects the row (``incomplete``, ``nan_loss``,
   ``stuck_chain``, ``nan_diagnostic``, ``rhat`` > 1.01, ``low_ess`` < 100 per chain,
   ``loss_not_settled``, ``negative_llc``, ...). Where the model knows the exact finite-nβ
   target E[λ̂] (:func:`~pplpatterning.workflows.compare.finite_target`), the row is judged against
   it as well: ``off_target`` when |z| = |λ̂ - target|/MCSE > 3. A negative λ̂ is then judged
   by z alone when the target itself is ≤ 0 (a centre that is not the empirical minimiser
   can have a negative exact E[λ̂]).

**Recommendation rule.** For each (nβ, γ) the recommended ε is the *largest* ε of the grid
with ᾱ ≥ ``threshold`` (default 0.9) and no error or warning from diagnose() (so also on
target, where a target is known). The largest such ε mixes fastest among the accurate ones;
a recommendation at the top of the grid is flagged (extend the grid upward), and a group
where no ε passes gets none, with the reasons.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pplpatterning.estimators.diagnose import diagnose
from pplpatterning.plots import plot_calibration
from pplpatterning.samplers.settings import SG_SAMPLERS, SamplerSettings
from pplpatterning.sampling.core import BACKENDS, get_backend, sample
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.workflows.acceptance import AcceptanceEstimate, mala_acceptance
from pplpatterning.workflows.compare import target_or_none

__all__ = ["calibrate", "Calibration", "DEFAULT_STEP_SIZES", "DEFAULT_THRESHOLD", "TABLE_COLUMNS", "REASON_CODES"]

#: Default ε grid: half-decades from 1e-6 to 1e-2.
DEFAULT_STEP_SIZES = tuple(float(v) for v in np.logspace(-6, -2, 9))
#: Default MALA-acceptance threshold for SG samplers.
DEFAULT_THRESHOLD = 0.9
#: Why a row can be rejected: "error" (the run raised), "low_acceptance" (MALA acceptance below the
#: threshold), or any error/warning code of diagnose() (pplpatterning.estimators.diagnose).
REASON_CODES = ("error", "low_acceptance", "incomplete", "nan_loss", "stuck_chain", "nan_diagnostic", "off_target",
                "negative_llc", "rhat", "low_ess", "low_ess_tail", "divergences", "loss_not_settled")

TABLE_COLUMNS = ["n_beta", "gamma", "step_size", "llc", "mcse", "z", "rhat", "ess_bulk", "acceptance",
                 "acceptance_se", "settled", "ok", "reasons", "message", "target", "wall_s"]


# -------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Calibration:
    """The result of :func:`calibrate`.

    ``table``: one row per (nβ, γ, ε) with λ̂, MCSE, R-hat, bulk ESS, MALA acceptance ± se,
    ``settled``, ``ok``, the rejection ``reasons`` (codes from :data:`REASON_CODES`, comma
    separated) and a readable ``message``. ``recommended``: one row per (nβ, γ) with the
    recommended ``step_size`` (NaN when none passed) and the ``reason``.
    """

    table: pd.DataFrame
    recommended: pd.DataFrame
    sampler: str
    backend: str
    threshold: float
    model: str
    lambda_exact: float | None

    @property
    def step_size(self) -> float | None:
        """The recommended ε for the first (or only) (nβ, γ) setting, or None."""
        value = float(self.recommended["step_size"].iloc[0])
        return None if math.isnan(value) else value

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """λ̂ ± 2 MCSE and MALA acceptance against ε (log x-axis), recommendation marked."""
        return plot_calibration(self, path, title=title)

    def __str__(self) -> str:
        lines = [f"{self.model}: {self.backend}/{self.sampler}, MALA-acceptance threshold {self.threshold:g}"]
        for _, r in self.recommended.iterrows():
            eps = "none" if math.isnan(r["step_size"]) else f"{r['step_size']:.3g}"
            lines.append(f"  nβ={r['n_beta']:.4g}, γ={r['gamma']:g}: recommended ε = {eps} ({r['reason']})")
        return "\n".join(lines)


def _positive_grid(values: Any, what: str, allow_zero: bool = False) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"`{what}` must be a sequence of numbers, got {type(values).__name__}.")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"`{what}` must contain numbers only, got {v!r}.")
        v = float(v)
        if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
            bound = "≥ 0" if allow_zero else "> 0"
            raise ValueError(f"every entry of `{what}` must be finite and {bound}, got {v!r}.")
        out.append(v)
    if not out:
        raise ValueError(f"`{what}` is empty; give at least one value.")
    if len(set(out)) != len(out):
        raise ValueError(f"`{what}` repeats a value: {out}.")
    return sorted(out)


def _judge(diag, acc: AcceptanceEstimate | None, threshold: float) -> tuple[list[str], list[str]]:
    """(codes, messages) rejecting a row: diagnose()'s errors and warnings, then the MALA acceptance."""
    codes, msgs = [], []
    for f in diag.findings:
        if f.severity in ("error", "warning") and f.code not in codes:
            codes.append(f.code)
            msgs.append(f.headline)
    if acc is None or not np.isfinite(acc.mean) or acc.mean < threshold:
        if "low_acceptance" not in codes:
            codes.append("low_acceptance")
        value = "not computed" if acc is None else ("NaN" if not np.isfinite(acc.mean) else f"{acc.mean:.3f}")
        msgs.append(f"MALA acceptance {value} < {threshold:g}")
    return codes, msgs


def _run_one(post: GibbsPosterior, eps: float, target: float | None, *, backend: str, sampler: str,
             threshold: float, acceptance_points: int, seed: int, sample_kw: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the sweep: sample at ε, diagnose against the target, MALA acceptance, verdict."""
    row: dict[str, Any] = dict(n_beta=post.n_beta, gamma=post.gamma, step_size=eps, target=target)
    t0 = time.perf_counter()
    try:
        tr = sample(post, backend=backend, sampler=sampler, step_size=eps, seed=seed, progress_bar=False,
                    **sample_kw)
    except Exception as exc:  # keep the row and say why
        row.update(wall_s=time.perf_counter() - t0, settled=False, ok=False, reasons="error",
                   message=f"run failed: {type(exc).__name__}: {exc}")
        return row
    diag = diagnose(tr, target=target)
    est = diag.estimate
    acc, acc_error = None, ""
    if not diag.incomplete:
        try:
            acc = mala_acceptance(post, tr, backend=backend, num_points=acceptance_points, seed=seed)
        except Exception as exc:  # the row is rejected and says why; the sweep goes on
            acc_error = f"MALA acceptance failed: {type(exc).__name__}: {exc}"
    codes, msgs = _judge(diag, acc, threshold)
    if acc_error:
        msgs.append(acc_error)
    unsettled = {"loss_not_settled", "nan_loss", "incomplete", "stuck_chain"}
    row.update(llc=est.llc, mcse=est.mcse, z=diag.z, rhat=est.rhat, ess_bulk=est.ess_bulk,
               acceptance=None if acc is None else acc.mean, acceptance_se=None if acc is None else acc.se,
               settled=not unsettled & set(codes), ok=not codes, reasons=",".join(codes),
               message="; ".join(msgs) if msgs else "passes", wall_s=time.perf_counter() - t0)
    return row


def _checked_grids(posterior, sampler, backend, step_sizes, n_betas, gammas, threshold, acceptance_points,
                   progress_bar, num_draws) -> tuple[list[float], list[float], list[float]]:
    """calibrate()'s argument checks, in order; returns the sorted (ε, nβ, γ) grids."""
    if not isinstance(posterior, GibbsPosterior):
        raise TypeError(f"`posterior` must be a GibbsPosterior, got {type(posterior).__name__}.")
    if sampler not in SG_SAMPLERS:
        raise ValueError(
            f"`sampler` must be a stochastic-gradient sampler {list(SG_SAMPLERS)}, got {sampler!r}; "
            "nuts, hmc and mala adapt their step size during burn-in and need no calibration."
        )
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got {backend!r}.")
    steps = _positive_grid(DEFAULT_STEP_SIZES if step_sizes is None else step_sizes, "step_sizes")
    nbs = _positive_grid([posterior.n_beta] if n_betas is None else n_betas, "n_betas")
    gms = _positive_grid([posterior.gamma] if gammas is None else gammas, "gammas", allow_zero=True)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ValueError(f"`threshold` must be a number in (0, 1), got {threshold!r}.")
    if isinstance(acceptance_points, bool) or not isinstance(acceptance_points, int) or acceptance_points < 2:
        raise ValueError(f"`acceptance_points` must be an integer ≥ 2, got {acceptance_points!r}.")
    if not isinstance(progress_bar, bool):
        raise TypeError(f"`progress_bar` must be True or False, got {progress_bar!r}.")
    if isinstance(num_draws, int) and not isinstance(num_draws, bool) and num_draws < 50:
        raise ValueError(f"`num_draws` must be ≥ 50 so that loss-trace stationarity can be judged, got {num_draws!r}.")
    return steps, nbs, gms


def _recommend(table: pd.DataFrame, steps: list[float], threshold: float) -> pd.DataFrame:
    """One row per (nβ, γ): the largest passing ε and why, or NaN and the counted reasons."""
    rec = []
    for (nb, g), group in table.groupby(["n_beta", "gamma"], sort=False):
        passing = group[group["ok"]]
        if passing.empty:
            counts = pd.Series([c for r in group["reasons"] for c in str(r).split(",") if c]).value_counts()
            why = ", ".join(f"{c} ({n}/{len(group)})" for c, n in counts.items())
            rec.append(dict(n_beta=nb, gamma=g, step_size=math.nan, llc=math.nan, mcse=math.nan,
                            acceptance=math.nan, reason=f"no step size passed: {why}"))
            continue
        best = passing.loc[passing["step_size"].idxmax()]
        reason = f"largest ε with MALA acceptance ≥ {threshold:g} and no diagnose() finding"
        if pd.notna(best["target"]) and pd.notna(best["z"]):
            reason += f" (z = {best['z']:+.1f} against the exact target {best['target']:.4g})"
        if best["step_size"] == max(steps):
            reason += "; it is the largest ε tried, so extend the grid upward"
        rec.append(dict(n_beta=nb, gamma=g, step_size=float(best["step_size"]), llc=best["llc"], mcse=best["mcse"],
                        acceptance=best["acceptance"], reason=reason))
    return pd.DataFrame(rec)


def calibrate(
    posterior: GibbsPosterior,
    sampler: str = "sgld",
    *,
    backend: str = "numpyro",
    step_sizes: Sequence[float] | None = None,
    n_betas: Sequence[float] | None = None,
    gammas: Sequence[float] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    num_chains: int = 4,
    num_draws: int = 500,
    num_burnin: int = 500,
    batch_size: int | None = None,
    thinning: int = 1,
    seed: int = 0,
    acceptance_points: int = 64,
    progress_bar: bool = True,
    **options: Any,
) -> Calibration:
    """Sweep the step size ε of an SG sampler (and nβ, γ on request) and recommend one.

    Every combination of ``step_sizes`` × ``n_betas`` × ``gammas`` is one run of
    ``sample(posterior.with_(n_beta=…, gamma=…), sampler=sampler, step_size=ε, …)``, judged
    by MALA acceptance and diagnose() against the exact target where known (module
    docstring); the recommendation is the largest passing ε per (nβ, γ). All arguments are
    checked before the first run. ``options`` are the sampler's own options (e.g.
    ``diffusion``). ``progress_bar`` shows a tqdm bar over the sweep on stderr (one step
    per run); ``False`` hides it.

    Returns a :class:`Calibration` (``.table``, ``.recommended``, ``.step_size``, ``.plot``).
    """
    steps, nbs, gms = _checked_grids(posterior, sampler, backend, step_sizes, n_betas, gammas, threshold,
                                     acceptance_points, progress_bar, num_draws)
    # Validates chains, draws, burn-in, batch size, thinning, seed and the options, once per ε.
    for eps in steps:
        SamplerSettings(sampler=sampler, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin,
                        step_size=eps, batch_size=batch_size, thinning=thinning, seed=seed,
                        options=options).resolved_batch_size(posterior.n)
    posts = {(nb, g): posterior.with_(n_beta=nb, gamma=g) for nb in nbs for g in gms}
    get_backend(backend)

    targets = {key: target_or_none(post) for key, post in posts.items()}
    sample_kw = dict(num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, batch_size=batch_size,
                     thinning=thinning, **options)
    rows = []
    with tqdm(total=len(posts) * len(steps), desc=f"calibrate {sampler}", unit="run", disable=not progress_bar,
              file=sys.stderr) as bar:
        for key, post in posts.items():
            for eps in steps:
                bar.set_postfix_str(f"nβ={key[0]:.4g} γ={key[1]:g} ε={eps:.3g}")
                rows.append(_run_one(post, eps, targets[key], backend=backend, sampler=sampler,
                                     threshold=float(threshold), acceptance_points=acceptance_points, seed=seed,
                                     sample_kw=sample_kw))
                bar.update(1)
    table = pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)
    table["ok"] = table["ok"].astype(bool)
    table["settled"] = table["settled"].astype(bool)
    return Calibration(table=table, recommended=_recommend(table, steps, threshold), sampler=sampler,
                       backend=backend, threshold=float(threshold), model=posterior.model.name,
                       lambda_exact=posterior.model.lam)
