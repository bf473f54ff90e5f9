"""Health checks of a Trace: ArviZ convergence diagnostics plus SLT-specific ones.

:func:`diagnose` is the one place where a run is judged; ``compare``, ``calibrate``, the
CLI and the validation runner all call it. Each problem is a :class:`Finding`
(severity, code, message); messages read "what was found (what to do)". The codes:

errors (the estimate cannot be trusted)
    ``incomplete``      the run stopped early or its draws could not all be evaluated
                        (root attrs ``incomplete=1``, ``incomplete_reason``; contract C3);
    ``nan_loss``        some draws have a NaN/infinite loss (λ̂ then uses the common finite
                        prefix of draws, :func:`pplpatterning.estimators.llc`);
    ``stuck_chain``     some chain never moves: its series nβ·(L_n(w) - L_n(w*)) is constant
                        (peak-to-peak ≤ ``STUCK_RTOL`` · max(1, max|value|)), or all its
                        recorded parameters are identical at every draw;
    ``nan_diagnostic``  R-hat, bulk/tail ESS or the MCSE is NaN for another reason (fewer
                        than 4 finite draws per chain, ...), so λ̂ has no error bar;
    ``off_target``      an exact target E[λ̂] is given and |z| > ``OFF_TARGET_Z``, with
                        z = (λ̂ - target) / MCSE;
    ``negative_llc``    λ̂ < 0 (w* is not a local minimum, or the chains escaped), unless a
                        target is given and is itself ≤ 0 or agrees with λ̂ (|z| ≤ 3).
warnings (the run needs more work before the estimate can be trusted)
    ``rhat``            R-hat > 1.01 (Vehtari et al. 2021);
    ``low_ess``, ``low_ess_tail``  bulk / tail ESS < 100 per chain (Vehtari et al. 2021);
    ``divergences``     divergent transitions;
    ``low_acceptance``  mean recorded acceptance < 0.5;
    ``loss_not_settled`` early and late means of a chain's loss differ by > 4 standard
                        errors (Geweke 1992 with ESS-based standard errors; docs/math.md §8).

A Diagnosis is ``ok`` only when the run is complete and there is no error or warning.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from pplpatterning.estimators.convergence import series_stats
from pplpatterning.estimators.llc import LLCEstimate, llc as estimate_llc
from pplpatterning.trace.access import finite_prefix, loss_delta
from pplpatterning.trace.attrs import trace_attr

__all__ = ["Finding", "Diagnosis", "diagnose", "RHAT_MAX", "MIN_ESS_PER_CHAIN", "OFF_TARGET_Z", "DRIFT_Z",
           "STUCK_RTOL"]

RHAT_MAX = 1.01
MIN_ESS_PER_CHAIN = 100
#: |z| = |λ̂ - target| / MCSE above which an estimate is off its exact target.
OFF_TARGET_Z = 3.0
# |z| of the difference between the first 20 % and last 50 % of each chain's loss
# (Geweke 1992 with ESS-based standard errors) above which the trace "never settles".
DRIFT_Z = 4.0
#: A chain is stuck when its nβ·ΔL series moves by at most this fraction of max(1, max|nβ·ΔL|):
#: a moving chain's nβ·ΔL varies on the scale of λ (its posterior sd is O(√λ)), float64 rounding
#: of a constant on the scale 1e-16.
STUCK_RTOL = 1e-12


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning" | "info"
    code: str
    message: str

    @property
    def headline(self) -> str:
        """The message without its advice: the text before the first " (" or "; "."""
        cut = [i for i in (self.message.find(" ("), self.message.find("; ")) if i > 0]
        return self.message[: min(cut)] if cut else self.message

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"[{self.severity}] {self.code}: {self.message}"


@dataclass(frozen=True)
class Diagnosis:
    """The findings of :func:`diagnose`, the estimate they refer to, and the run's state.

    ``incomplete`` / ``incomplete_reason``: whether the run stopped early or its draws
    could not all be evaluated, and why (None when complete). ``z``: (λ̂ - target)/MCSE
    when a target was given and the MCSE is positive, else None.
    """

    estimate: LLCEstimate | None
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    incomplete: bool = False
    incomplete_reason: str | None = None
    z: float | None = None
    target: float | None = None

    @property
    def ok(self) -> bool:
        """True when the run is complete and there is no error and no warning."""
        return not self.incomplete and not any(f.severity in ("error", "warning") for f in self.findings)

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def problem_codes(self) -> list[str]:
        """The codes of the error and warning findings, in order (errors first)."""
        return [f.code for f in self.findings if f.severity in ("error", "warning")]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "incomplete": self.incomplete, "incomplete_reason": self.incomplete_reason,
                "z": self.z, "findings": [f.to_dict() for f in self.findings]}

    def __str__(self) -> str:
        if not self.findings:
            return "No problems found."
        return "\n".join(str(f) for f in self.findings)


# ------------------------------------------------------------------------- the checks
def _drift_z(loss: np.ndarray) -> float:
    """Largest per-chain |z| between the early (first 20 %) and late (last 50 %) mean loss."""
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


def _incomplete(trace: xr.DataTree, est: LLCEstimate) -> tuple[bool, str | None, list[Finding]]:
    if not int(trace_attr(trace, "incomplete", 0) or 0):
        return False, None, []
    reason = str(trace_attr(trace, "incomplete_reason", "") or "") or "no reason recorded"
    kept = f"the trace keeps {est.num_draws_total} draws per chain × {est.num_chains} chains"
    if est.trimmed:
        kept += f", of which the first {est.num_draws_used} have a finite loss"
    return True, reason, [Finding("error", "incomplete",
                                  f"the run is incomplete: {reason}; {kept} (λ̂ of a partial run is not a converged "
                                  "estimate: rerun, or sample longer).")]


def _nonfinite(lam: np.ndarray, est: LLCEstimate) -> list[Finding]:
    n_bad = int(np.sum(~np.isfinite(lam)))
    if not n_bad:
        return []
    used = (f"λ̂ uses the first {est.num_draws_used} of {est.num_draws_total} draws per chain"
            if est.num_draws_used else "no draw is finite, so λ̂ is NaN")
    return [Finding("error", "nan_loss", f"{n_bad} draws have a NaN or infinite loss; {used} (the sampler diverged, "
                    "or the draws could not be evaluated: reduce the step size or add localization γ).")]


def _stuck_chains(lam: np.ndarray, posterior: xr.Dataset | None) -> list[int]:
    """Chains whose nβ·ΔL series (finite prefix) is constant, or whose parameters never change."""
    stuck = set()
    if lam.shape[1] >= 2:
        scale = np.maximum(1.0, np.max(np.abs(lam), axis=1))
        stuck |= {int(c) for c in np.flatnonzero(np.ptp(lam, axis=1) <= STUCK_RTOL * scale)}
    if posterior is not None and posterior.data_vars and posterior.sizes.get("draw", 0) >= 2:
        frozen = np.ones(posterior.sizes["chain"], dtype=bool)
        for var in posterior.data_vars.values():
            v = np.asarray(var.transpose("chain", "draw", ...).values)
            v = v.reshape(v.shape[0], v.shape[1], -1)
            frozen &= np.all(v == v[:, :1], axis=(1, 2))
        stuck |= {int(c) for c in np.flatnonzero(frozen)}
    return sorted(stuck)


def _posterior(trace: xr.DataTree) -> xr.Dataset | None:
    return trace["posterior"].to_dataset() if "posterior" in trace.children else None


def _stuck(chains: list[int], n_chain: int) -> list[Finding]:
    if not chains:
        return []
    which = f"chain {chains[0]}" if len(chains) == 1 else f"chains {chains}"
    return [Finding("error", "stuck_chain",
                    f"{which} of {n_chain} never moved: the loss (or every parameter) is the same at every draw "
                    "(no step accepted, a zero or vanishing step size, or zero leapfrog steps; R-hat and ESS are "
                    "undefined for a constant series: check the sampler settings).")]


def _nan_diagnostics(est: LLCEstimate) -> list[Finding]:
    values = {"R-hat": est.rhat, "bulk ESS": est.ess_bulk, "tail ESS": est.ess_tail, "MCSE": est.mcse}
    nan = [k for k, v in values.items() if not np.isfinite(v)]
    if not nan:
        return []
    why = (f"only {est.num_draws_used} finite draws per chain, need ≥ 4" if est.num_draws_used < 4
           else "the series is degenerate")
    return [Finding("error", "nan_diagnostic", f"{', '.join(nan)} {'is' if len(nan) == 1 else 'are'} NaN ({why}); "
                    "λ̂ has no error bar and convergence cannot be judged: run longer.")]


def _z(est: LLCEstimate, target: float | None) -> float | None:
    if target is None or not (np.isfinite(est.llc) and np.isfinite(est.mcse) and est.mcse > 0):
        return None
    return float((est.llc - target) / est.mcse)


def _off_target(est: LLCEstimate, target: float | None, z: float | None) -> list[Finding]:
    if z is None or abs(z) <= OFF_TARGET_Z:
        return []
    return [Finding("error", "off_target",
                    f"λ̂ = {est.llc:.4g} ± {est.mcse:.2g} is z = {z:+.1f} MCSE from the exact target {target:.4g} "
                    f"(|z| > {OFF_TARGET_Z:g}: the sampler is biased, e.g. too large a step size or minibatch noise, "
                    "or has not converged).")]


def _negative(est: LLCEstimate, target: float | None, z: float | None) -> list[Finding]:
    if not (np.isfinite(est.llc) and est.llc < 0):
        return []
    if target is not None and (target <= 0 or (z is not None and abs(z) <= OFF_TARGET_Z)):
        return []  # the exact target says a negative λ̂ is expected here (off_target judges it)
    return [Finding("error", "negative_llc",
                    f"λ̂ = {est.llc:.4g} < 0: w* is not a local minimum of L_n, or the chains escaped to lower loss "
                    "(use a trained centre, increase γ, or reduce the step size).")]


def _convergence(est: LLCEstimate) -> list[Finding]:
    out = []
    if np.isfinite(est.rhat) and est.rhat > RHAT_MAX:
        out.append(Finding("warning", "rhat", f"R-hat of the loss series is {est.rhat:.3f} > {RHAT_MAX} "
                           "(chains disagree; run longer or check the step size)."))
    min_ess = MIN_ESS_PER_CHAIN * est.num_chains
    if np.isfinite(est.ess_bulk) and est.ess_bulk < min_ess:
        out.append(Finding("warning", "low_ess", f"bulk ESS {est.ess_bulk:.0f} < {min_ess} "
                           f"({MIN_ESS_PER_CHAIN} per chain; the MCSE is unreliable, run longer)."))
    if np.isfinite(est.ess_tail) and est.ess_tail < min_ess:
        out.append(Finding("warning", "low_ess_tail", f"tail ESS {est.ess_tail:.0f} < {min_ess} "
                           f"({MIN_ESS_PER_CHAIN} per chain; run longer)."))
    return out


def _sampler_stats(stats: xr.DataTree) -> list[Finding]:
    out = []
    if "diverging" in stats:
        n_div = int(np.sum(stats["diverging"].values))
        if n_div:
            out.append(Finding("warning", "divergences", f"{n_div} divergent transitions "
                               "(raise target_accept or localize more strongly)."))
    if "accept_prob" in stats:
        acc = np.asarray(stats["accept_prob"].values, dtype=np.float64)
        if np.any(np.isfinite(acc)) and float(np.nanmean(acc)) < 0.5:
            out.append(Finding("warning", "low_acceptance", f"mean acceptance {float(np.nanmean(acc)):.2f} < 0.5 "
                               "(reduce the step size)."))
    return out


def _settling(lam: np.ndarray) -> list[Finding]:
    z = _drift_z(lam)
    if not (np.isfinite(z) and z > DRIFT_Z):
        return []
    return [Finding("warning", "loss_not_settled",
                    f"the loss trace drifts: early vs late mean differ by {z:.1f} standard errors "
                    "(burn-in too short, or the chain is escaping the basin).")]


def _check_target(target) -> float | None:
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, numbers.Real) or not math.isfinite(float(target)):
        raise ValueError(f"`target` must be a finite number (the exact finite-nβ E[λ̂]) or None, got {target!r}.")
    return float(target)


def diagnose(trace: xr.DataTree, *, target: float | None = None) -> Diagnosis:
    """Check a Trace and return every problem found, errors first (codes: module docstring).

    ``target``: the exact finite-nβ expectation E[λ̂] where one is known (a model's
    ``target_fn``, see :func:`pplpatterning.workflows.compare.finite_target`); then the estimate is
    also judged by z = (λ̂ - target)/MCSE (``off_target`` when |z| > ``OFF_TARGET_Z``), and
    a target with no usable MCSE (0 or NaN) is itself a finding (``stuck_chain`` or
    ``nan_diagnostic``), never a pass.
    """
    if not isinstance(trace, xr.DataTree) or "sample_stats" not in trace.children:
        raise TypeError(f"`trace` must be a Trace (the DataTree returned by pplpatterning.sample), "
                        f"got {type(trace).__name__}.")
    target = _check_target(target)
    with warnings.catch_warnings():  # the trimmed prefix is reported as a finding instead
        warnings.filterwarnings("ignore", message="llc: ", category=RuntimeWarning)
        est = estimate_llc(trace)
    stats = trace["sample_stats"]
    lam_all = est.n_beta * loss_delta(trace).values
    lam = lam_all[:, : finite_prefix(lam_all)]
    z = _z(est, target)

    incomplete, reason, findings = _incomplete(trace, est)
    findings += _nonfinite(lam_all, est)
    stuck_chains = _stuck_chains(lam, _posterior(trace))
    stuck = _stuck(stuck_chains, est.num_chains)
    findings += stuck
    if len(stuck_chains) == est.num_chains:  # a constant series: its MCSE, z, sign and ESS are rounding noise, not evidence
        z = None
    else:
        if not stuck:
            findings += _nan_diagnostics(est)
        if target is not None and z is None and not any(f.code == "nan_diagnostic" for f in findings):
            findings.append(Finding("error", "nan_diagnostic", f"λ̂ cannot be compared with the target {target:.4g}: "
                                    f"λ̂ = {est.llc:.4g}, MCSE = {est.mcse:.3g} (need a finite, positive MCSE)."))
        findings += _off_target(est, target, z)
        findings += _negative(est, target, z)
        findings += _convergence(est)
        findings += _settling(lam)
    findings += _sampler_stats(stats)
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order[f.severity])
    return Diagnosis(estimate=est, findings=tuple(findings), incomplete=incomplete, incomplete_reason=reason, z=z,
                     target=target)
