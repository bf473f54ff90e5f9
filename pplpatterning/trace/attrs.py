"""The root attrs of a Trace: what every run records, and how nested values are stored.

A netCDF attribute holds a number or a string, so the nested values of a run's record
(settings, versions, ``None``) are written as JSON behind the prefix ``"json:"``
(:data:`JSON_PREFIX`) and booleans as 0/1 (:func:`encode_attr`); :func:`trace_attr`
reads an attribute back decoded (:func:`decode_attr`), whether the Trace is fresh or was
loaded from a file. :func:`run_attrs` is the record every backend writes.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["run_attrs", "trace_attr", "versions", "encode_attr", "decode_attr", "JSON_PREFIX"]

#: The prefix of a root attr stored as JSON text (a dict, list, tuple or None).
JSON_PREFIX = "json:"


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of pplpatterning and the given packages."""
    out = {}
    for name in ("pplpatterning", "numpy", "xarray", "arviz-base", "arviz-stats", *packages):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def encode_attr(value: Any) -> Any:
    """A root attr value as netCDF can store it: booleans as 0/1, dicts, lists, tuples and
    None as ``"json:" + JSON``, NumPy scalars as Python numbers, anything else as it is."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if value is None or isinstance(value, (dict, list, tuple)):
        return JSON_PREFIX + json.dumps(value, sort_keys=True, default=float)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def decode_attr(value: Any) -> Any:
    """The inverse of :func:`encode_attr` for JSON values (booleans stay 0/1); NumPy
    scalars, as netCDF reads numbers back, become Python numbers."""
    if isinstance(value, str) and value.startswith(JSON_PREFIX):
        return json.loads(value[len(JSON_PREFIX):])
    if isinstance(value, np.generic):
        return value.item()
    return value


def trace_attr(trace: xr.DataTree, key: str, default: Any = ...) -> Any:
    """Read a root attribute of a Trace, decoding JSON-encoded values."""
    if key not in trace.attrs:
        if default is ...:
            raise KeyError(f"This trace has no attribute {key!r}; it has {sorted(trace.attrs)}.")
        return default
    return decode_attr(trace.attrs[key])


def run_attrs(post, settings, *, backend: str, dtype: str, packages: tuple[str, ...], incomplete_reason: str | None,
              sampling_seconds: float, evaluation_seconds: float) -> dict[str, Any]:
    """The root attrs every backend writes: the posterior, the settings, the run's provenance."""
    return {
        **post.describe(),
        "backend": backend,
        "sampler": settings.sampler,
        "seed": settings.seed,
        "loss_estimate": settings.loss_estimate,
        "eval_size": settings.resolved_eval_size(post.n) or 0,
        "batch_size": settings.resolved_batch_size(post.n),
        "settings": settings.describe(),
        "lambda_exact": post.model.lam,
        "multiplicity": post.model.multiplicity,
        "dtype": dtype,
        "forward_dtype": settings.forward_dtype or dtype,
        "incomplete": int(incomplete_reason is not None),
        "incomplete_reason": incomplete_reason or "",
        "sampling_seconds": sampling_seconds,
        "evaluation_seconds": evaluation_seconds,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "versions": versions(*packages),
    }
