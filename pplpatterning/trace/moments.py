"""Streamed per-sample susceptibility statistics: float64 batch sums instead of (chain, draw, sample) series.

A per-sample susceptibility χ_z(φ) = -Cov(φ, ΔL_z), ΔL_z = l_z - L_q^ρ (docs/math.md §3),
needs only first and mixed moments of (φ, ΔL_z) over the draws. For n = 10⁵ samples the
stored series (chain, draw, sample) is GBs; its moments are not. While sampling, a backend
adds every recorded draw's values into B batches per chain (the batch of the j-th of J
recorded draws is ⌊j·B/J⌋, so batch lengths differ by at most one):

    count[c, b] = m_cb,   phi[c, b, k] = Σ_t φ̃_tk,   delta[c, b, r] = Σ_t ΔL̃_tr,
    cross[c, b, r, k] = Σ_t φ̃_tk ΔL̃_tr,

with φ̃ = φ - φ(w*) and ΔL̃ = ΔL - ΔL(w*) shifted by their values at the centre (a shift leaves
every covariance unchanged and keeps the sums small, so float64 sums of float32 forward
passes lose nothing to cancellation). From these, the pooled estimator equals the
stored-series one exactly (up to rounding) and the batch means of the product series
s_t = (φ_t - φ̄)(ΔL_t - ΔL̄) give its standard error (:mod:`pplpatterning.estimators.susceptibility`).

This module defines the accumulator once, against the array API (NumPy, JAX and torch all
run :func:`add_draw`), and the Trace group it becomes (:data:`MOMENTS_GROUP`). It imports
neither JAX nor torch.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

__all__ = ["MOMENTS_GROUP", "MOMENTS_LOSS_DELTA", "DEFAULT_BATCHES", "Moments", "init_moments", "batch_index",
           "num_batches", "add_draw", "moments_dataset", "moments_bytes"]

MOMENTS_GROUP = "per_sample_moments"
#: The observable coordinate under which the moments also carry φ = sample_stats/loss_delta
#: (what the component-restricted estimator uses by default). "/" is not allowed in an
#: observable's name, so this never collides with one.
MOMENTS_LOSS_DELTA = "sample_stats/loss_delta"
#: At most this many batches per chain for the batch-means standard error.
DEFAULT_BATCHES = 16


class Moments(NamedTuple):
    """The accumulators, float64 arrays of any array-API namespace (see the module docstring)."""

    count: Any  # (C, B)
    phi: Any    # (C, B, K)
    delta: Any  # (C, B, R)
    cross: Any  # (C, B, R, K)


def num_batches(num_recorded: int, batches: int = DEFAULT_BATCHES) -> int:
    """B = min(⌊√J⌋, ``batches``) batches per chain for J recorded draws: batches of ≥ √J
    draws, the usual choice that makes the batch means nearly independent for chains that
    mix geometrically (Flegal & Jones 2010), with B capped to bound the memory."""
    return int(max(1, min(int(batches), math.isqrt(max(int(num_recorded), 1)))))


def batch_index(j, num_recorded: int, num_batch: int):
    """The batch of the j-th (0-based) of ``num_recorded`` recorded draws: ⌊j·B/J⌋ (works on
    Python ints and on traced integer scalars)."""
    return (j * num_batch) // num_recorded


def moments_bytes(num_chains: int, num_batch: int, num_rows: int, num_observables: int) -> int:
    """Bytes of the float64 accumulators."""
    return 8 * num_chains * num_batch * (1 + num_observables + num_rows * (1 + num_observables))


def init_moments(C: int, B: int, R: int, K: int, xp, **array_kwargs) -> Moments:
    """Zero accumulators in the namespace ``xp`` (``array_kwargs``, e.g. ``device=``, go to ``zeros``)."""
    z = lambda *shape: xp.zeros(shape, dtype=xp.float64, **array_kwargs)  # noqa: E731
    return Moments(z(C, B), z(C, B, K), z(C, B, R), z(C, B, R, K))


def _add_at(a, b, x):
    """``a[:, b] += x``: functionally for JAX arrays (``.at``), in place for NumPy and torch."""
    if hasattr(a, "at"):
        return a.at[:, b].add(x)
    a[:, b] += x
    return a


def add_draw(m: Moments, b, phi, delta, phi_shift, delta_shift, xp) -> Moments:
    """Add one recorded draw of every chain to batch ``b``: ``phi`` (C, K) observables,
    ``delta`` (C, R) the ΔL_z = l_z - L_q^ρ; the shifts are their values at the centre (K,),
    (R,). Differences are taken in float64, whatever the precision of the inputs."""
    p = xp.astype(phi, xp.float64) - phi_shift
    d = xp.astype(delta, xp.float64) - delta_shift
    one = xp.ones(p.shape[:1], dtype=xp.float64)
    return Moments(_add_at(m.count, b, one), _add_at(m.phi, b, p), _add_at(m.delta, b, d),
                   _add_at(m.cross, b, d[:, :, None] * p[:, None, :]))


def moments_dataset(m: Moments, *, observables: list[str], phi_shift, delta_shift, num_train: int,
                    train_coords: dict, train_weights: np.ndarray, num_held_out: int, held_out_coords: dict,
                    thinning: int) -> xr.Dataset:
    """The Trace group :data:`MOMENTS_GROUP` from NumPy accumulators (rows: the recorded
    training samples, then the held-out points, as in ``ProbePlan.per_sample_batch``).

    Variables: ``count`` (chain, batch); ``phi_sum`` (chain, batch, observable);
    ``phi_shift`` (observable); for ``train`` (dim ``sample``, the training indices) and
    ``held_out`` (dim ``held_out_sample``): ``<rows>_sum`` (chain, batch, row),
    ``<rows>_cross`` (chain, batch, row, observable) and ``<rows>_shift`` (row); ``weight``
    (sample) = c ρ_z. ``train_coords`` / ``held_out_coords``: the rows' coordinates
    (``ProbePlan.row_coords``: the row dim, and ``sequence``/``position`` for per-token rows).
    """
    count, phi, delta, cross = (np.asarray(a, dtype=np.float64) for a in m)
    C, B = count.shape
    coords: dict[str, Any] = {"chain": np.arange(C), "batch": np.arange(B), "observable": list(observables)}
    data: dict[str, Any] = {
        "count": (("chain", "batch"), count.astype(np.int64)),
        "phi_sum": (("chain", "batch", "observable"), phi),
        "phi_shift": (("observable",), np.asarray(phi_shift, dtype=np.float64)),
    }
    dshift = np.asarray(delta_shift, dtype=np.float64)
    parts = [("train", "sample", slice(0, num_train)), ("held_out", "held_out_sample",
                                                         slice(num_train, num_train + num_held_out))]
    for name, dim, rows in parts:
        if rows.stop == rows.start:
            continue
        data[f"{name}_sum"] = (("chain", "batch", dim), delta[:, :, rows])
        data[f"{name}_cross"] = (("chain", "batch", dim, "observable"), cross[:, :, rows])
        data[f"{name}_shift"] = ((dim,), dshift[rows])
    if num_train:
        coords.update(train_coords)
        data["weight"] = (("sample",), np.asarray(train_weights, dtype=np.float64).copy())
    if num_held_out:
        coords.update(held_out_coords)
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(thinning=int(thinning), num_recorded=int(count.sum(axis=1).max(initial=0)),
                    description="float64 batch sums of φ - φ(w*), ΔL_z - ΔL_z(w*) and their products at every "
                                "`thinning`-th kept draw (ΔL_z = l_z - sample_stats/loss); see "
                                "pplpatterning.trace.moments")
    return ds
