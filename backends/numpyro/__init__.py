"""NumPyro (JAX) backend: compiles a GibbsPosterior to NumPyro kernels, returns a Trace.

Importing this module turns on JAX's float64 mode (LLC differences are small numbers;
MATH.md §2) and, unless ``JAX_COMPILATION_CACHE_DIR`` is already set or
``PPLPATTERNING_JAX_CACHE=0``, JAX's persistent compilation cache in
``~/.cache/pplpatterning/jax`` so that repeated runs skip the 2–4 s compile.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)


def _configure_compilation_cache() -> None:
    if os.environ.get("PPLPATTERNING_JAX_CACHE", "1") == "0":
        return
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(Path.home() / ".cache" / "pplpatterning" / "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_configure_compilation_cache()

from .run import evaluate_draws, make_kernel, sample  # noqa: E402
from .spec import posterior_args, potential_fn  # noqa: E402
from .user import model_from_jax  # noqa: E402

__all__ = ["model_from_jax", "sample", "make_kernel", "evaluate_draws", "posterior_args", "potential_fn", "potential_and_grad"]


def potential_and_grad(post, params):
    """U(v) and ∇U(v) from the compiled NumPyro model, as float64 NumPy values."""
    import jax.numpy as jnp
    import numpy as np

    U = potential_fn(post)
    z = {k: jnp.asarray(params[k], dtype=jnp.float64) for k in post.sampled}
    value, grad = jax.value_and_grad(U)(z)
    return float(value), {k: np.asarray(v) for k, v in grad.items()}
