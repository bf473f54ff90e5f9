"""Flax NNX and Equinox modules as pplpatterning Models (NumPyro backend).

    model = model_from_flax(net, lambda net, b: 0.5 * ((net(b["x"]) - b["y"]) ** 2).sum(-1))
    model = model_from_equinox(net, lambda net, b: 0.5 * ((jax.vmap(net)(b["x"]) - b["y"]) ** 2).sum(-1))
    post = GibbsPosterior(model, {"x": x, "y": y}, n_beta=..., gamma=...)
    trace = pplpatterning.sample(post, backend="numpyro", sampler="mala")

``per_sample_loss(module, batch) -> Array[batch]`` is called on the module rebuilt with the
sampled parameters, the way a Flax or Equinox user writes a loss in training code: one loss
per row (a negative log-likelihood up to constants), never averaged over the batch.

- Flax NNX: ``nnx.split(module, nnx.Param, ...)`` gives the graph definition, the
  ``nnx.Param`` state (the sampled parameters; ``l1.kernel``, ``layers.0.bias``, ...) and
  the rest (batch statistics, RNG state: held fixed at their current values). The loss
  rebuilds the module with ``nnx.merge`` on every call; the module is first viewed in
  evaluation mode (``nnx.view(deterministic=True, use_running_average=True)``: dropout
  off, batch norm on its running statistics).
- Equinox: ``eqx.partition(module, eqx.is_inexact_array)`` splits the floating arrays
  (the sampled parameters; ``layers.0.weight``, ...) from everything else, and
  ``eqx.combine`` rebuilds the module; the module is first put in inference mode
  (``eqx.nn.inference_mode``: dropout off). Stateful layers' ``eqx.nn.State`` is not
  part of the module; close over it in ``per_sample_loss`` if needed.

Both go through the same construction as :func:`~.user.model_from_jax` (the pytree leaves
become named parameters, the loss object rebuilds the pytree and calls the function, float64
on the NumPy reference path), so restrictions, observables and traces see the same names.
The user's module is not modified. Flax and Equinox are imported only when called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pplpatterning.spec.model import Model

from .precision import in_float64
from .user import pytree_model

__all__ = ["model_from_flax", "model_from_equinox"]


def _float64_leaves(tree):
    """Floating array leaves as float64 NumPy arrays (the fixed, non-sampled state)."""
    import jax
    import jax.numpy as jnp

    def cast(x):
        dtype = getattr(x, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
            return np.asarray(x, dtype=np.float64)
        return x

    return jax.tree_util.tree_map(cast, tree)


@in_float64
def model_from_flax(module: Any, per_sample_loss: Callable[[Any, Mapping[str, Any]], Any], *,
                    name: str | None = None, example_data: Mapping[str, Any] | None = None,
                    data_generator=None, lam: float | None = None, multiplicity: int | None = None,
                    description: str = "") -> Model:
    """A :class:`~pplpatterning.Model` whose loss is ``per_sample_loss(module_w, batch)``,
    ``module_w`` being the Flax NNX ``module`` with its ``nnx.Param`` variables set to w.

    Parameters: the ``nnx.Param`` leaves, named by their path without the trailing
    ``value`` (``l1.kernel``); centre w* = their current values (float64). NumPyro backend
    only. ``example_data`` (optional) checks the loss on its first rows now.
    """
    try:
        from flax import nnx
    except ImportError as exc:  # pragma: no cover - flax is installed with the numpyro extra
        raise ImportError("model_from_flax needs flax (`pip install flax`).") from exc
    if not isinstance(module, nnx.Module):
        raise TypeError(f"`module` must be a flax.nnx.Module, got {type(module).__name__}"
                        + (" (a Linen module? convert it with nnx.bridge or use model_from_jax with its params)"
                           if hasattr(module, "init") and hasattr(module, "apply") else "") + ".")
    if not callable(per_sample_loss):
        raise TypeError(f"`per_sample_loss` must be callable (module, batch) -> Array[batch], "
                        f"got {type(per_sample_loss).__name__}.")
    name = str(name) if name is not None else type(module).__name__
    viewed = nnx.view(module, deterministic=True, use_running_average=True, raise_if_not_found=False)
    graphdef, params, rest = nnx.split(viewed, nnx.Param, ...)
    if not _leaves(params):
        raise ValueError(f"Flax module {name!r} has no nnx.Param variables to sample; "
                         "its weights must be nnx.Param (e.g. nnx.Linear's kernel and bias).")
    rest = _float64_leaves(rest)

    def loss(state, batch):
        return per_sample_loss(nnx.merge(graphdef, state, rest), batch)

    return pytree_model(loss, params, name=name, what="module's nnx.Param state", drop_last="value",
                        example_data=example_data, data_generator=data_generator, lam=lam,
                        multiplicity=multiplicity,
                        description=description or f"Flax NNX module {name} (numpyro backend only)")


@in_float64
def model_from_equinox(module: Any, per_sample_loss: Callable[[Any, Mapping[str, Any]], Any], *,
                       name: str | None = None, example_data: Mapping[str, Any] | None = None,
                       data_generator=None, lam: float | None = None, multiplicity: int | None = None,
                       description: str = "") -> Model:
    """A :class:`~pplpatterning.Model` whose loss is ``per_sample_loss(module_w, batch)``,
    ``module_w`` being the Equinox ``module`` with its floating arrays set to w.

    Parameters: the leaves ``eqx.partition(module, eqx.is_inexact_array)`` selects, named
    by their path (``layers.0.weight``); centre w* = their current values (float64).
    NumPyro backend only. Equinox modules act on one example: write the batch with
    ``jax.vmap(module)(batch["x"])``. ``example_data`` (optional) checks the loss now.
    """
    try:
        import equinox as eqx
    except ImportError as exc:  # pragma: no cover
        raise ImportError("model_from_equinox needs equinox (`pip install equinox`).") from exc
    if not isinstance(module, eqx.Module):
        raise TypeError(f"`module` must be an equinox.Module, got {type(module).__name__}.")
    if not callable(per_sample_loss):
        raise TypeError(f"`per_sample_loss` must be callable (module, batch) -> Array[batch], "
                        f"got {type(per_sample_loss).__name__}.")
    name = str(name) if name is not None else type(module).__name__
    module = eqx.nn.inference_mode(module, True)
    params, static = eqx.partition(module, eqx.is_inexact_array)
    if not _leaves(params):
        raise ValueError(f"Equinox module {name!r} has no floating-point arrays to sample.")

    def loss(p, batch):
        return per_sample_loss(eqx.combine(p, static), batch)

    return pytree_model(loss, params, name=name, what="module's arrays", example_data=example_data,
                        data_generator=data_generator, lam=lam, multiplicity=multiplicity,
                        description=description or f"Equinox module {name} (numpyro backend only)")


def _leaves(tree) -> list:
    """The array leaves of a pytree."""
    import jax

    return jax.tree_util.tree_leaves(tree)
