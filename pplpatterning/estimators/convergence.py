"""Convergence statistics of one per-draw series, computed in one place with arviz-stats.

R-hat is the rank-normalised split R-hat, ESS the bulk and tail effective sample sizes
and MCSE the Monte Carlo standard error of the mean, sd / √ESS_mean, where ESS_mean is the
split-chain (not rank-normalised) effective sample size of the series itself
(arviz-stats ``mcse(method="mean")``; Vehtari et al. 2021, "Rank-normalization, folding,
and localization", Bayesian Anal.).

:func:`series_mcse` computes the same mean and MCSE for many series at once (any extra
dims beside ``chain`` and ``draw``), for estimators with one series per probe, sample and
observable (pplpatterning.estimators.susceptibility).

arviz-stats is imported on first use, not with this module: it pulls in scipy.stats and
xarray-einstats (about 0.5-1 s), which a process that imports the estimators without
computing one (a command line parsing its arguments, a script that only loads a Trace)
should not pay.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

__all__ = ["SeriesStats", "series_stats", "series_mcse"]


@dataclass(frozen=True)
class SeriesStats:
    """Mean, MCSE of the mean, rank-normalised split R-hat and bulk/tail ESS of one series."""

    mean: float
    mcse: float
    rhat: float
    ess_bulk: float
    ess_tail: float


def _as_dataarray(values) -> xr.DataArray:
    if isinstance(values, xr.DataArray):
        return values.transpose("chain", "draw")
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"A per-draw series must have dims (chain, draw); got shape {arr.shape}.")
    return xr.DataArray(arr, dims=("chain", "draw"))


def _arviz_stats():
    """The arviz_stats module, imported on first use (module docstring)."""
    import arviz_stats

    return arviz_stats


def _mcse_mean(da: xr.DataArray) -> xr.DataArray:
    """MCSE of the mean over (chain, draw), vectorised over any other dims (arviz-stats)."""
    return _arviz_stats().mcse(da, method="mean", sample_dims=["chain", "draw"])


def series_mcse(values: xr.DataArray) -> xr.Dataset:
    """Mean, MCSE of the mean and ESS_mean of every series in a (chain, draw, ...) array.

    The same estimator as :func:`series_stats` (``mcse = sd/√ESS_mean``), vectorised over
    the extra dims, without R-hat or the bulk/tail ESS (which cost ~3× more and are not
    needed for an error bar). A constant series has MCSE 0; a series with fewer than 4
    draws or with NaN has NaN MCSE.
    """
    if not isinstance(values, xr.DataArray) or not {"chain", "draw"} <= set(values.dims):
        raise ValueError("`values` must be an xarray.DataArray with dims 'chain' and 'draw' (plus any others).")
    da = values.astype(np.float64)
    mean = da.mean(("chain", "draw"))
    if da.sizes["draw"] < 4:
        nan = xr.full_like(mean, np.nan)
        return xr.Dataset({"mean": mean, "mcse": nan, "ess": nan})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mcse = _mcse_mean(da).transpose(*mean.dims)
        # arviz's mcse is sd/√ESS_mean (sd with ddof=1): invert it rather than compute the ESS twice.
        sd = da.std(("chain", "draw"), ddof=1)
        ess = xr.where(mcse > 0, (sd / mcse) ** 2, float(da.sizes["chain"] * da.sizes["draw"]))
    return xr.Dataset({"mean": mean, "mcse": mcse, "ess": ess.transpose(*mean.dims)})


def series_stats(values) -> SeriesStats:
    """Mean, MCSE, R-hat, bulk and tail ESS of a (chain, draw) series.

    Returns NaN diagnostics (not an exception) when the series is too short or contains
    NaN, so that a failed run can still be reported; a constant series has MCSE 0 and NaN
    R-hat and ESS.
    """
    da = _as_dataarray(values).astype(np.float64)
    mean = float(da.mean())
    if not np.all(np.isfinite(da.values)) or da.sizes["draw"] < 4:
        return SeriesStats(mean, math.nan, math.nan, math.nan, math.nan)
    if float(np.ptp(da.values)) == 0.0:  # constant (std() of a constant can round to ~1e-34, not 0)
        return SeriesStats(mean, 0.0, math.nan, math.nan, math.nan)
    azs = _arviz_stats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return SeriesStats(
            mean=mean,
            mcse=float(_mcse_mean(da)),
            rhat=float(azs.rhat(da)),
            ess_bulk=float(azs.ess(da, method="bulk")),
            ess_tail=float(azs.ess(da, method="tail")),
        )
