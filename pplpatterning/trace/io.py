"""A Trace on disk: netCDF (``.nc``) or zarr (a ``.zarr`` directory), and the schema a
file must have to be read back as a Trace (:func:`check_schema`).

The groups and root attrs survive the round trip exactly (nested attrs are JSON text,
see :mod:`pplpatterning.trace.attrs`), so a saved Trace is analysed as the fresh one.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

__all__ = ["save_trace", "load_trace", "check_schema", "REQUIRED_GROUPS", "REQUIRED_STATS", "REQUIRED_ATTRS"]

#: What every Trace has and the analysis (llc, diagnose, susceptibility) reads: the groups,
#: the (chain, draw) variables of ``sample_stats`` and the root attrs written by
#: :func:`pplpatterning.trace.attrs.run_attrs`.
REQUIRED_GROUPS = ("posterior", "sample_stats")
REQUIRED_STATS = ("loss", "loss_delta")
REQUIRED_ATTRS = ("n", "n_beta", "gamma", "loss_at_centre")


def save_trace(trace: xr.DataTree, path: str | Path) -> Path:
    """Write a Trace to netCDF (``.nc``) or zarr (a directory ending in ``.zarr``)."""
    path = Path(path)
    if path.suffix == ".zarr":
        trace.to_zarr(path, mode="w")
    else:
        trace.to_netcdf(path, engine="netcdf4")
    return path


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
