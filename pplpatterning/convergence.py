"""Convergence statistics of one per-draw series, computed in one place with arviz-stats.

R-hat is the rank-normalised split R-hat, ESS the bulk and tail effective sample sizes
and MCSE the Monte Carlo standard error of the mean from the bulk ESS
(Vehtari et al. 2021, "Rank-normalization, folding, and localization", Bayesian Anal.).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

__all__ = ["SeriesStats", "series_stats"]


@dataclass(frozen=True)
class SeriesStats:
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


def series_stats(values) -> SeriesStats:
    """Mean, MCSE, R-hat, bulk and tail ESS of a (chain, draw) series.

    Returns NaN diagnostics (not an exception) when the series is too short or contains
    NaN, so that a failed run can still be reported.
    """
    import arviz_stats as azs

    da = _as_dataarray(values).astype(np.float64)
    mean = float(da.mean())
    if not np.all(np.isfinite(da.values)) or da.sizes["draw"] < 4:
        return SeriesStats(mean, math.nan, math.nan, math.nan, math.nan)
    if float(da.std()) == 0.0:
        return SeriesStats(mean, 0.0, math.nan, math.nan, math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return SeriesStats(
            mean=mean,
            mcse=float(azs.mcse(da, method="mean")),
            rhat=float(azs.rhat(da)),
            ess_bulk=float(azs.ess(da, method="bulk")),
            ess_tail=float(azs.ess(da, method="tail")),
        )
