"""Stochastic-gradient Langevin dynamics (Welling & Teh 2011; MATH.md §8).

    w ← w - (ε/2) [nβ ∇L_batch^ρ(w) + γ (w - w*)] + √ε ξ,   ξ ~ N(0, I)

The minibatch loss and loss difference recorded with each state are those of the batch
used for the step, evaluated at the pre-step position.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .base import VectorizedKernel, batch_energy_and_grad, tree_norm, tree_normal


class SGLDState(NamedTuple):
    i: jax.Array
    z: dict
    loss: jax.Array
    loss_delta: jax.Array
    grad_norm: jax.Array
    rng_key: jax.Array


class SGLD(VectorizedKernel):
    def _init_one(self, key, z, args):
        zero = jnp.zeros((), dtype=args.n_beta.dtype)
        return SGLDState(jnp.array(0), z, zero, zero, zero, key)

    def _sample_one(self, state, args):
        key, k_batch, k_noise = jax.random.split(state.rng_key, 3)
        _, grad, loss, delta = batch_energy_and_grad(k_batch, state.z, self.loss_fn, args, self.batch_size)
        noise = tree_normal(k_noise, state.z)
        eps = self.step_size
        z = jax.tree.map(lambda w, g, xi: w - 0.5 * eps * g + jnp.sqrt(eps) * xi, state.z, grad, noise)
        return SGLDState(state.i + 1, z, loss, delta, tree_norm(grad), key)
