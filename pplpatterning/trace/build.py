"""The Trace: one ArviZ DataTree that every backend returns.

Groups (all variables have leading dims ``(chain, draw)``):

- ``posterior``: the sampled parameters (optional; ``keep_params=False`` drops them).
- ``sample_stats``: ``loss`` = L_n^ρ(w) per kept draw, ``loss_delta`` =
  L_n^ρ(w) - L_n^ρ(w*) averaged per sample (float64), plus whatever the sampler reports
  (``accept_prob``, ``step_size``, ``diverging``, ``grad_norm``, ...).
- ``observables``: per-draw values of user observables φ(w) (may be empty).
- ``probe_losses`` (when probes were given): L_{q'}(w) per probe data set, (chain, draw).
- ``per_sample_losses`` (when per-sample probes were given): l_z(w) with dims
  (chain, draw, sample) for training samples (``sample`` = training indices) and
  (chain, draw, held_out_sample) for held-out points, at every ``thinning``-th kept draw
  (the ``draw`` coordinate holds the kept-draw indices). See pplpatterning.spec.probes.
- root attrs: backend, sampler, n_beta, n_beta_source, gamma, n, loss_at_centre, seed,
  model, settings and library versions. Nested values are stored as JSON strings so
  that a Trace survives netCDF exactly.

Everything here is numpy/xarray only: a saved Trace can be analysed without JAX or torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from arviz_base import from_dict

__all__ = ["build_trace", "run_attrs", "save_trace", "load_trace", "check_schema", "trace_attr", "versions"]

_JSON_PREFIX = "json:"


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of pplpatterning and the given packages."""
    out = {}
    for name in ("pplpatterning", "numpy", "xarray", "arviz-base", "arviz-stats", *packages):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _encode_attr(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if value is None or isinstance(value, (dict, list, tuple)):
        return _JSON_PREFIX + json.dumps(value, sort_keys=True, default=float)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _decode_attr(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_JSON_PREFIX):
        return json.loads(value[len(_JSON_PREFIX):])
    if isinstance(value, np.generic):
        return value.item()
    return value


def trace_attr(trace: xr.DataTree, key: str, default: Any = ...) -> Any:
    """Read a root attribute of a Trace, decoding JSON-encoded values."""
    if key not in trace.attrs:
        if default is ...:
            raise KeyError(f"This trace has no attribute {key!r}; it has {sorted(trace.attrs)}.")
        return default
    return _decode_attr(trace.attrs[key])


def run_attrs(post, settings, *, backend: str, dtype: str, packages: tuple[str, ...], incomplete_reason: str | None,
              sampling_seconds: float, evaluation_seconds: float) -> dict[str, Any]:
    """The root attrs every backend writes: the posterior, the settings, the run's provenance."""
    from datetime import datetime, timezone

    return {
        **post.describe(),
        "backend": backend,
        "sampler": settings.sampler,
        "seed": settings.seed,
        "loss_estimate": settings.loss_estimate if settings.is_stochastic_gradient else "full",
        "batch_size": settings.resolved_batch_size(post.n),
        "settings": settings.describe(),
        "lambda_exact": post.model.lam,
        "multiplicity": post.model.multiplicity,
        "dtype": dtype,
        "incomplete": int(incomplete_reason is not None),
        "incomplete_reason": incomplete_reason or "",
        "sampling_seconds": sampling_seconds,
        "evaluation_seconds": evaluation_seconds,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "versions": versions(*packages),
    }


def build_trace(
    *,
    posterior: Mapping[str, np.ndarray],
    sample_stats: Mapping[str, np.ndarray],
    observables: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any],
    param_dims: Mapping[str, list[str]] | None = None,
    extra_groups: Mapping[str, xr.Dataset] | None = None,
) -> xr.DataTree:
    """Assemble a Trace from (chain, draw, ...) arrays.

    ``sample_stats`` must contain ``loss`` and ``loss_delta``. ``extra_groups`` are added
    as they are (the probe groups built by ``ProbePlan.assemble``).
    """
    for key in ("loss", "loss_delta"):
        if key not in sample_stats:
            raise ValueError(f"`sample_stats` must contain {key!r}.")
    shape = np.shape(sample_stats["loss"])
    if len(shape) != 2:
        raise ValueError(f"`sample_stats['loss']` must have dims (chain, draw), got shape {shape}.")
    groups: dict[str, dict[str, np.ndarray]] = {
        "posterior": {k: np.asarray(v) for k, v in posterior.items()},
        "sample_stats": {k: np.asarray(v) for k, v in sample_stats.items()},
    }
    if observables:
        groups["observables"] = {k: np.asarray(v) for k, v in observables.items()}
    groups = {g: v for g, v in groups.items() if v}
    tree = from_dict(groups, dims=dict(param_dims or {}), check_conventions=False)
    for name in ("posterior", "observables"):  # always present, possibly empty
        if name not in tree.children:
            coords = {"chain": np.arange(shape[0]), "draw": np.arange(shape[1])}
            tree[name] = xr.DataTree(xr.Dataset(coords=coords))
    for name, ds in (extra_groups or {}).items():
        if name in tree.children:
            raise ValueError(f"`extra_groups` would replace the Trace group {name!r}.")
        tree[name] = xr.DataTree(ds)
    tree.attrs.update({k: _encode_attr(v) for k, v in attrs.items()})
    return tree


