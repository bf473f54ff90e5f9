"""Wrap a user's JAX loss over a parameter pytree as a pplpatterning Model.

    model = model_from_jax(per_sample_loss, params, name="mlp")
    post = GibbsPosterior(model, data, gamma=100.0)       # centre = ``params`` by default
    trace = sample(post, backend="numpyro", sampler="sgld", step_size=1e-5)

``per_sample_loss(params, batch) -> Array[batch]`` is any JAX function of a pytree (nested
dicts, lists, tuples, e.g. flax or equinox parameters) and a batch dict; no array-API
rewrite is needed. The pytree's leaves become named parameters (``layers.0.w``), so the
Trace, restrictions (``sampled=("layers.1.w",)``) and observables see them by name. Such a
model runs on the NumPyro backend only. Flax NNX and Equinox modules come in through
:mod:`.modules` (``model_from_flax``, ``model_from_equinox``), built on :func:`pytree_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from pplpatterning.spec.model import Model

from .precision import in_float64

__all__ = ["model_from_jax", "pytree_model"]


def _leaf_name(path, drop_last: str | None = None) -> str:
    """``layers.0.w`` from a pytree key path (dict keys, sequence indices, attribute names
    joined by dots); a last key equal to ``drop_last`` is left out (Flax NNX's ``value``)."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    if drop_last is not None and len(parts) > 1 and parts[-1] == drop_last:
        parts.pop()
    return ".".join(parts) or "params"


class _JaxLoss:
    """The Model loss: rebuilds the pytree from named leaves and calls the user's function.
    Hashes by identity, so a backend's compiled program is keyed to this one model."""

    def __init__(self, fn, treedef, names):
        self.fn, self.treedef, self.names = fn, treedef, tuple(names)
        # one compiled program for eager calls (the check at w*, the NumPy reference values)
        # instead of one dispatch per primitive; inside the backend's traced programs it inlines
        self._jitted = jax.jit(self._call)

    def __call__(self, params, batch, consts, xp):
        if "torch" in getattr(xp, "__name__", ""):
            raise TypeError("This model wraps a JAX function and runs on the numpyro backend only; "
                            "use backend='numpyro'.")
        if xp is np:  # the core's NumPy reference values: run the JAX function in float64 too
            with jax.enable_x64(True):
                return np.asarray(self._jitted(dict(params), dict(batch)), dtype=np.float64)
        return self._jitted(dict(params), dict(batch))

    def _call(self, params, batch):
        tree = jax.tree_util.tree_unflatten(self.treedef, [params[n] for n in self.names])
        return self.fn(tree, dict(batch))


@in_float64
def model_from_jax(per_sample_loss: Callable[[Any, Mapping[str, Any]], Any], params: Any, *,
                   name: str = "jax_model", data_generator=None, lam: float | None = None,
                   multiplicity: int | None = None, example_data: Mapping[str, Any] | None = None,
                   description: str = "user JAX model") -> Model:
    """A :class:`~pplpatterning.Model` from a JAX per-sample loss and a parameter pytree.

    ``params`` gives the shapes and the default centre w*. The loss is checked on a tiny
    probe only when a posterior is built (GibbsPosterior checks one loss per sample), or
    right away on the first rows of ``example_data`` when it is given. On NumPy inputs
    (the core's reference values) the function runs under ``jax.enable_x64(True)``, so
    those values are float64 whatever the global setting.
    """
    return pytree_model(per_sample_loss, params, name=name, data_generator=data_generator, lam=lam,
                        multiplicity=multiplicity, example_data=example_data, description=description)


def pytree_model(fn: Callable[[Any, Mapping[str, Any]], Any], params: Any, *, name: str, what: str = "params",
                 drop_last: str | None = None, example_data: Mapping[str, Any] | None = None,
                 description: str = "", **model_kwargs) -> Model:
    """The one construction behind :func:`model_from_jax` and the module adapters
    (:mod:`.modules`): the pytree ``params``'s floating leaves become named parameters
    (:func:`_leaf_name`, ``what`` names the argument in errors), ``fn(tree, batch)`` the
    per-sample loss. Call inside ``jax.enable_x64(True)``."""
    if not callable(fn):
        raise TypeError(f"`per_sample_loss` must be callable, got {type(fn).__name__}.")
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not leaves_with_path:
        raise ValueError(f"`{what}` has no array leaves; pass the pytree of the network's parameters.")
    names, centre = [], {}
    for path, leaf in leaves_with_path:
        nm = _leaf_name(path, drop_last)
        arr = np.asarray(leaf)
        if arr.dtype.kind != "f":
            raise TypeError(f"`{what}` leaf {nm!r} has dtype {arr.dtype}; parameters must be floats.")
        if nm in centre:
            raise ValueError(f"two `{what}` leaves map to the same name {nm!r}; use distinct keys.")
        names.append(nm)
        centre[nm] = arr.astype(np.float64)
    model = Model(name=name, loss=_JaxLoss(fn, treedef, names), param_shapes={n: centre[n].shape for n in names},
                  centre=centre, description=description, **model_kwargs)
    if example_data is not None:
        model.check_example(example_data)
    return model
