"""What every kept draw records, evaluated inside the sampling loop (issue 11: streaming).

At every kept draw a backend evaluates, on each chain's parameters, one forward pass of the
training data (when the run records the full-batch loss) and from it:

- L_n^ρ(w) = (1/n) Σ_i c ρ_i l_i(w) and ΔL_n^ρ = (1/n) Σ_i c ρ_i (l_i(w) - l_i(w*)), the
  difference taken per sample and in float64 whatever the forward precision (docs/math.md §2);
- the recorded training samples' l_z(w), read off the same pass (no second forward pass);
- the observables φ(w), the probe data sets' L_{q'}(w) and the held-out points' l_z(w).

Scalars are kept as (chain, draw) series. The per-sample losses are either stored
((chain, recorded draw, row): small runs, ``Probes(stream=False)``) or streamed into the float64
batch sums of :mod:`pplpatterning.trace.moments` (memory independent of the number of draws),
at every ``Probes.thinning``-th kept draw. Nothing else keeps a draw's parameters, so peak
memory does not grow with the number of draws beyond the scalar series (and the stored
per-sample series when asked for).

This module is the one definition of those per-draw values and of the per-sample update,
written against the array API: both backends call :func:`draw_values` (vectorised over
chains by their framework) and :func:`record_rows`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from pplpatterning.samplers.settings import SamplerSettings
from pplpatterning.spec.probes import ProbePlan
from pplpatterning.trace.moments import add_draw, batch_index, init_moments, num_batches

__all__ = ["DrawRecord", "DrawValues", "make_record", "evaluation_subset", "reuses_sampler_loss", "sampler_loss",
           "loss_rows", "draw_values", "observable_arrays", "phi_vector", "record_rows", "init_rows",
           "PER_SAMPLE_MODES"]

PER_SAMPLE_MODES = ("none", "stored", "streamed")


@dataclass(frozen=True, eq=False)
class DrawRecord:
    """The static description of what a kept draw records (hashed by identity: one compiled
    program per record)."""

    with_loss: bool
    observables: tuple[tuple[str, Callable[..., Any]], ...]  # sorted by name
    datasets: tuple[str, ...]                                 # probe data sets, sorted
    per_sample: str = "none"                                  # one of PER_SAMPLE_MODES
    thinning: int = 1                                         # per-sample rows every `thinning`-th kept draw
    num_draws: int = 0                                        # kept draws per chain
    num_batches: int = 1                                      # streamed: batches per chain
    num_rows: int = 0                                         # recorded training samples + held-out points
    token_reduction: str | None = None                        # per-token rows: how tokens make l_i
    loss_rows: Any = None                                     # loss_estimate="subset": the rows of L

    @property
    def num_recorded(self) -> int:
        """Kept draws per chain at which per-sample losses are recorded: ⌈D / thinning⌉."""
        return math.ceil(self.num_draws / self.thinning)

    @property
    def observable_names(self) -> list[str]:
        return [name for name, _ in self.observables]

    @property
    def evaluates_anything(self) -> bool:
        return bool(self.with_loss or self.observables or self.datasets or self.per_sample != "none")


def evaluation_subset(settings: SamplerSettings, n: int) -> np.ndarray | None:
    """The fixed rows on which ``loss_estimate="subset"`` evaluates L at every kept draw:
    ``eval_size`` distinct rows drawn once, uniformly, from a generator seeded by
    (``seed``, 1) (so the sampler's own stream is untouched), sorted; None otherwise."""
    m = settings.resolved_eval_size(n)
    if m is None:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 1]))
    return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)


