"""Drive a NumPyro MCMCKernel in compiled segments, keeping what completed.

The kernels (NumPyro's NUTS/HMC and ours) are ordinary ``MCMCKernel``s and run unchanged
under ``numpyro.infer.MCMC``; this driver calls the same ``init``/``sample`` with the same
per-chain keys (``random.split(PRNGKey(seed), num_chains)``, as ``MCMC.run`` does), so it
produces the same draws (tests/test_numpyro_driver.py). What it adds:

- one jitted ``lax.scan`` per segment length, compiled once and reused for every segment
  (``MCMC.run`` re-traces its loop body on every call: 65–150 ms per call measured here);
- a progress bar over segments, and an early stop that keeps the completed draws on
  Ctrl-C, on an error, or when every chain's parameters have become NaN.
"""

from __future__ import annotations

from functools import partial
from operator import attrgetter

import jax
import numpy as np
from tqdm.auto import tqdm

from .precision import in_float64

__all__ = ["run_segmented", "segments"]


def segments(num_draws: int, max_segments: int = 20) -> tuple[int, int]:
    """Split the draws into equal segments (same shapes: one compilation serves them all)."""
    k = max(d for d in range(1, max_segments + 1) if num_draws % d == 0)
    return k, num_draws // k


def _all_chains_nonfinite(z: dict, C: int) -> bool:
    """True when no chain has all-finite parameters (z: dict of (C, ...) or unbatched arrays)."""
    ok = [np.isfinite(np.asarray(v)).reshape((C, -1) if C > 1 else (1, -1)).all(axis=1) for v in z.values()]
    return not np.logical_and.reduce(ok).any()


def _collect(state, fields, keep_draws: bool):
    z = state.z if keep_draws else {}
    return z, {name: attrgetter(path)(state) for path, name in fields.items()}


@in_float64
def run_segmented(kernel, args, init, settings, fields: dict, *, keep_draws: bool = True):
    """Burn-in, then the draws in segments, in float64. Returns (samples, extra, reason).

    ``samples``/``extra`` are dicts of (chain, draw, ...) arrays; ``reason`` is None for a
    complete run, else why it stopped early. With ``keep_draws=False`` the parameters of the
    draws are never collected (``samples`` is empty): only the ``fields`` series are kept.
    """
    C = settings.num_chains
    key = jax.random.PRNGKey(settings.seed)
    keys = jax.random.split(key, C) if C > 1 else key
    state = kernel.init(keys, settings.num_burnin, init, (args,), {})
    thin = settings.thinning

    @partial(jax.jit, static_argnums=2)
    def burn(state, args, n_steps):
        return jax.lax.fori_loop(0, n_steps, lambda _, s: kernel.sample(s, (args,), {}), state)

    @partial(jax.jit, static_argnums=2)
    def draw(state, args, n_draws):
        def body(s, _):
            s = jax.lax.fori_loop(0, thin, lambda _, t: kernel.sample(t, (args,), {}), s)
            return s, _collect(s, fields, keep_draws)

        return jax.lax.scan(body, state, None, length=n_draws)

    n_seg, per_seg = segments(settings.num_draws)
    total = settings.num_burnin + settings.num_draws * thin
    bar = tqdm(total=total, disable=not settings.progress_bar, unit="step",
               desc=f"{settings.sampler} ({C} chains) burn-in")
    chunks = []
    reason = None
    try:
        if settings.num_burnin:
            state = burn(state, args, settings.num_burnin)
            if _all_chains_nonfinite(jax.device_get(state.z), C):
                raise FloatingPointError(
                    "Sampling stopped before any draw was kept: every chain's parameters became NaN or infinite "
                    "during burn-in (reduce the step size or localize more).")
        bar.update(settings.num_burnin)
        bar.set_description(f"{settings.sampler} ({C} chains) sampling")
        for _ in range(n_seg):
            state, (z, extra) = draw(state, args, per_seg)
            z, extra = jax.device_get((z, extra))
            chunks.append((z, extra))
            bar.update(per_seg * thin)
            if _all_chains_nonfinite({k: np.asarray(v) for k, v in state.z.items()}, C):  # the last draw
                reason = "every chain's parameters became NaN or infinite (reduce the step size or localize more)"
                break
    except KeyboardInterrupt:
        if not chunks:
            raise
        reason = "interrupted (KeyboardInterrupt)"
    except Exception as exc:  # keep the completed segments and say what happened
        if not chunks or isinstance(exc, FloatingPointError):
            raise
        reason = f"{type(exc).__name__}: {exc}"
    finally:
        bar.close()

    def stack(parts):  # (draw, chain, ...) per segment -> (chain, draw, ...)
        arr = np.concatenate([np.asarray(p) for p in parts], axis=0)
        return np.moveaxis(arr, 0, 1) if C > 1 else arr[None]

    samples = {k: stack([c[0][k] for c in chunks]) for k in chunks[0][0]}
    extra = {k: stack([c[1][k] for c in chunks]) for k in chunks[0][1]}
    return samples, extra, reason
