"""NumPyro's HMC with the step size jittered after burn-in by the one rule of
:mod:`pplpatterning.samplers.step_jitter` (Neal 2011, §5.4.2.2; docs/math.md §8.6).

Each post-burn-in iteration integrates with the jittered ε, its u drawn from a key folded
off the chain's own key; burn-in adaptation is untouched, and the recorded step size is the
adapted (un-jittered) ε.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.infer import HMC

from pplpatterning.samplers.step_jitter import jittered_step_size

__all__ = ["JitteredHMC"]

_JITTER_STREAM = 0x4A17


def _unit_uniform(key):
    return jax.random.uniform(jax.random.fold_in(key, _JITTER_STREAM))


class JitteredHMC(HMC):
    def __init__(self, *args, step_jitter: float = 0.2, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 <= step_jitter < 1.0:
            raise ValueError(f"`step_jitter` must lie in [0, 1), got {step_jitter!r}.")
        self.step_jitter = float(step_jitter)

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        state = super().init(rng_key, num_warmup, init_params, model_args, model_kwargs)
        if self.step_jitter > 0:
            self._sample_fn = self._jittered(self._sample_fn, int(num_warmup))
        return state

    def _jittered(self, inner, num_warmup):
        j = self.step_jitter

        def sample_fn(state, model_args, model_kwargs):
            keys = state.rng_key
            u = jax.vmap(_unit_uniform)(keys) if keys.ndim == 2 else _unit_uniform(keys)
            base = state.adapt_state.step_size
            after_burnin = state.i >= num_warmup
            eps = jnp.where(after_burnin, jittered_step_size(base, u, j), base)
            new = inner(state._replace(adapt_state=state.adapt_state._replace(step_size=eps)),
                        model_args, model_kwargs)
            kept = jnp.where(after_burnin, base, new.adapt_state.step_size)
            return new._replace(adapt_state=new.adapt_state._replace(step_size=kept))

        return sample_fn
