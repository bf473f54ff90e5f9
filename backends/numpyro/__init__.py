"""NumPyro (JAX) backend: compiles a GibbsPosterior to NumPyro kernels, returns a Trace.

``BACKEND`` is the object ``pplpatterning.sample`` drives (pplpatterning.sampling.backend).

Precision: every entry point (``sample_chains``, ``evaluate_at_centre``,
``potential_and_grad``, ``potential_fn`` and the function it returns, ``posterior_args``,
``model_from_jax``'s loss on NumPy inputs, and those of ``model_from_flax`` /
``model_from_equinox``, built on it) runs inside ``jax.enable_x64(True)``: float64
for that call only (LLC differences are small numbers; docs/math.md §2), recorded as the
trace's ``dtype`` attribute. Importing or calling the backend never changes the process's
JAX configuration (``jax_enable_x64``, the compilation cache; issue 9).

Compilation cache: JAX reads ``JAX_COMPILATION_CACHE_DIR``,
``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` and ``JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES``
from the environment itself; set them (the Makefile does, to ``.jax_cache``, 0 and 0) so
that repeated runs skip the 2–4 s compile.
"""

from __future__ import annotations

from .precision import in_float64
from .run import BACKEND, evaluate_at_centre, make_kernel, sample_chains
from .spec import posterior_args, potential_and_grad, potential_fn
from .modules import model_from_equinox, model_from_flax
from .user import model_from_jax

__all__ = ["BACKEND", "model_from_jax", "model_from_flax", "model_from_equinox", "sample_chains", "make_kernel", "evaluate_at_centre", "posterior_args",
           "potential_fn", "potential_and_grad", "in_float64"]
