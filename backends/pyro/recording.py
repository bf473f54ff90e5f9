"""The values of every kept draw, evaluated in the sampling loop as the draw is made (issue 11).

:class:`Recorder` evaluates :func:`pplpatterning.sampling.record.draw_values` (the formulas
shared with the NumPyro backend) on the kept positions of a batch of chains
(``torch.func.vmap`` over chains, no gradients), writes the scalars into (chain, draw)
series and folds the per-sample losses into the stored buffer or the streamed float64 sums
(:func:`~pplpatterning.sampling.record.record_rows`). The update-rule loop (.chains) calls it
for all chains at once, NUTS/HMC (.hmc) for one chain at a time. Nothing keeps a draw's
parameters unless the trace asks for them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.func import vmap

from pplpatterning.sampling.evaluation import Evaluation
from pplpatterning.sampling.record import (DrawRecord, DrawValues, draw_values, init_rows, loss_rows,
                                           observable_arrays, phi_vector, record_rows, sampler_loss)
from pplpatterning.spec.probes import ProbePlan
from pplpatterning.trace.moments import Moments

from .spec import DTYPE, TorchPosterior, as_data_tensor, xp

__all__ = ["Recorder"]


def _rows_view(acc, chains: slice):
    """The accumulator of the chains ``chains`` (views: in-place updates reach ``acc``)."""
    if isinstance(acc, Moments):
        return Moments(*(a[chains] for a in acc))
    return acc[chains]


class Recorder:
    """The recorded values of a run of ``num_chains`` × ``num_draws`` kept draws."""

    def __init__(self, record: DrawRecord, tp: TorchPosterior, plan: ProbePlan | None, num_chains: int,
                 token_loss_fn=None):
        self.record, self.tp = record, tp
        self.token_loss_fn = token_loss_fn
        C, D = num_chains, record.num_draws
        as_t = lambda d: {k: as_data_tensor(v, tp.dtype).to(tp.device) for k, v in d.items()}  # noqa: E731
        index = None if record.loss_rows is None else \
            torch.tensor(np.array(record.loss_rows, dtype=np.int64), device=tp.device)
        self.data, self.weights, self.loss_at_centre = loss_rows(record, tp.data, tp.weights, tp.loss_at_centre, xp,
                                                                 index)
        self.datasets = {name: as_t(d) for name, d in plan.datasets.items()} if plan is not None else {}
        self.held_out = as_t(plan.held_out) if plan is not None and plan.held_out is not None else None
        index = plan.train_index if plan is not None else np.zeros(0, dtype=np.int64)
        self.train_index = torch.tensor(np.array(index, dtype=np.int64), device=tp.device)
        names = (["loss", "delta"] if record.with_loss else []) + [f"obs/{k}" for k in record.observable_names]
        names += [f"probe/{k}" for k in record.datasets]
        self.series = {name: torch.full((C, D), math.nan, dtype=DTYPE, device=tp.device) for name in names}
        # the observables' fixed arrays on the run's device once (dtypes kept), not per draw
        self.observable_arrays = observable_arrays(record, lambda v: torch.tensor(np.asarray(v), device=tp.device))
        self.acc = init_rows(record, C, xp, device=tp.device)
        self._values = vmap(self._one)  # over chains: z, and (L, ΔL) when the sampler carries them
        self.shifts = self._shifts() if record.per_sample == "streamed" else ()

    def _one(self, z: torch.Tensor, known=None) -> dict:
        tp = self.tp
        v = draw_values(self.record, tp.loss_fn, tp.full_params(tp.unflatten(z)), data=self.data,
                        weights=self.weights, loss_at_centre=self.loss_at_centre, consts=tp.consts,
                        datasets=self.datasets,
                        train_index=self.train_index, held_out=self.held_out, xp=xp,
                        token_loss_fn=self.token_loss_fn, known_loss=known,
                        observable_arrays=self.observable_arrays)
        return {k: x for k, x in v._asdict().items() if x is not None}  # vmap returns tensors only

    def values(self, z: torch.Tensor, state=None) -> DrawValues:
        """The values at the positions ``z: (c, d)`` of c chains; ``state``: the rule's state,
        which may carry the full-batch loss at z (MALA: no second forward pass)."""
        with torch.no_grad():
            known = sampler_loss(self.record, state)
            out = self._values(z) if known is None else self._values(z, known)
        return DrawValues(out.get("loss"), out.get("delta"), out.get("observables", {}),
                          out.get("dataset_losses", {}), out.get("rows"))

    def _shifts(self):
        at_centre = self.values(self.tp.centre_flat()[None])
        return phi_vector(self.record, at_centre, xp)[0], (at_centre.rows - at_centre.loss[:, None])[0]

    def keep(self, chains: slice, j: int, z: torch.Tensor, state=None) -> None:
        """Record kept draw ``j`` of the chains ``chains`` at their positions ``z: (c, d)``
        (``state``: the update rule's state there, see :meth:`values`)."""
        v = self.values(z, state)
        if self.record.with_loss:
            self.series["loss"][chains, j] = v.loss
            self.series["delta"][chains, j] = v.delta
        for name, x in v.observables.items():
            self.series[f"obs/{name}"][chains, j] = x
        for name, x in v.dataset_losses.items():
            self.series[f"probe/{name}"][chains, j] = x
        t = self.record.thinning
        if self.record.per_sample != "none" and j % t == 0:
            record_rows(self.record, _rows_view(self.acc, chains), j // t, v, self.shifts, xp)

    def evaluation(self, chains, num_done: int) -> Evaluation:
        """The recorded values of the chains ``chains`` (an index) and their first ``num_done`` draws."""
        get = lambda name: self.series[name][chains, :num_done].cpu().numpy() if name in self.series else None  # noqa: E731
        obs = {k: get(f"obs/{k}") for k in self.record.observable_names}
        means = {k: get(f"probe/{k}") for k in self.record.datasets}
        acc = None if self.acc is None else _rows_view(self.acc, chains)
        stored = acc.cpu().numpy() if self.record.per_sample == "stored" else None
        moments = Moments(*(a.cpu().numpy() for a in acc)) if self.record.per_sample == "streamed" else None
        shifts = tuple(s.cpu().numpy() for s in self.shifts) if moments is not None else None
        return Evaluation(get("loss"), get("delta"), obs, means, stored, moments=moments, moment_shifts=shifts)