def make_record(settings: SamplerSettings, observables: Mapping[str, Callable[..., Any]],
                plan: ProbePlan | None, *, num_samples: int = 0) -> DrawRecord:
    """The record of a run: the full loss (or its fixed evaluation subset) unless the
    sampler's minibatch loss is recorded; per-sample losses stored or streamed as
    ``plan.stream`` decided."""
    mode = "none"
    if plan is not None and plan.num_per_sample:
        mode = "streamed" if plan.stream else "stored"
    thinning = plan.thinning if plan is not None else 1
    record = DrawRecord(
        with_loss=not settings.uses_minibatch_loss,
        observables=tuple(sorted(observables.items())),
        datasets=tuple(sorted(plan.datasets)) if plan is not None else (),
        per_sample=mode, thinning=thinning, num_draws=settings.num_draws,
        num_rows=plan.num_per_sample if plan is not None else 0,
        token_reduction=plan.token_reduction if plan is not None else None,
        loss_rows=evaluation_subset(settings, num_samples),
    )
    if mode == "streamed":
        record = DrawRecord(**{**record.__dict__, "num_batches": num_batches(record.num_recorded)})
    return record


class DrawValues(NamedTuple):
    """One draw's values on one chain (backend arrays; a backend stacks them over chains)."""

    loss: Any                  # L_n^ρ(w) (float64), or None without the full loss
    delta: Any                 # ΔL_n^ρ(w) (float64), or None
    observables: dict          # {name: φ(w)}
    dataset_losses: dict       # {probe data set: L_q'(w)}
    rows: Any                  # l_z(w) of the recorded training samples then held-out points, or None


def _rows_and_losses(record: DrawRecord, loss_fn, token_loss_fn, params, batch, consts, xp):
    """(rows, per-sample losses) of ``batch`` in float64: rows are l_z, or with per-token rows
    the flattened l_{z,t} (the per-sample losses then their reduction: one forward pass)."""
    if record.token_reduction is None:
        losses = xp.astype(loss_fn(params, batch, consts, xp), xp.float64)
        return losses, losses
    tokens = xp.astype(token_loss_fn(params, batch, consts, xp), xp.float64)
    reduced = xp.mean(tokens, axis=-1) if record.token_reduction == "mean" else xp.sum(tokens, axis=-1)
    return tokens, reduced


def reuses_sampler_loss(record: DrawRecord) -> bool:
    """Whether a sampler that carries the full-batch (L^ρ, ΔL^ρ) of its current position (MALA)
    saves the record its forward pass: nothing else of the training rows is needed."""
    return record.with_loss and record.per_sample == "none" and record.loss_rows is None


def sampler_loss(record: DrawRecord, rule_state):
    """(L^ρ, ΔL^ρ) the update rule's state carries at its position (MALA's ``loss``,
    ``loss_delta``) when the record can use them (:func:`reuses_sampler_loss`), else None."""
    if hasattr(rule_state, "loss_delta") and reuses_sampler_loss(record):
        return rule_state.loss, rule_state.loss_delta
    return None


def loss_rows(record: DrawRecord, data, weights, loss_at_centre, xp, index):
    """The rows on which the record evaluates L: all of them, or with ``loss_estimate="subset"``
    the fixed ``record.loss_rows`` (``index``: those rows as a backend integer array)."""
    if record.loss_rows is None:
        return data, weights, loss_at_centre
    take = lambda v: xp.take(v, index, axis=0)  # noqa: E731
    return {k: take(v) for k, v in data.items()}, take(weights), take(loss_at_centre)


