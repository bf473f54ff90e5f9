"""The Trace: one ArviZ DataTree that every backend returns, assembled by :func:`build_trace`.

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
  model, settings and library versions (:func:`pplpatterning.trace.attrs.run_attrs`).
  Nested values are stored as JSON strings so that a Trace survives netCDF exactly
  (:mod:`pplpatterning.trace.attrs`); files: :mod:`pplpatterning.trace.io`.

Everything here is numpy/xarray only: a saved Trace can be analysed without JAX or torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from arviz_base import from_dict

from pplpatterning.trace.attrs import encode_attr

__all__ = ["build_trace"]


def build_trace(
    *,
    posterior: Mapping[str, np.ndarray],
    sample_stats: Mapping[str, np.ndarray],
    observables: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any],
    param_dims: Mapping[str, list[str]] | None = None,
    extra_groups: Mapping[str, xr.Dataset] | None = None,
    param_draws: np.ndarray | None = None,
) -> xr.DataTree:
    """Assemble a Trace from (chain, draw, ...) arrays.

    ``sample_stats`` must contain ``loss`` and ``loss_delta``. ``extra_groups`` are added
    as they are (the probe groups built by ``ProbePlan.assemble``). ``param_draws``: the
    kept-draw indices of the ``posterior`` draws when only every k-th draw's parameters were
    kept (``sample(keep_params=k)``).
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
    if param_draws is not None and "posterior" in tree.children:
        tree["posterior"] = xr.DataTree(tree["posterior"].to_dataset().assign_coords(draw=np.asarray(param_draws)))
    for name in ("posterior", "observables"):  # always present, possibly empty
        if name not in tree.children:
            coords = {"chain": np.arange(shape[0]), "draw": np.arange(shape[1])}
            tree[name] = xr.DataTree(xr.Dataset(coords=coords))
    for name, ds in (extra_groups or {}).items():
        if name in tree.children:
            raise ValueError(f"`extra_groups` would replace the Trace group {name!r}.")
        tree[name] = xr.DataTree(ds)
    tree.attrs.update({k: encode_attr(v) for k, v in attrs.items()})
    return tree
