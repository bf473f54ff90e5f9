"""The local learning coefficient estimator.

    λ̂(w*) = nβ · ( E_p[ L_n^ρ(w) ] - L_n^ρ(w*) )

over the kept (post-burn-in) draws of a Trace (Lau et al. 2023/2024, arXiv 2308.12108;
MATH.md §2). The expectation is taken of the per-draw ``loss_delta`` series, which each
backend computes as the per-sample average of c ρ_i (l_i(w) - l_i(w*)) in float64, so no
difference of two large means is ever formed. The error bar is the MCSE of the mean of
that series (arviz-stats ``mcse(method="mean")``: sd / √ESS with the split-chain ESS of the
mean), times nβ; the reported bulk/tail ESS are the rank-normalised ones.

Only the common finite prefix of draws enters: if some chain has a non-finite
``loss_delta`` first at draw K (the sampler diverged, or, in an incomplete run, the draw
could not be evaluated), every chain is cut to draws 0..K-1 with a RuntimeWarning, so λ̂
is never inf or NaN because of a diverged block (and stays a mean over equal-length
chains, which R-hat and ESS need). K = 0 gives a NaN estimate.

With γ = 0 and β = 1/log n, WBIC = n · E_p[L_n(w)] comes for free (see :func:`wbic`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import math
import warnings

import numpy as np
import xarray as xr

from pplpatterning.estimators.convergence import SeriesStats, series_stats
from pplpatterning.trace.build import trace_attr

__all__ = ["LLCEstimate", "llc", "wbic", "finite_prefix"]


@dataclass(frozen=True)
class LLCEstimate:
    """λ̂ with its Monte Carlo error and convergence statistics.

    ``per_chain`` holds each chain's own λ̂; ``rhat``/``ess_*`` are those of the per-draw
    nβ·(L_n(w) - L_n(w*)) series. ``loss_estimate`` says whether the per-draw loss was the
    full-batch L_n ("full") or the sampler's minibatch estimate ("minibatch").
    ``num_draws_used`` of the trace's ``num_draws_total`` draws per chain entered the
    estimate (fewer when a non-finite loss cut the chains; see :func:`llc`);
    ``num_draws`` equals ``num_draws_used``.
    """

    llc: float
    mcse: float
    per_chain: tuple[float, ...]
    rhat: float
    ess_bulk: float
    ess_tail: float
    n_beta: float
    gamma: float
    loss_at_centre: float
    num_chains: int
    num_draws: int
    loss_estimate: str
    num_draws_used: int
    num_draws_total: int

    @property
    def trimmed(self) -> bool:
        """True when draws with a non-finite loss (and all later ones) were left out."""
        return self.num_draws_used < self.num_draws_total

    @property
    def chain_std(self) -> float:
        """Spread of the per-chain estimates (not an error bar of the mean; see ``mcse``)."""
        return float(np.std(self.per_chain, ddof=1)) if len(self.per_chain) > 1 else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_chain"] = list(self.per_chain)
        return d

    def __str__(self) -> str:
        draws = f"{self.num_chains}×{self.num_draws_used} draws"
        if self.trimmed:
            draws += f" of {self.num_draws_total} (later draws have a non-finite loss)"
        return (
            f"λ̂ = {self.llc:.4f} ± {self.mcse:.4f} (MCSE)  R-hat {self.rhat:.3f}  "
            f"ESS bulk {self.ess_bulk:.0f} tail {self.ess_tail:.0f}  "
            f"[nβ={self.n_beta:.4g}, γ={self.gamma:g}, {draws}]"
        )


def _loss_delta(trace: xr.DataTree) -> xr.DataArray:
    try:
        return trace["sample_stats"]["loss_delta"]
    except KeyError:
        raise ValueError(
            "The trace has no sample_stats/loss_delta; it was not produced by pplpatterning.sample."
        ) from None


def finite_prefix(values) -> int:
    """K: the number of leading draws at which every chain is finite, i.e. the first draw
    index where any chain of a (chain, draw) series is NaN or infinite (its length if none)."""
    arr = np.asarray(values, dtype=np.float64)
    finite = np.all(np.isfinite(arr), axis=0)
    bad = np.flatnonzero(~finite)
    return int(bad[0]) if bad.size else int(arr.shape[1])


def llc(trace: xr.DataTree) -> LLCEstimate:
    """Estimate the local learning coefficient from a Trace (numpy/xarray only).

    Uses the common finite prefix of the per-draw ``loss_delta`` (module docstring): when
    draws were dropped a RuntimeWarning says how many and why; with no finite prefix the
    estimate is NaN.
    """
    n_beta = float(trace_attr(trace, "n_beta"))
    delta = _loss_delta(trace).astype(np.float64).transpose("chain", "draw")
    total = int(delta.sizes["draw"])
    used = finite_prefix(delta.values)
    if used < total:
        warnings.warn(_trim_message(delta, used, total), RuntimeWarning, stacklevel=2)
        delta = delta.isel(draw=slice(0, used))
    lam = n_beta * delta
    if used:
        stats = series_stats(lam)
        per_chain = tuple(float(v) for v in lam.mean("draw").values)
    else:  # no finite draw: NaN, without numpy's empty-slice warnings
        stats = SeriesStats(math.nan, math.nan, math.nan, math.nan, math.nan)
        per_chain = (math.nan,) * int(lam.sizes["chain"])
    return LLCEstimate(
        llc=stats.mean,
        mcse=stats.mcse,
        per_chain=per_chain,
        rhat=stats.rhat,
        ess_bulk=stats.ess_bulk,
        ess_tail=stats.ess_tail,
        n_beta=n_beta,
        gamma=float(trace_attr(trace, "gamma")),
        loss_at_centre=float(trace_attr(trace, "loss_at_centre")),
        num_chains=int(lam.sizes["chain"]),
        num_draws=used,
        loss_estimate=str(trace_attr(trace, "loss_estimate", "full")),
        num_draws_used=used,
        num_draws_total=total,
    )


def _trim_message(delta: xr.DataArray, used: int, total: int) -> str:
    chains = [int(c) for c in np.flatnonzero(~np.isfinite(delta.values[:, used]))]
    what = f"chain {chains[0]} has" if len(chains) == 1 else f"chains {chains} have"
    if used == 0:
        return (f"llc: {what} a non-finite loss_delta at the first draw; there are no finite draws, "
                "so λ̂ is NaN (the sampler diverged, or the run's draws could not be evaluated: see "
                "diagnose(trace)).")
    return (f"llc: dropped draws {used}..{total - 1} of every chain ({total - used} of {total} per chain): "
            f"{what} a non-finite loss_delta at draw {used} (the sampler diverged, or the draws "
            f"could not be evaluated: see diagnose(trace)); λ̂ uses draws 0..{used - 1}.")


def wbic(trace: xr.DataTree) -> float:
    """WBIC = n · E_p[L_n(w)] (Watanabe 2013); meaningful at nβ = n/log n and γ = 0.

    Over the same common finite prefix of draws as :func:`llc` (NaN when there is none).
    """
    n = int(trace_attr(trace, "n"))
    loss = trace["sample_stats"]["loss"].astype(np.float64).transpose("chain", "draw").values
    used = finite_prefix(loss)
    return n * float(loss[:, :used].mean()) if used else math.nan
