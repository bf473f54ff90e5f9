"""A NumPyro ``MCMCKernel`` that drives one of the update rules in pplpatterning.samplers.

The rule (MALA, SGLD, RMSProp-SGLD, SGNHT, or a registered one) is written once against the
array API over flat (chains, d) positions; this kernel only supplies what is JAX's:

- the energy U and its gradient by autodiff, per chain on the model's parameter pytree
  (``jax.vmap`` over chains), on a minibatch drawn with replacement for SG rules;
- the random numbers: each chain carries its own key, split at every step into
  ``[next key, batch key (SG rules), one key per stream]``; ``"noise"`` is a standard normal
  per parameter leaf (one key per leaf), ``"uniform"`` a U(0, 1) scalar;
- the flattening (``ravel_pytree``, the leaves in sorted-name order) and the loop (NumPyro's
  MCMC or backends/numpyro/driver.py).

With a batch of keys (``MCMC(..., chain_method="vectorized")`` or the driver), all chains
advance as one (chains, d) array; with a single key the kernel runs one chain.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from numpyro.infer.mcmc import MCMCKernel
from numpyro.util import is_prng_key

from pplpatterning.samplers.rule import Energy
from pplpatterning.spec.posterior import localization_energy, per_sample_loss_delta

from .spec import PosteriorArgs, full_params

__all__ = ["RuleKernel", "RuleState", "batch_energy_and_grad", "tree_normal"]


class RuleState(NamedTuple):
    i: jax.Array      # steps taken
    z: dict           # positions as the model's parameter pytree (what the trace records)
    rule: Any         # the rule's own state, over flat (chains, d) arrays
    info: Any         # the last step's statistics (the rule's Info)
    rng_key: jax.Array


def _draw_batch(key, args: PosteriorArgs, batch_size: int):
    """A uniform minibatch drawn with replacement (unbiased for every L_n^ρ term)."""
    n = args.weights.shape[0]
    if batch_size >= n:  # static: full batch, no sampling
        return args.data, args.weights, args.loss_at_centre
    idx = jax.random.randint(key, (batch_size,), 0, n)
    batch = {k: v[idx] for k, v in args.data.items()}
    return batch, args.weights[idx], args.loss_at_centre[idx]


def _energy(z, loss_fn, args: PosteriorArgs, batch, weights, loss_at_centre):
    loss, delta = per_sample_loss_delta(loss_fn, full_params(z, args), batch, weights, loss_at_centre, args.consts, jnp)
    U = args.n_beta * loss + localization_energy(z, args.centre, args.gamma, jnp)
    return U, (loss, delta)


def batch_energy_and_grad(key, z, loss_fn, args: PosteriorArgs, batch_size: int):
    """U_batch(z), ∇U_batch(z) and the batch's (L^ρ, L^ρ - L^ρ(w*)) at z (one chain's pytree)."""
    batch, weights, lstar = _draw_batch(key, args, batch_size)
    (U, (loss, delta)), grad = jax.value_and_grad(_energy, has_aux=True)(z, loss_fn, args, batch, weights, lstar)
    return U, grad, loss, delta


def tree_normal(key, tree):
    """Standard normal noise with the structure of ``tree`` (one key per leaf)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


class RuleKernel(MCMCKernel):
    """Drive ``rule`` (an instance from :func:`pplpatterning.samplers.registry.rule_for`) on the
    potential of ``loss_fn``; ``model_args`` is ``(PosteriorArgs,)``."""

    sample_field = "z"

    def __init__(self, rule, loss_fn, batch_size: int):
        self.rule = rule
        self.loss_fn = loss_fn
        self.batch_size = int(batch_size)
        self._batched = True
        self._unravel = None

    # -- flat layout -------------------------------------------------------------------------
    def _flatten(self, z):
        return jax.vmap(lambda t: ravel_pytree(t)[0])(z)

    def _positions(self, flat):
        z = jax.vmap(self._unravel)(flat)
        return z if self._batched else jax.tree.map(lambda x: x[0], z)

    def _energy_fn(self, args: PosteriorArgs, batch_keys):
        def one(key, flat):
            U, grad, loss, delta = batch_energy_and_grad(key, self._unravel(flat), self.loss_fn, args,
                                                         self.batch_size)
            return Energy(U, ravel_pytree(grad)[0], loss, delta)

        if batch_keys is None:
            return jax.vmap(lambda flat: one(None, flat))
        return lambda flat: jax.vmap(one)(batch_keys, flat)

    def _stream(self, name: str, keys, flat):
        if name == "noise":
            return jax.vmap(lambda k, f: ravel_pytree(tree_normal(k, self._unravel(f)))[0])(keys, flat)
        if name == "uniform":
            return jax.vmap(lambda k: jax.random.uniform(k, dtype=flat.dtype))(keys)
        raise ValueError(f"Unknown random stream {name!r} requested by the sampler's rule.")

    # -- MCMCKernel --------------------------------------------------------------------------
    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        (args,) = model_args
        self._batched = not is_prng_key(rng_key)
        keys = rng_key if self._batched else rng_key[None]
        z = init_params if self._batched else jax.tree.map(lambda x: x[None], init_params)
        self._unravel = ravel_pytree(jax.tree.map(lambda x: x[0], z))[1]
        flat = self._flatten(z)
        noise = {}
        if self.rule.init_streams:
            split = jax.vmap(lambda k: jax.random.split(k, 1 + len(self.rule.init_streams)))(keys)
            keys = split[:, 0]
            noise = {s: self._stream(s, split[:, 1 + j], flat) for j, s in enumerate(self.rule.init_streams)}
        rule_state = self.rule.init(flat, self._energy_fn(args, None), noise, jnp)
        zero = jnp.zeros(flat.shape[:1], dtype=jnp.float64)  # statistics are float64 whatever the run's dtype
        info = self.rule.Info(*(zero for _ in self.rule.Info._fields))
        return RuleState(jnp.array(0), self._positions(flat), rule_state, info, keys if self._batched else keys[0])

    def sample(self, state, model_args, model_kwargs):
        (args,) = model_args
        keys = state.rng_key if self._batched else state.rng_key[None]
        first = 2 if self.rule.minibatch else 1
        split = jax.vmap(lambda k: jax.random.split(k, first + len(self.rule.streams)))(keys)
        flat = state.rule.z
        batch_keys = split[:, 1] if self.rule.minibatch else None
        noise = {s: self._stream(s, split[:, first + j], flat) for j, s in enumerate(self.rule.streams)}
        rule_state, info = self.rule.step(state.rule, self._energy_fn(args, batch_keys), noise, state.i, jnp)
        info = jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.float64), info)
        # a float32 run keeps its state float32 (its accept ratios and energies are float64)
        rule_state = jax.tree.map(lambda new, old: new.astype(old.dtype), rule_state, state.rule)
        next_keys = split[:, 0] if self._batched else split[0, 0]
        return RuleState(state.i + 1, self._positions(rule_state.z), rule_state, info, next_keys)
