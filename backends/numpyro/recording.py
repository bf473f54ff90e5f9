"""The values of every kept draw, evaluated inside the compiled sampling loop (issue 11).

:class:`Recorder` binds a :class:`~pplpatterning.sampling.record.DrawRecord` to the JAX arrays
of a posterior and its probes; the driver (.driver) calls :meth:`Recorder.values` on the
chains' positions after every kept draw's steps, inside the same ``lax.scan``, and folds the
per-sample losses into the accumulator with :meth:`Recorder.update` at every
``thinning``-th kept draw. The formulas are :func:`pplpatterning.sampling.record.draw_values`,
shared with the Pyro backend. No draw's parameters leave the loop unless the trace keeps them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pplpatterning.sampling.record import (DrawRecord, DrawValues, draw_values, init_rows, loss_rows,
                                           observable_arrays, phi_vector, record_rows, sampler_loss)
from pplpatterning.spec.probes import ProbePlan

from .precision import as_data, in_float64
from .spec import PosteriorArgs, full_params

__all__ = ["Recorder", "RecordArgs", "record_args"]


class RecordArgs(NamedTuple):
    """The recorded loss's rows and the probe arrays, passed as traced arguments (kinds kept:
    integer ids stay integer)."""

    data: dict[str, jax.Array]  # the rows of L: the training data, or its evaluation subset
    weights: jax.Array
    loss_at_centre: jax.Array
    datasets: dict[str, dict[str, jax.Array]]
    train_index: jax.Array
    held_out: dict[str, jax.Array] | None
    shifts: tuple  # (φ(w*) (K+1,), ΔL_z(w*) (R,)) for the streamed sums; () otherwise
    observables: dict  # {name: the observable's fixed arrays} (record.observable_arrays)


@in_float64
def record_args(plan: ProbePlan | None, args: PosteriorArgs, record: DrawRecord, dtype: str = "float64") -> RecordArgs:
    """The rows of the recorded loss (``record.loss_rows`` of ``args``, or all of them) and the
    probe data of ``plan`` as JAX arrays (shifts filled in by :meth:`Recorder.with_shifts`)."""
    index = None if record.loss_rows is None else jnp.asarray(record.loss_rows)
    data, weights, lstar = loss_rows(record, args.data, args.weights, args.loss_at_centre, jnp, index)
    obs = observable_arrays(record, jnp.asarray)
    if plan is None:
        return RecordArgs(data, weights, lstar, {}, jnp.zeros(0, dtype=jnp.int64), None, (), obs)
    held = None if plan.held_out is None else {k: as_data(v, dtype) for k, v in plan.held_out.items()}
    return RecordArgs(data, weights, lstar,
                      {name: {k: as_data(v, dtype) for k, v in d.items()} for name, d in plan.datasets.items()},
                      jnp.asarray(plan.train_index, dtype=jnp.int64), held, (), obs)


class Recorder:
    """What the driver evaluates at each kept draw (a static, hashable-by-identity object)."""

    def __init__(self, record: DrawRecord, loss_fn, num_chains: int, token_loss_fn=None):
        self.record = record
        self.loss_fn = loss_fn
        self.token_loss_fn = token_loss_fn
        self.num_chains = int(num_chains)

    def one(self, z: dict, args: PosteriorArgs, rargs: RecordArgs, known=None) -> DrawValues:
        """The values of one chain's position ``z`` (the sampled parameters' pytree);
        ``known``: the sampler's own (L^ρ, ΔL^ρ) at z, if it carries them."""
        return draw_values(self.record, self.loss_fn, full_params(z, args), data=rargs.data, weights=rargs.weights,
                           loss_at_centre=rargs.loss_at_centre, consts=args.consts, datasets=rargs.datasets,
                           train_index=rargs.train_index, held_out=rargs.held_out, xp=jnp,
                           token_loss_fn=self.token_loss_fn, known_loss=known, observable_arrays=rargs.observables)

    def values(self, z: dict, args: PosteriorArgs, rargs: RecordArgs, state=None) -> DrawValues:
        """The values of every chain: ``z`` is (C, ...) per leaf, or unbatched when C = 1;
        ``state``: the kernel state, whose rule state may carry the full-batch loss (MALA)."""
        if not self._batched(z, args):
            z = jax.tree.map(lambda x: x[None], z)
        rule = getattr(state, "rule", None)
        known = sampler_loss(self.record, rule)
        if known is None:
            return jax.vmap(lambda zi: self.one(zi, args, rargs))(z)
        return jax.vmap(lambda zi, k: self.one(zi, args, rargs, k))(z, known)

    @staticmethod
    def _batched(z: dict, args: PosteriorArgs) -> bool:
        name = next(iter(z))
        return z[name].ndim == args.centre[name].ndim + 1

    @property
    def per_sample(self) -> bool:
        return self.record.per_sample != "none"

    def init_acc(self) -> Any:
        return init_rows(self.record, self.num_chains, jnp)

    def update(self, acc, j, values: DrawValues, rargs: RecordArgs):
        """Fold the per-sample values of kept draw ``j`` into ``acc`` when it is a recorded draw."""
        t = self.record.thinning
        return jax.lax.cond(j % t == 0, lambda a: record_rows(self.record, a, j // t, values, rargs.shifts, jnp),
                            lambda a: a, acc)

    @in_float64
    def with_shifts(self, args: PosteriorArgs, rargs: RecordArgs) -> RecordArgs:
        """``rargs`` with the streamed sums' shifts: φ(w*) and ΔL_z(w*) = l_z(w*) - L_n^ρ(w*)."""
        if self.record.per_sample != "streamed":
            return rargs
        at_centre = jax.jit(lambda a, r: self.values(a.centre, a, r))(args, rargs)
        shifts = (phi_vector(self.record, at_centre, jnp)[0], (at_centre.rows - at_centre.loss[:, None])[0])
        return rargs._replace(shifts=shifts)


def scalar_series(values: DrawValues) -> dict[str, Any]:
    """The (chains,) scalars of one draw that the trace keeps as series."""
    return {"loss": values.loss, "delta": values.delta, "observables": values.observables,
            "dataset_losses": values.dataset_losses}


def to_numpy(acc) -> Any:
    """The accumulator on the host (a Moments of arrays, a buffer, or None)."""
    return None if acc is None else jax.tree.map(np.asarray, jax.device_get(acc))
