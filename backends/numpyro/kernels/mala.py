"""Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996), full batch.

Proposal  w' = w - ε ∇U(w) + √(2ε) ξ,  accepted with probability
    min(1, exp(U(w) - U(w') + log q(w | w') - log q(w' | w))),
    log q(b | a) = -||b - a + ε ∇U(a)||² / (4ε).
During burn-in ε is adapted by dual averaging (Hoffman & Gelman 2014; NumPyro's
implementation) toward ``target_accept``, then frozen at the averaged value.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.infer.hmc_util import dual_averaging

from .base import VectorizedKernel, batch_energy_and_grad, tree_norm, tree_normal


class MALAState(NamedTuple):
    i: jax.Array
    z: dict
    potential_energy: jax.Array
    grad: dict
    step_size: jax.Array
    da_state: tuple
    accept_prob: jax.Array
    grad_norm: jax.Array
    rng_key: jax.Array


class MALA(VectorizedKernel):
    def __init__(self, loss_fn, step_size, batch_size, target_accept=0.574):
        # batch_size must be n: MALA is an exact sampler on the full-batch potential.
        super().__init__(loss_fn, step_size if step_size is not None else 1e-3, batch_size)
        if not 0.0 < target_accept < 1.0:
            raise ValueError(f"`target_accept` must lie in (0, 1), got {target_accept!r}.")
        self.target_accept = float(target_accept)
        self._da_init, self._da_update = dual_averaging()

    def _energy(self, z, args):
        U, grad, _, _ = batch_energy_and_grad(None, z, self.loss_fn, args, self.batch_size)
        return U, grad

    def _init_one(self, key, z, args):
        U, grad = self._energy(z, args)
        eps = jnp.asarray(self.step_size, dtype=U.dtype)
        da = self._da_init(jnp.log(10.0 * eps))
        return MALAState(jnp.array(0), z, U, grad, eps, da, jnp.zeros_like(U), tree_norm(grad), key)

    def _sample_one(self, state, args):
        key, k_noise, k_acc = jax.random.split(state.rng_key, 3)
        eps = state.step_size
        noise = tree_normal(k_noise, state.z)
        prop = jax.tree.map(lambda w, g, xi: w - eps * g + jnp.sqrt(2 * eps) * xi, state.z, state.grad, noise)
        U_new, grad_new = self._energy(prop, args)

        def log_q(b, a, grad_a):  # log q(b | a) up to a constant
            return -sum(jnp.sum((bb - aa + eps * ga) ** 2)
                        for bb, aa, ga in zip(jax.tree.leaves(b), jax.tree.leaves(a), jax.tree.leaves(grad_a))) / (4 * eps)

        log_ratio = state.potential_energy - U_new + log_q(state.z, prop, grad_new) - log_q(prop, state.z, state.grad)
        log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
        accept_prob = jnp.minimum(1.0, jnp.exp(log_ratio))
        accept = jax.random.uniform(k_acc, dtype=U_new.dtype) < accept_prob
        pick = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
        z = jax.tree.map(pick, prop, state.z)
        grad = jax.tree.map(pick, grad_new, state.grad)
        U = pick(U_new, state.potential_energy)

        # Step-size adaptation during burn-in only.
        in_warmup = state.i < self._num_warmup
        da = self._da_update(self.target_accept - accept_prob, state.da_state)
        last_warmup = state.i == self._num_warmup - 1
        log_eps = jnp.where(last_warmup, da[1], da[0])
        new_eps = jnp.where(in_warmup, jnp.exp(log_eps), eps)
        da = jax.tree.map(lambda a, b: jnp.where(in_warmup, a, b), da, state.da_state)
        return MALAState(state.i + 1, z, U, grad, new_eps, da, accept_prob, tree_norm(grad), key)

