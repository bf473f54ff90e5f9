"""Weight- and data-refined LLCs of every component, in one call.

For a centre w* split into components C (a head's slices of W_Q/W_K/W_V/W_O, an MLP, the
embedding) and data sets q' (the training data, code, a held-out distribution), the refined
LLC (docs/math.md §2; Wang, Hoogland, van Wingerden, Furman & Murfet 2024, arXiv 2410.02984) is

    λ̂_C(q') = nβ (E_{p_{q'}, C}[L_{q'}(w)] - L_{q'}(w*)),

the expectation over the posterior tempered by the loss of q' in which only C moves and the
rest is frozen at w*. :func:`refined_llcs` estimates every (component, data set) pair: each
pair is one job of :func:`~pplpatterning.workflows.trajectory.llc_trajectory` on the single
checkpoint w*, so the jobs share its validation before sampling, its compiled program per
restriction shape, its seeds, its store and its Dask/executor fan-out.

Seeds: the job of component C gets ``job_seed(seed, 0, C)`` under every data set, so the
data sets are compared with common random numbers (the differences λ̂_C(q') - λ̂_C(q'') have
less noise than either estimate); their MCSEs are still each run's own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from pplpatterning.spec.checkpoints import Checkpoint
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.spec.refine import refine

__all__ = ["refined_llcs", "TRAINING"]

#: The ``data`` coordinate of the posterior's own training data.
TRAINING = "training"


def refined_llcs(
    posterior: GibbsPosterior,
    components: Mapping[str, Any],
    *,
    data: Mapping[str, Mapping[str, Any]] | None = None,
    store: str | os.PathLike | None = None,
    client: Any = None,
    progress_bar: bool = True,
    seed: int = 0,
    **sample_kwargs: Any,
) -> xr.Dataset:
    """λ̂ of the whole model and the refined λ̂_C(q') of each component C on each data set q'.

    Parameters
    ----------
    posterior
        The posterior at the centre w* (its own restriction, if any, is the ``"whole"`` row).
    components
        ``{name: C}``, C being parameter names or a mask mapping ``{name: boolean array}``
        (``transformer_components(config)``, ``hf_components(model)``).
    data
        ``{name: data set q'}`` of the data-refined LLCs; the training data are always
        included, as ``"training"`` (first). A data set has the posterior's data keys.
    store, client, progress_bar, seed, **sample_kwargs
        As in :func:`~pplpatterning.workflows.trajectory.llc_trajectory`: a store per data set
        goes in ``store/<data name>``, so a rerun skips the finished jobs.

    Returns
    -------
    xarray.Dataset
        Dims ``component`` (``"whole"`` first) and ``data`` (``"training"`` first), variables
        ``llc``, ``llc_mcse``, ``rhat``, ``ess``, ``ess_tail``, ``seconds``, ``seed``,
        ``incomplete``, ``num_draws_used``, and ``loss_at_centre`` (over ``data``: L_{q'}(w*)).
    """
    from pplpatterning.workflows.trajectory import llc_trajectory

    if not isinstance(posterior, GibbsPosterior):
        raise TypeError(f"`posterior` must be a GibbsPosterior, got {type(posterior).__name__}.")
    if not isinstance(components, Mapping) or not components:
        raise TypeError("`components` must be a non-empty mapping {component name: parameter names or mask}, "
                        f"got {components!r}; for the whole model alone use pp.llc(pp.sample(posterior)).")
    if data is not None and not isinstance(data, Mapping):
        raise TypeError("`data` must be a mapping {data-set name: {data key: array}}, e.g. "
                        "{'code': {'tokens': code_tokens}}.")
    sets: dict[str, Mapping | None] = {TRAINING: None}
    for name, q in (data or {}).items():
        if str(name) == TRAINING:
            raise ValueError(f"`data` may not use the name {TRAINING!r}: it is the posterior's own training data.")
        if not isinstance(q, Mapping):
            raise TypeError(f"`data[{name!r}]` must be a mapping {{data key: array}}, got {type(q).__name__}.")
        missing = set(posterior.data) - set(q)
        if missing:
            raise ValueError(f"`data[{name!r}]` lacks the data key(s) {sorted(missing)} the model's loss reads.")
        sets[str(name)] = q
    centre = [Checkpoint(0, {k: np.asarray(v) for k, v in posterior.centre.items()})]
    parts = []
    for name, q in sets.items():
        where = None if store is None else os.path.join(os.fspath(store), name)
        ds = llc_trajectory(centre, posterior, components=components, data=q, store=where, client=client,
                            progress_bar=progress_bar, seed=seed, **sample_kwargs)
        parts.append(ds.isel(checkpoint=0, drop=True))
    out = xr.concat(parts, dim=xr.DataArray(np.array(list(sets), dtype=object), dims="data", name="data"),
                    combine_attrs="drop_conflicts").transpose("component", "data", ...)
    # a trajectory's loss_at_centre is the training loss; here each data set's own L_q'(w*)
    losses = [posterior.loss_at_centre if q is None else refine(posterior, data=q).loss_at_centre for q in sets.values()]
    out["loss_at_centre"] = xr.DataArray(np.asarray(losses, dtype=np.float64), dims=("data",),
                                         attrs={"long_name": "L_q'(w*): the loss of each data set at the centre"})
    return out
