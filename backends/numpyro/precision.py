"""Float64 inside the backend, the user's JAX configuration untouched (issue 9).

The loss differences L_n^ρ(w) - L_n^ρ(w*) behind λ̂ are small numbers (docs/math.md §2), so
the backend computes in float64. It does not turn ``jax_enable_x64`` on for the process:
every entry point runs inside ``jax.enable_x64(True)``, JAX's thread-local context, so a
user who keeps x64 off (JAX's default) still gets float64 samples, and their own JAX code
keeps float32. The Trace records ``dtype="float64"``.

Nor does the backend set JAX's persistent compilation cache: JAX reads
``JAX_COMPILATION_CACHE_DIR`` (and ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``,
``JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES``) from the environment itself; the Makefile
exports them for ``make run`` and ``make test``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DTYPE", "in_float64", "as_data"]

#: The precision every compiled program of this backend runs in (recorded as attrs ``dtype``).
DTYPE = "float64"


def in_float64(fn):
    """``fn`` run inside ``jax.enable_x64(True)``; the setting outside is left as it was."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return wrapper


def as_data(value, float_dtype: str = "float64") -> jax.Array:
    """A data or constant array as a JAX array that keeps its kind (contract C2): floats as
    ``float_dtype`` (the run's precision), integers (token ids) as int64, booleans as bool.
    Call under x64."""
    kind = np.asarray(value).dtype.kind
    if kind in "iu":
        return jnp.asarray(value, dtype=jnp.int64)
    if kind == "b":
        return jnp.asarray(value, dtype=bool)
    return jnp.asarray(value, dtype=float_dtype)