def draw_values(record: DrawRecord, loss_fn, params, *, data, weights, loss_at_centre, consts, datasets,
                train_index, held_out, xp, token_loss_fn=None, known_loss=None,
                observable_arrays=None) -> DrawValues:
    """The values of one draw (see the module docstring). ``datasets``: {name: batch};
    ``train_index``: integer array of the recorded training sequences; ``held_out``: a batch
    or None; ``token_loss_fn``: the model's per-token loss (per-token rows). The training
    rows come from the loss's forward pass; ``known_loss`` = (L^ρ, ΔL^ρ) the sampler already
    computed at this position replaces that pass when :func:`reuses_sampler_loss`;
    ``observable_arrays``: {name: the backend arrays of ``Observable.arrays()``}, passed to
    ``evaluate`` (:func:`observable_arrays`)."""
    loss = delta = rows = None
    if known_loss is not None and reuses_sampler_loss(record):
        loss, delta = (xp.astype(xp.asarray(v), xp.float64) for v in known_loss)
    elif record.with_loss:
        per_row, losses = _rows_and_losses(record, loss_fn, token_loss_fn, params, data, consts, xp)
        loss = xp.mean(weights * losses)
        delta = xp.mean(weights * (losses - loss_at_centre))
        if record.per_sample != "none":
            parts = [xp.take(per_row, train_index, axis=0)] if train_index.shape[0] else []
            if held_out is not None:
                parts.append(_rows_and_losses(record, loss_fn, token_loss_fn, params, held_out, consts, xp)[0])
            parts = [xp.reshape(p, (-1,)) for p in parts]
            rows = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
    arrays = observable_arrays or {}
    obs = {name: xp.astype(xp.asarray(fn.evaluate(params, arrays[name], xp) if name in arrays else fn(params, xp)),
                           xp.float64)
           for name, fn in record.observables}
    means = {name: xp.astype(xp.mean(loss_fn(params, datasets[name], consts, xp)), xp.float64)
             for name in record.datasets}
    return DrawValues(loss, delta, obs, means, rows)


def observable_arrays(record: DrawRecord, convert) -> dict[str, Any]:
    """{name: the fixed arrays of each observable that has them} as backend arrays
    (``convert`` maps one NumPy array to the backend, dtype kept), for :func:`draw_values`."""
    out = {}
    for name, fn in record.observables:
        arrays = fn.arrays() if callable(getattr(fn, "arrays", None)) and callable(getattr(fn, "evaluate", None)) else None
        if arrays is not None:
            out[name] = _convert_tree(arrays, convert)
    return out


def _convert_tree(arrays, convert):
    return {k: _convert_tree(v, convert) if isinstance(v, Mapping) else convert(v) for k, v in arrays.items()}


def phi_vector(record: DrawRecord, values: DrawValues, xp):
    """The streamed φ of a batch of chains' values: (C, K + 1), the observables in order,
    then ΔL_n^ρ (:data:`pplpatterning.trace.moments.MOMENTS_LOSS_DELTA`)."""
    cols = [values.observables[name] for name in record.observable_names] + [values.delta]
    return xp.stack([xp.reshape(c, (-1,)) for c in cols], axis=1)


def init_rows(record: DrawRecord, num_chains: int, xp, **array_kwargs):
    """The per-sample accumulator: a (C, J, R) float64 buffer (stored; NaN until recorded), a
    zero :class:`Moments` (streamed), or None."""
    if record.per_sample == "stored":
        return xp.full((num_chains, record.num_recorded, record.num_rows), math.nan, dtype=xp.float64,
                       **array_kwargs)
    if record.per_sample == "streamed":
        return init_moments(num_chains, record.num_batches, record.num_rows, len(record.observables) + 1, xp,
                            **array_kwargs)
    return None


def _set_at(a, j, x):
    """``a[:, j] = x``: functionally for JAX arrays, in place for NumPy and torch."""
    if hasattr(a, "at"):
        return a.at[:, j].set(x)
    a[:, j] = x
    return a


def record_rows(record: DrawRecord, acc, j_recorded, values: DrawValues, shifts, xp):
    """Add the per-sample values of the ``j_recorded``-th recorded draw of every chain
    (``values`` stacked over chains) to ``acc``. ``shifts``: (φ(w*), ΔL_z(w*)) for the
    streamed sums (see :mod:`pplpatterning.trace.moments`)."""
    if record.per_sample == "stored":
        return _set_at(acc, j_recorded, values.rows)
    if record.per_sample == "streamed":
        b = batch_index(j_recorded, record.num_recorded, record.num_batches)
        dl = values.rows - values.loss[:, None]
        return add_draw(acc, b, phi_vector(record, values, xp), dl, shifts[0], shifts[1], xp)
    return acc

