"""The local learning coefficient estimator.

    λ̂(w*) = nβ · ( E_p[ L_n^ρ(w) ] - L_n^ρ(w*) )

over the kept (post-burn-in) draws of a Trace (Lau et al. 2023/2024, arXiv 2308.12108;
docs/math.md §2). The expectation is taken of the per-draw ``loss_delta`` series, which each
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

import math
import warnings
from dataclasses import dataclass, fields

import numpy as np
import xarray as xr

from pplpatterning.estimators.convergence import SeriesStats, series_stats
from pplpatterning.trace.access import finite_prefix, loss_delta
from pplpatterning.trace.attrs import trace_attr

__all__ = ["LLCEstimate", "llc", "wbic"]

#: The scalar results of :class:`LLCEstimate`, in :meth:`LLCEstimate.to_dataset` data
#: variables with these long names; the other scalar fields become the Dataset's attrs.
_RESULTS = {
    "llc": "λ̂ = nβ (E[L_n^ρ(w)] - L_n^ρ(w*))",
    "mcse": "Monte Carlo standard error of λ̂ (sd/√ESS_mean)",
    "rhat": "rank-normalised split R-hat of nβ·ΔL",
    "ess_bulk": "bulk effective sample size of nβ·ΔL",
    "ess_tail": "tail effective sample size of nβ·ΔL",
}


@dataclass(frozen=True, eq=False, repr=False)
class LLCEstimate:
    """λ̂ with its Monte Carlo error and convergence statistics.

    ``per_chain`` holds each chain's own λ̂, an xarray.DataArray with dim ``chain`` (the
    trace's chain coordinate); ``rhat``/``ess_*`` are those of the per-draw
    nβ·(L_n(w) - L_n(w*)) series. ``loss_estimate`` says whether the per-draw loss was the
    full-batch L_n ("full") or the sampler's minibatch estimate ("minibatch").
    ``num_draws_used`` of the trace's ``num_draws_total`` draws per chain entered the
    estimate (fewer when a non-finite loss cut the chains; see :func:`llc`);
    ``num_draws`` equals ``num_draws_used``. :meth:`to_dataset` gives the whole result as
    one labelled xarray.Dataset, :meth:`to_dict` as plain numbers (JSON).

    Two estimates are equal when every field is, ``per_chain`` by its chain labels and values.
    """

    llc: float
    mcse: float
    per_chain: xr.DataArray
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
        values = np.asarray(self.per_chain, dtype=np.float64)
        return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")

    def to_dict(self) -> dict:
        """Every field as a plain Python value; ``per_chain`` as the list of per-chain λ̂."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["per_chain"] = [float(v) for v in np.asarray(self.per_chain, dtype=np.float64)]
        return d

    def to_dataset(self) -> xr.Dataset:
        """The estimate as an xarray.Dataset: data variables ``llc``, ``mcse``, ``rhat``,
        ``ess_bulk``, ``ess_tail`` (scalars) and ``per_chain`` (dim ``chain``), each with a
        ``long_name``; the settings and draw counts (n_beta, gamma, loss_at_centre,
        num_chains, num_draws, loss_estimate, num_draws_used, num_draws_total) as attrs."""
        data = {k: xr.DataArray(float(getattr(self, k)), attrs={"long_name": v}) for k, v in _RESULTS.items()}
        data["per_chain"] = self.per_chain.rename("per_chain")
        attrs = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in data}
        return xr.Dataset(data, attrs=attrs)

    def _key(self) -> tuple:
        chains = tuple(self.per_chain["chain"].values.tolist())
        values = tuple(float(v) for v in np.asarray(self.per_chain, dtype=np.float64))
        return tuple((chains, values) if f.name == "per_chain" else getattr(self, f.name) for f in fields(self))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        values = tuple(float(v) for v in np.asarray(self.per_chain, dtype=np.float64))
        parts = [f"{f.name}={values if f.name == 'per_chain' else getattr(self, f.name)!r}" for f in fields(self)]
        return f"LLCEstimate({', '.join(parts)})"

    def __str__(self) -> str:
        draws = f"{self.num_chains}×{self.num_draws_used} draws"
        if self.trimmed:
            draws += f" of {self.num_draws_total} (later draws have a non-finite loss)"
        return (
            f"λ̂ = {self.llc:.4f} ± {self.mcse:.4f} (MCSE)  R-hat {self.rhat:.3f}  "
            f"ESS bulk {self.ess_bulk:.0f} tail {self.ess_tail:.0f}  "
            f"[nβ={self.n_beta:.4g}, γ={self.gamma:g}, {draws}]"
        )


def llc(trace: xr.DataTree) -> LLCEstimate:
    """Estimate the local learning coefficient from a Trace (numpy/xarray only).

    Uses the common finite prefix of the per-draw ``loss_delta`` (module docstring): when
    draws were dropped a RuntimeWarning says how many and why; with no finite prefix the
    estimate is NaN.
    """
    n_beta = float(trace_attr(trace, "n_beta"))
    delta = loss_delta(trace)
    total = int(delta.sizes["draw"])
    used = finite_prefix(delta.values)
    if used < total:
        warnings.warn(_trim_message(delta, used, total), RuntimeWarning, stacklevel=2)
        delta = delta.isel(draw=slice(0, used))
    lam = n_beta * delta
    if used:
        stats = series_stats(lam)
        values = lam.mean("draw").values
    else:  # no finite draw: NaN, without numpy's empty-slice warnings
        stats = SeriesStats(math.nan, math.nan, math.nan, math.nan, math.nan)
        values = np.full(int(lam.sizes["chain"]), math.nan)
    per_chain = xr.DataArray(values, dims=("chain",), coords={"chain": lam["chain"].values}, name="per_chain",
                             attrs={"long_name": "λ̂ of each chain"})
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
