"""Reading a Trace: the (chain, draw, ...) arrays the estimators take, checked and in float64.

- :func:`loss_delta`: the per-draw L_n^ρ(w) - L_n^ρ(w*) of ``sample_stats`` (λ̂, diagnose);
- :func:`finite_prefix`: K, the number of leading draws at which every chain is finite;
- :func:`training_loss`: the full-batch L_q^ρ(w), the centring term of every ΔL;
- :func:`observable_array`: the scalar observables φ as one (chain, draw, observable) array;
- :func:`probe_deltas`: ΔL = L_{q'} - L_q^ρ per probe data set (and per probe mixture);
- :func:`sample_deltas`: ΔL_z = l_z - L_q^ρ per recorded sample, at the thinned draws;
- :func:`sample_moments`: the streamed batch sums of φ and ΔL_z instead of that series
  (:mod:`pplpatterning.trace.moments`), and :func:`uses_sample_moments`, whether the
  per-sample estimators read them.

A Trace that lacks what is asked for fails with a ValueError that says how to record it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from pplpatterning.spec.probes import PER_SAMPLE_GROUP, PROBE_GROUP
from pplpatterning.trace.attrs import trace_attr
from pplpatterning.trace.moments import MOMENTS_GROUP

__all__ = ["loss_delta", "finite_prefix", "training_loss", "observable_array", "probe_deltas", "sample_deltas",
           "sample_moments", "uses_sample_moments"]

_ROW_DIMS = {"train": "sample", "held_out": "held_out_sample"}


def loss_delta(trace: xr.DataTree) -> xr.DataArray:
    """``sample_stats/loss_delta`` = L_n^ρ(w) - L_n^ρ(w*) per kept draw, float64, (chain, draw)."""
    try:
        delta = trace["sample_stats"]["loss_delta"]
    except KeyError:
        raise ValueError(
            "The trace has no sample_stats/loss_delta; it was not produced by pplpatterning.sample."
        ) from None
    return delta.astype(np.float64).transpose("chain", "draw")


def finite_prefix(values) -> int:
    """K: the number of leading draws at which every chain is finite, i.e. the first draw
    index where any chain of a (chain, draw) series is NaN or infinite (its length if none)."""
    arr = np.asarray(values, dtype=np.float64)
    finite = np.all(np.isfinite(arr), axis=0)
    bad = np.flatnonzero(~finite)
    return int(bad[0]) if bad.size else int(arr.shape[1])


def _group(trace: xr.DataTree, name: str, hint: str) -> xr.Dataset:
    if name not in trace.children or not trace[name].data_vars:
        raise ValueError(f"The trace has no {name!r} group; {hint}")
    return trace[name].to_dataset()


def observable_array(trace: xr.DataTree, names: Sequence[str] | str | None = None) -> xr.DataArray:
    """The scalar observables φ ``names`` (default: all) as a (chain, draw, observable) array."""
    ds = _group(trace, "observables", "pass observables={name: phi} to sample(), e.g. "
                "pplpatterning.spec.observables.full_loss(posterior).")
    available = list(ds.data_vars)
    if names is None:
        names = available
    elif isinstance(names, str):
        names = [names]
    missing = [k for k in names if k not in ds]
    if missing:
        raise ValueError(f"`observables` {missing} are not in the trace; it has {available}.")
    for k in names:
        if set(ds[k].dims) != {"chain", "draw"}:
            raise ValueError(f"Observable {k!r} has dims {ds[k].dims}; susceptibilities need scalar observables "
                             "with dims (chain, draw).")
    arr = xr.concat([ds[k].astype(np.float64) for k in names], dim="observable")
    return arr.assign_coords(observable=list(names)).transpose("chain", "draw", "observable")


def training_loss(trace: xr.DataTree) -> xr.DataArray:
    """L_q^ρ(w) per kept draw (full batch), the centring term of every ΔL.

    Raises ValueError when the trace's loss is the sampler's minibatch estimate."""
    estimate = trace_attr(trace, "loss_estimate", "full")
    if estimate != "full":
        raise ValueError(f"This trace's loss is the sampler's {estimate!r} estimate; ΔL = L_q' - L_n needs the "
                         "full-batch L_n at every draw. Sample with loss_estimate='full'.")
    return trace["sample_stats"]["loss"].astype(np.float64)


def _mixture_loss(ds: xr.Dataset, mix: str, weights, available: list[str]) -> xr.DataArray:
    """Σ_k a_k L_k of a probe mixture {probe name: a_k} (Σ a_k = 1), checked."""
    if not isinstance(weights, Mapping) or not weights:
        raise TypeError(f"`mixtures[{mix!r}]` must be a mapping {{probe name: weight}}.")
    bad = [k for k in weights if k not in ds]
    if bad:
        raise ValueError(f"`mixtures[{mix!r}]` names probes {bad} that are not in the trace; it has {available}.")
    a = {k: float(v) for k, v in weights.items()}
    if not all(np.isfinite(list(a.values()))) or abs(sum(a.values()) - 1.0) > 1e-9:
        raise ValueError(f"`mixtures[{mix!r}]` weights must be finite and sum to 1 (a mixture of probe "
                         f"distributions); they sum to {sum(a.values())!r}.")
    return sum(w * ds[k].astype(np.float64) for k, w in a.items())


def probe_deltas(trace: xr.DataTree, probes: Sequence[str] | str | None = None,
                 mixtures: Mapping[str, Mapping[str, float]] | None = None) -> xr.DataArray:
    """ΔL = L_q' - L_q^ρ per probe (and per mixture Σ_k a_k L_k - L), (chain, draw, probe).

    ``probes``: the recorded probe data sets to use (default: all); ``mixtures``:
    {name: {probe name: weight}} with weights summing to 1.
    """
    ds = _group(trace, PROBE_GROUP, "pass probes=Probes(datasets={name: data}) to sample().")
    available = list(ds.data_vars)
    names = available if probes is None else ([probes] if isinstance(probes, str) else list(probes))
    missing = [k for k in names if k not in ds]
    if missing:
        raise ValueError(f"`probes` {missing} are not in the trace; it has {available}.")
    losses = {k: ds[k].astype(np.float64) for k in names}
    for mix, weights in (mixtures or {}).items():
        if mix in losses:
            raise ValueError(f"`mixtures` name {mix!r} clashes with a probe of that name.")
        losses[mix] = _mixture_loss(ds, mix, weights, available)
    loss = training_loss(trace)
    arr = xr.concat([v - loss for v in losses.values()], dim="probe")
    return arr.assign_coords(probe=list(losses)).transpose("chain", "draw", "probe")


def _check_samples(samples: str) -> str:
    """The row dim of ``samples`` ("train" or "held_out")."""
    if samples not in _ROW_DIMS:
        raise ValueError(f"`samples` must be 'train' or 'held_out', got {samples!r}.")
    return _ROW_DIMS[samples]


def _select_rows(arr, dim: str, indices):
    """``arr`` at the recorded rows ``indices`` of ``dim`` (all when None), checked."""
    if indices is None:
        return arr
    idx = np.atleast_1d(np.asarray(indices))
    missing = np.setdiff1d(idx, arr[dim].values)
    if missing.size:
        raise ValueError(f"`indices` {missing[:5].tolist()} were not recorded; the trace has {dim} "
                         f"{arr[dim].values[:5].tolist()}...")
    return arr.sel({dim: idx})


def uses_sample_moments(trace: xr.DataTree) -> bool:
    """Whether the per-sample estimators read the streamed moments: the trace has the group
    :data:`~pplpatterning.trace.moments.MOMENTS_GROUP` and no ``per_sample_losses`` (the
    stored series wins when a trace has both)."""
    return MOMENTS_GROUP in trace.children and PER_SAMPLE_GROUP not in trace.children


def sample_deltas(trace: xr.DataTree, samples: str = "train", indices=None) -> xr.DataArray:
    """ΔL_z = l_z - L_q^ρ at the thinned draws, (chain, draw, row).

    ``samples``: "train" (row dim ``sample``, the training indices) or "held_out" (row dim
    ``held_out_sample``); ``indices``: the recorded rows to use (default: all).
    """
    dim = _check_samples(samples)
    hint = "pass probes=Probes(per_sample='all' or indices, held_out=...) to sample()."
    if MOMENTS_GROUP in trace.children:
        hint += (f" This trace streamed per-sample moments instead ({MOMENTS_GROUP!r}): read them with "
                 "sample_moments(); attribution() and component_susceptibility() use them.")
    ds = _group(trace, PER_SAMPLE_GROUP, hint)
    if samples not in ds:
        raise ValueError(f"The trace recorded no {samples!r} per-sample losses; it has {list(ds.data_vars)}.")
    losses = _select_rows(ds[samples].astype(np.float64), dim, indices)
    loss = training_loss(trace).sel(draw=losses["draw"].values)
    return (losses - loss).transpose("chain", "draw", dim)


def sample_moments(trace: xr.DataTree, samples: str = "train", indices=None) -> xr.Dataset:
    """The streamed batch sums of φ̃ = φ - φ(w*) and ΔL̃_z = ΔL_z - ΔL_z(w*) for the recorded rows.

    ``samples``: "train" (row dim ``sample``) or "held_out" (``held_out_sample``);
    ``indices``: the recorded rows to use (default: all). Returns a Dataset with ``count``
    (chain, batch), ``phi_sum`` (chain, batch, observable), ``phi_shift`` (observable),
    ``delta_sum`` (chain, batch, row), ``delta_cross`` (chain, batch, row, observable),
    ``delta_shift`` (row), and for "train" ``weight`` (sample) = c ρ_z; the group's attrs
    (``thinning``, ``num_recorded``). See :mod:`pplpatterning.trace.moments`.
    """
    dim = _check_samples(samples)
    ds = _group(trace, MOMENTS_GROUP, "pass probes=Probes(per_sample='all' or indices, held_out=..., stream=True) "
                "to sample() to stream per-sample moments (stream=False stores the per-sample losses instead).")
    if f"{samples}_sum" not in ds:
        raise ValueError(f"The trace streamed no {samples!r} per-sample moments; it has {list(ds.data_vars)}.")
    out = xr.Dataset({"count": ds["count"], "phi_sum": ds["phi_sum"], "phi_shift": ds["phi_shift"],
                      "delta_sum": ds[f"{samples}_sum"], "delta_cross": ds[f"{samples}_cross"],
                      "delta_shift": ds[f"{samples}_shift"]})
    if samples == "train" and "weight" in ds:
        out["weight"] = ds["weight"]
    out = _select_rows(out, dim, indices)
    out.attrs.update(ds.attrs)
    return out
