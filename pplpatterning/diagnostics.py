"""Health checks of a Trace: ArviZ convergence diagnostics plus SLT-specific ones.

Each check returns a :class:`Finding`. Thresholds follow Vehtari et al. (2021) for R-hat
(≤ 1.01) and ESS (≥ 100 per chain), and MATH.md §8 for the SLT signs of trouble:
a negative λ̂ (w* is not a local minimum, or the chain escaped), a loss trace that never
settles, NaN losses, divergent transitions, low MALA/HMC acceptance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .llc import LLCEstimate, llc as estimate_llc

__all__ = ["Finding", "Diagnosis", "diagnose", "RHAT_MAX", "MIN_ESS_PER_CHAIN"]

RHAT_MAX = 1.01
MIN_ESS_PER_CHAIN = 100
# |z| of the difference between the first 20 % and last 50 % of each chain's loss
# (Geweke 1992 with ESS-based standard errors) above which the trace "never settles".
DRIFT_Z = 4.0


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning" | "info"
    code: str
    message: str

    def __str__(self) -> str:
        return f"[{self.severity}] {self.code}: {self.message}"


@dataclass(frozen=True)
class Diagnosis:
    estimate: LLCEstimate | None
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when there is no error and no warning."""
        return not any(f.severity in ("error", "warning") for f in self.findings)

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def __str__(self) -> str:
        if not self.findings:
            return "No problems found."
        return "\n".join(str(f) for f in self.findings)


def _drift_z(loss: np.ndarray) -> float:
    """Largest per-chain |z| between the early (first 20 %) and late (last 50 %) mean loss."""
    from .convergence import series_stats

    n_draw = loss.shape[1]
    if n_draw < 50:
        return math.nan
    early = loss[:, : n_draw // 5]
    late = loss[:, n_draw // 2 :]
    worst = 0.0
    for c in range(loss.shape[0]):
        se_e = series_stats(early[c : c + 1]).mcse
        se_l = series_stats(late[c : c + 1]).mcse
        if not (np.isfinite(se_e) and np.isfinite(se_l)) or se_e + se_l == 0:
            continue
        z = abs(early[c].mean() - late[c].mean()) / math.hypot(se_e, se_l)
        worst = max(worst, z)
    return worst


def diagnose(trace: xr.DataTree) -> Diagnosis:
    """Check a Trace and return every problem found, most serious first."""
    findings: list[Finding] = []
    stats = trace["sample_stats"]
    loss = np.asarray(stats["loss_delta"].values, dtype=np.float64)
    n_chain = loss.shape[0]

    n_nan = int(np.sum(~np.isfinite(loss)))
    if n_nan:
        findings.append(Finding("error", "nan_loss", f"{n_nan} draws have a NaN or infinite loss; the sampler diverged "
                                "(reduce the step size or add localization γ)."))
    est = estimate_llc(trace)
    if np.isfinite(est.llc) and est.llc < 0:
        findings.append(Finding(
            "error", "negative_llc",
            f"λ̂ = {est.llc:.4g} < 0: w* is not a local minimum of L_n, or the chains escaped to lower loss "
            "(use a trained centre, increase γ, or reduce the step size)."))
    if np.isfinite(est.rhat) and est.rhat > RHAT_MAX:
        findings.append(Finding("warning", "rhat", f"R-hat of the loss series is {est.rhat:.3f} > {RHAT_MAX} "
                                "(chains disagree; run longer or check the step size)."))
    min_ess = MIN_ESS_PER_CHAIN * n_chain
    if np.isfinite(est.ess_bulk) and est.ess_bulk < min_ess:
        findings.append(Finding("warning", "low_ess", f"bulk ESS {est.ess_bulk:.0f} < {min_ess} "
                                f"({MIN_ESS_PER_CHAIN} per chain); the MCSE is unreliable, run longer."))
    if np.isfinite(est.ess_tail) and est.ess_tail < min_ess:
        findings.append(Finding("warning", "low_ess_tail", f"tail ESS {est.ess_tail:.0f} < {min_ess}."))
    if "diverging" in stats:
        n_div = int(np.sum(stats["diverging"].values))
        if n_div:
            findings.append(Finding("warning", "divergences", f"{n_div} divergent transitions; "
                                    "raise target_accept or localize more strongly."))
    if "accept_prob" in stats:
        acc = float(np.nanmean(stats["accept_prob"].values))
        if acc < 0.5:
            findings.append(Finding("warning", "low_acceptance", f"mean acceptance {acc:.2f} < 0.5; "
                                    "reduce the step size."))
    if not n_nan:
        z = _drift_z(loss)
        if np.isfinite(z) and z > DRIFT_Z:
            findings.append(Finding("warning", "loss_not_settled",
                                    f"the loss trace drifts: early vs late mean differ by {z:.1f} standard errors "
                                    "(burn-in too short, or the chain is escaping the basin)."))
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order[f.severity])
    return Diagnosis(estimate=est, findings=tuple(findings))
