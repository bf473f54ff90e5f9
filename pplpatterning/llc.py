"""The local learning coefficient estimator.

    λ̂(w*) = nβ · ( E_p[ L_n^ρ(w) ] - L_n^ρ(w*) )

over the kept (post-burn-in) draws of a Trace (Lau et al. 2023/2024, arXiv 2308.12108;
MATH.md §2). The expectation is taken of the per-draw ``loss_delta`` series, which each
backend computes as the per-sample average of c ρ_i (l_i(w) - l_i(w*)) in float64, so no
difference of two large means is ever formed. The error bar is the MCSE of the mean of
that series (arviz-stats ``mcse(method="mean")``: sd / √ESS with the split-chain ESS of the
mean), times nβ; the reported bulk/tail ESS are the rank-normalised ones.

With γ = 0 and β = 1/log n, WBIC = n · E_p[L_n(w)] comes for free (see :func:`wbic`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

from .convergence import series_stats
from .trace import trace_attr

__all__ = ["LLCEstimate", "llc", "wbic"]


@dataclass(frozen=True)
class LLCEstimate:
    """λ̂ with its Monte Carlo error and convergence statistics.

    ``per_chain`` holds each chain's own λ̂; ``rhat``/``ess_*`` are those of the per-draw
    nβ·(L_n(w) - L_n(w*)) series. ``loss_estimate`` says whether the per-draw loss was the
    full-batch L_n ("full") or the sampler's minibatch estimate ("minibatch").
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

    @property
    def chain_std(self) -> float:
        """Spread of the per-chain estimates (not an error bar of the mean; see ``mcse``)."""
        return float(np.std(self.per_chain, ddof=1)) if len(self.per_chain) > 1 else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_chain"] = list(self.per_chain)
        return d

    def __str__(self) -> str:
        return (
            f"λ̂ = {self.llc:.4f} ± {self.mcse:.4f} (MCSE)  R-hat {self.rhat:.3f}  "
            f"ESS bulk {self.ess_bulk:.0f} tail {self.ess_tail:.0f}  "
            f"[nβ={self.n_beta:.4g}, γ={self.gamma:g}, {self.num_chains}×{self.num_draws} draws]"
        )


def _loss_delta(trace: xr.DataTree) -> xr.DataArray:
    try:
        return trace["sample_stats"]["loss_delta"]
    except KeyError:
        raise ValueError(
            "The trace has no sample_stats/loss_delta; it was not produced by pplpatterning.sample."
        ) from None


def llc(trace: xr.DataTree) -> LLCEstimate:
    """Estimate the local learning coefficient from a Trace (numpy/xarray only)."""
    n_beta = float(trace_attr(trace, "n_beta"))
    delta = _loss_delta(trace).astype(np.float64)
    lam = n_beta * delta
    stats = series_stats(lam)
    per_chain = tuple(float(v) for v in lam.mean("draw").values)
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
        num_draws=int(lam.sizes["draw"]),
        loss_estimate=str(trace_attr(trace, "loss_estimate", "full")),
    )


def wbic(trace: xr.DataTree) -> float:
    """WBIC = n · E_p[L_n(w)] (Watanabe 2013); meaningful at nβ = n/log n and γ = 0."""
    n = int(trace_attr(trace, "n"))
    return n * float(trace["sample_stats"]["loss"].astype(np.float64).mean())
