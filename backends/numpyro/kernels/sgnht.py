"""Stochastic-gradient Nosé–Hoover thermostat (Ding, Fang, Babbush, Chen, Skeel & Neven 2014).

    p ← p - ε ξ p - ε ∇U_batch(w) + √(2 A ε) η,   η ~ N(0, I)
    w ← w + ε p
    ξ ← ξ + ε (pᵀp / d - 1)

The thermostat ξ adapts to the unknown minibatch-gradient noise so that the kinetic
energy per dimension stays at 1/2; it starts at the diffusion A and p at N(0, I).
(devinterp's SGNHT never updates ξ or p; this one does.) The thermostat is recorded as
``thermostat`` in sample_stats.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .base import VectorizedKernel, batch_energy_and_grad, tree_norm, tree_normal


class SGNHTState(NamedTuple):
    i: jax.Array
    z: dict
    p: dict
    thermostat: jax.Array
    loss: jax.Array
    loss_delta: jax.Array
    grad_norm: jax.Array
    rng_key: jax.Array


class SGNHT(VectorizedKernel):
    def __init__(self, loss_fn, step_size, batch_size, diffusion=0.01):
        super().__init__(loss_fn, step_size, batch_size)
        if not diffusion > 0:
            raise ValueError(f"`diffusion` must be positive, got {diffusion!r}.")
        self.diffusion = float(diffusion)

    def _init_one(self, key, z, args):
        key, k_p = jax.random.split(key)
        zero = jnp.zeros((), dtype=args.n_beta.dtype)
        p = tree_normal(k_p, z)
        return SGNHTState(jnp.array(0), z, p, zero + self.diffusion, zero, zero, zero, key)

    def _sample_one(self, state, args):
        key, k_batch, k_noise = jax.random.split(state.rng_key, 3)
        _, grad, loss, delta = batch_energy_and_grad(k_batch, state.z, self.loss_fn, args, self.batch_size)
        eps, A, xi = self.step_size, self.diffusion, state.thermostat
        noise = tree_normal(k_noise, state.z)
        p = jax.tree.map(lambda p, g, eta: p - eps * xi * p - eps * g + jnp.sqrt(2 * A * eps) * eta,
                         state.p, grad, noise)
        z = jax.tree.map(lambda w, p: w + eps * p, state.z, p)
        d = sum(x.size for x in jax.tree.leaves(p))
        kinetic = sum(jnp.sum(x * x) for x in jax.tree.leaves(p))
        xi = xi + eps * (kinetic / d - 1.0)
        return SGNHTState(state.i + 1, z, p, xi, loss, delta, tree_norm(grad), key)
