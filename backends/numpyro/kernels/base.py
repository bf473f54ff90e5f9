"""Shared machinery of the custom kernels: vectorised chains and minibatch potentials."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.infer.mcmc import MCMCKernel
from numpyro.util import is_prng_key

from pplpatterning.spec.posterior import localization_energy, per_sample_loss_delta

from ..spec import PosteriorArgs

__all__ = ["VectorizedKernel", "batch_energy_and_grad", "tree_norm", "tree_normal"]


def _draw_batch(key, args: PosteriorArgs, batch_size: int):
    """A uniform minibatch drawn with replacement (unbiased for every L_n^ρ term)."""
    n = args.weights.shape[0]
    if batch_size >= n:  # static: full batch, no sampling
        return args.data, args.weights, args.loss_at_centre
    idx = jax.random.randint(key, (batch_size,), 0, n)
    batch = {k: v[idx] for k, v in args.data.items()}
    return batch, args.weights[idx], args.loss_at_centre[idx]


def _energy(z, loss_fn, args: PosteriorArgs, batch, weights, loss_at_centre):
    params = dict(args.frozen)
    params.update(z)
    loss, delta = per_sample_loss_delta(loss_fn, params, batch, weights, loss_at_centre, args.consts, jnp)
    U = args.n_beta * loss + localization_energy(z, args.centre, args.gamma, jnp)
    return U, (loss, delta)


def batch_energy_and_grad(key, z, loss_fn, args: PosteriorArgs, batch_size: int):
    """U_batch(z), ∇U_batch(z) and the batch's (L^ρ, L^ρ - L^ρ(w*)) at z."""
    batch, weights, lstar = _draw_batch(key, args, batch_size)
    (U, (loss, delta)), grad = jax.value_and_grad(_energy, has_aux=True)(z, loss_fn, args, batch, weights, lstar)
    return U, grad, loss, delta


def tree_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree)))


def tree_normal(key, tree):
    """Standard normal noise with the structure of ``tree``."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


class VectorizedKernel(MCMCKernel):
    """Base class: subclasses define ``_init_one(key, z, args)`` and ``_sample_one(state, args)``.

    ``model_args`` is ``(PosteriorArgs,)``. With a batch of keys (vectorised chains),
    init and sample are vmapped over the chain dimension of ``init_params`` and the state.
    """

    sample_field = "z"

    def __init__(self, loss_fn, step_size: float, batch_size: int):
        self.loss_fn = loss_fn
        self.step_size = float(step_size)
        self.batch_size = int(batch_size)
        self._num_warmup = 0
        self._sample_fn = None

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        (args,) = model_args
        self._num_warmup = int(num_warmup)
        if is_prng_key(rng_key):
            self._sample_fn = self._sample_one
            return self._init_one(rng_key, init_params, args)
        self._sample_fn = jax.vmap(self._sample_one, in_axes=(0, None))
        return jax.vmap(self._init_one, in_axes=(0, 0, None))(rng_key, init_params, args)

    def sample(self, state, model_args, model_kwargs):
        (args,) = model_args
        return self._sample_fn(state, args)

    # subclasses
    def _init_one(self, key, z, args):  # pragma: no cover - abstract
        raise NotImplementedError

    def _sample_one(self, state, args):  # pragma: no cover - abstract
        raise NotImplementedError