def save_trace(trace: xr.DataTree, path: str | Path) -> Path:
    """Write a Trace to netCDF (``.nc``) or zarr (a directory ending in ``.zarr``)."""
    path = Path(path)
    if path.suffix == ".zarr":
        trace.to_zarr(path, mode="w")
    else:
        trace.to_netcdf(path, engine="netcdf4")
    return path


#: What every Trace has and the analysis (llc, diagnose, susceptibility) reads: the groups,
#: the (chain, draw) variables of ``sample_stats`` and the root attrs written by :func:`run_attrs`.
REQUIRED_GROUPS = ("posterior", "sample_stats")
REQUIRED_STATS = ("loss", "loss_delta")
REQUIRED_ATTRS = ("n", "n_beta", "gamma", "loss_at_centre")


def check_schema(tree: xr.DataTree, source: str = "this trace") -> None:
    """Raise ValueError naming the first missing group, ``sample_stats`` variable (or its
    dims, which must start with (chain, draw)) or root attribute of a Trace."""
    hint = "; it is not a pplpatterning Trace (write one with save_trace)."
    for group in REQUIRED_GROUPS:
        if group not in tree.children:
            raise ValueError(f"{source} has no group {group!r} (groups: {sorted(tree.children)}){hint}")
    stats = tree["sample_stats"]
    for name in REQUIRED_STATS:
        if name not in stats.data_vars:
            raise ValueError(f"{source}: group 'sample_stats' has no variable {name!r} "
                             f"(variables: {sorted(stats.data_vars)}){hint}")
        if stats[name].dims[:2] != ("chain", "draw") or stats[name].ndim != 2:
            raise ValueError(f"{source}: 'sample_stats/{name}' has dims {stats[name].dims}; a Trace has "
                             f"('chain', 'draw'){hint}")
    missing = [a for a in REQUIRED_ATTRS if a not in tree.attrs]
    if missing:
        raise ValueError(f"{source} lacks the root attribute(s) {missing} (attrs: {sorted(tree.attrs)}){hint}")


def load_trace(path: str | Path) -> xr.DataTree:
    """Read a Trace written by :func:`save_trace` fully into memory; its schema is checked
    (:func:`check_schema`), so a file that is not a Trace fails here, naming what is missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No trace at {str(path)!r}.")
    try:
        if path.suffix == ".zarr":
            tree = xr.open_datatree(path, engine="zarr")
        else:
            tree = xr.open_datatree(path, engine="netcdf4")
    except (OSError, ValueError) as exc:
        raise ValueError(f"Could not read {str(path)!r} as a Trace (netCDF or .zarr): {type(exc).__name__}: "
                         f"{exc}") from exc
    tree = tree.load()
    tree.close()
    check_schema(tree, f"The file {str(path)!r}")
    return tree
