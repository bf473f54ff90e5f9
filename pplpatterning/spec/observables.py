"""Declarative observables φ(w): functions of the parameters evaluated on every kept draw.

An observable is any ``phi(params, xp) -> scalar`` written against the array-API namespace
``xp`` (``jax.numpy``, torch through array-api-compat, or ``numpy``); ``params`` holds every
parameter, frozen ones at their centre values. ``sample(..., observables={name: phi})``
evaluates each one per kept draw and stores the values in the Trace's ``observables``
group, from which :func:`pplpatterning.estimators.susceptibility` reads them.

The builders here return :class:`Observable` objects that close over NumPy data and convert
it inside the call with ``xp.asarray`` (so one observable serves every backend; under
``jax.jit`` the arrays become compile-time constants, so keep ``data`` moderate, e.g. a
subset, for very large training sets):

- :func:`component_loss` (docs/math.md §3; Baker, Wang, Hoogland, Murfet 2025, arXiv 2504.18274,
  App. C.4): the loss with only one component C's weights moved from w*, the others held
  at w*, minus its value at w*::

      φ_C(w) = L(w_C, w*_{-C}) - L(w*) = (1/m) Σ_i [ l_i(w_C, w*_{-C}) - l_i(w*) ]

  with L the plain (unweighted) empirical loss on ``data`` (default: the posterior's
  training data), the difference taken per sample in float64 as for λ̂ (docs/math.md §2).
  A component is a set of parameter names or a mask ``{name: boolean array}``.
- :func:`full_loss`: the same with C = all parameters, φ(w) = L(w) - L(w*).
- :func:`param`: one coordinate of one parameter, φ(w) = w[name][index].

Unweighted means: the observable does not change when a posterior is re-weighted (ρ), so
patterning before/after comparisons measure the same φ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pplpatterning.spec.masks import resolve_component
from pplpatterning.spec.model import Model
from pplpatterning.spec.posterior import GibbsPosterior, data_array, finite_float_array

__all__ = ["Observable", "ComponentLoss", "Param", "component_loss", "full_loss", "param", "validate_observables"]


class Observable:
    """Base of the built-in observables: callable as ``phi(params, xp)``, checkable.

    Instances hash by identity (backends key compiled programs on the function object).
    """

    def __call__(self, params: Mapping[str, Any], xp: Any) -> Any:
        arrays = self.arrays()
        if arrays is None:  # pragma: no cover - subclasses without arrays override __call__
            raise NotImplementedError
        return self.evaluate(params, _as_xp(arrays, xp), xp)

    def arrays(self) -> dict[str, Any] | None:
        """The fixed NumPy arrays φ reads (data, constants, centre, ...), or None. A backend
        converts them once (``xp.asarray``, kinds and dtypes kept) and passes them to
        :meth:`evaluate` as arguments of its compiled program, instead of letting a closure
        make them compile-time constants: XLA would constant-fold the frozen part of a
        network's forward pass on them (54 s of compilation and +1 GB for four component
        losses of a 23k-parameter transformer on 256 sequences)."""
        return None

    def evaluate(self, params: Mapping[str, Any], arrays: Mapping[str, Any], xp: Any) -> Any:
        """φ(w) from the backend arrays of :meth:`arrays` (the same value as ``self(params, xp)``)."""
        return self(params, xp)

    def validate(self, posterior: GibbsPosterior) -> None:
        """Raise ValueError if this observable does not fit ``posterior``'s model."""

    def describe(self) -> dict[str, Any]:
        return {"kind": type(self).__name__}


def _as_xp(arrays, xp):
    """A nested dict of NumPy arrays as ``xp`` arrays (dtypes kept)."""
    return {k: _as_xp(v, xp) if isinstance(v, Mapping) else xp.asarray(v) for k, v in arrays.items()}


def _model_data_centre(source, data, centre) -> tuple[Model, Mapping[str, np.ndarray], Mapping[str, np.ndarray]]:
    if isinstance(source, GibbsPosterior):
        model = source.model
        data = source.data if data is None else data
        centre = source.centre if centre is None else centre
    elif isinstance(source, Model):
        model = source
        if data is None:
            raise ValueError("With a Model (not a GibbsPosterior), pass `data` for the observable's loss.")
        centre = model.centre if centre is None else centre
    else:
        raise TypeError(f"The first argument must be a GibbsPosterior or a Model, got {type(source).__name__}.")
    if not isinstance(data, Mapping) or not data:
        raise TypeError("`data` must be a non-empty mapping {name: array} with a leading sample dimension.")
    data = {str(k): data_array(v, f"data[{k!r}]") for k, v in data.items()}
    centre = {k: finite_float_array(centre[k], f"centre[{k!r}]") for k in model.param_shapes}
    return model, data, centre


class ComponentLoss(Observable):
    """φ_C(w) = (1/m) Σ_i [l_i(w_C, w*_{-C}) - l_i(w*)] on fixed data (see the module docstring)."""

    def __init__(self, model: Model, data, centre, whole: tuple[str, ...], masks: Mapping[str, np.ndarray]):
        # Private writable copies (never modified): torch shares a NumPy array's memory on
        # conversion and warns about read-only ones.
        self.model = model
        self.data = {k: np.array(v) for k, v in data.items()}
        self.centre = {k: np.array(v) for k, v in centre.items()}
        self.consts = {k: np.array(v) for k, v in model.consts.items()}
        self.whole = whole
        self.masks = {k: np.array(v) for k, v in masks.items()}
        losses = model.per_sample_loss_numpy(self.centre, self.data)
        m = next(iter(data.values())).shape[0]
        if losses.shape != (m,) or not np.all(np.isfinite(losses)):
            raise ValueError(f"Model {model.name!r}: the loss on the observable's `data` at the centre must be "
                             f"finite with shape ({m},); got shape {losses.shape}.")
        self.loss_at_centre = losses

    @property
    def num_samples(self) -> int:
        return int(self.loss_at_centre.shape[0])

    def arrays(self) -> dict[str, Any]:
        """Data, constants, the centre of the parameters outside C (and of a mask's other
        entries), the masks and l_i(w*)."""
        centre = {k: v for k, v in self.centre.items() if k not in self.whole}
        return {"data": self.data, "consts": self.consts, "centre": centre, "masks": self.masks,
                "loss_at_centre": self.loss_at_centre}

    def evaluate(self, params, arrays, xp):
        moved = {}
        for name in self.model.param_shapes:
            if name in self.whole:
                moved[name] = params[name]
            elif name in self.masks:
                moved[name] = xp.where(arrays["masks"][name], params[name], arrays["centre"][name])
            else:
                moved[name] = arrays["centre"][name]
        losses = self.model.loss(moved, arrays["data"], arrays["consts"], xp)
        return xp.mean(losses - arrays["loss_at_centre"])

    def validate(self, posterior: GibbsPosterior) -> None:
        if posterior.model is not self.model and posterior.model.loss is not self.model.loss:
            raise ValueError(f"This observable was built for model {self.model.name!r}, not for the posterior's "
                             f"model {posterior.model.name!r}; build it from the posterior you sample.")

    def describe(self) -> dict[str, Any]:
        return {"kind": "component_loss", "whole": list(self.whole), "masked": sorted(self.masks),
                "num_samples": self.num_samples}

    def __repr__(self) -> str:
        comp = list(self.whole) + [f"{k}[mask]" for k in self.masks]
        return f"ComponentLoss({self.model.name!r}, component={comp}, m={self.num_samples})"


def component_loss(source, component, *, data=None, centre=None) -> ComponentLoss:
    """φ_C(w) = L(w_C, w*_{-C}) - L(w*): the loss with only component C moved from w*.

    Parameters
    ----------
    source
        A :class:`GibbsPosterior` (its model, training data and centre are the defaults) or
        a :class:`Model` (then ``data`` is required and the centre defaults to the model's).
    component
        A parameter name, a sequence of names, or a mask ``{name: boolean array of that
        parameter's shape}`` (True = part of C; names not in the mask stay at w*).
    data
        Data for L (unweighted mean of per-sample losses); default the posterior's data.
    centre
        w*; default the posterior's (or model's) centre.

    Source: docs/math.md §3; Baker, Wang, Hoogland, Murfet 2025 (arXiv 2504.18274), App. C.4.
    """
    model, data, centre = _model_data_centre(source, data, centre)
    whole, masks = resolve_component(model.param_shapes, component)
    return ComponentLoss(model, data, centre, whole, masks)


def full_loss(source, *, data=None, centre=None) -> ComponentLoss:
    """φ(w) = L(w) - L(w*) = (1/m) Σ_i [l_i(w) - l_i(w*)], unweighted, on ``data``
    (default the posterior's training data): :func:`component_loss` with every parameter."""
    model = source.model if isinstance(source, GibbsPosterior) else source
    if not isinstance(model, Model):
        raise TypeError(f"The first argument must be a GibbsPosterior or a Model, got {type(source).__name__}.")
    return component_loss(source, tuple(model.param_shapes), data=data, centre=centre)


class Param(Observable):
    """φ(w) = w[name][index]: one scalar coordinate of one parameter."""

    def __init__(self, name: str, index: tuple[int, ...]):
        self.name = name
        self.index = index

    def __call__(self, params, xp):
        value = params[self.name]
        return value[self.index] if self.index else value

    def validate(self, posterior: GibbsPosterior) -> None:
        shapes = posterior.model.param_shapes
        if self.name not in shapes:
            raise ValueError(f"param({self.name!r}): unknown parameter; the model has {list(shapes)}.")
        shape = shapes[self.name]
        if len(self.index) != len(shape):
            raise ValueError(f"param({self.name!r}, index={self.index}): parameter {self.name!r} has shape {shape}; "
                             f"give one index per dimension ({len(shape)}).")
        for i, (k, s) in enumerate(zip(self.index, shape)):
            if not -s <= k < s:
                raise ValueError(f"param({self.name!r}, index={self.index}): index {k} out of range for "
                                 f"dimension {i} of size {s}.")

    def describe(self) -> dict[str, Any]:
        return {"kind": "param", "name": self.name, "index": list(self.index)}

    def __repr__(self) -> str:
        return f"Param({self.name!r}, {self.index})"


def param(name: str, index: int | tuple[int, ...] | None = None) -> Param:
    """φ(w) = w[name][index]; ``index`` is an int, a tuple (one entry per dimension), or None
    for a scalar parameter. Checked against the model when ``sample`` starts."""
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a parameter name (str), got {type(name).__name__}.")
    if index is None:
        idx: tuple[int, ...] = ()
    elif isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        idx = (int(index),)
    elif isinstance(index, tuple) and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                          for i in index):
        idx = tuple(int(i) for i in index)
    else:
        raise TypeError(f"`index` must be an int, a tuple of ints, or None; got {index!r}.")
    return Param(name, idx)


def validate_observables(observables: Mapping[str, Any], posterior: GibbsPosterior) -> None:
    """Check every observable before compilation: names, callables, built-ins against the
    model, and (for built-ins) one NumPy evaluation at the centre giving a finite scalar."""
    if not isinstance(observables, Mapping):
        raise TypeError("`observables` must be a mapping {name: function(params, xp) -> scalar}.")
    for name, fn in observables.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"`observables` key {name!r} must be a non-empty string without '/'.")
        if not callable(fn):
            raise TypeError(f"`observables[{name!r}]` must be callable, got {type(fn).__name__}.")
        if isinstance(fn, Observable):
            fn.validate(posterior)
            try:
                value = np.asarray(fn(dict(posterior.centre), np))
            except Exception as exc:
                raise ValueError(f"`observables[{name!r}]` ({fn!r}) failed at the posterior's centre "
                                 f"({type(exc).__name__}: {exc}); build it from the posterior you sample.") from exc
            if value.shape != () or not np.isfinite(value):
                raise ValueError(f"`observables[{name!r}]` must return a finite scalar; at the centre it returned "
                                 f"shape {value.shape}, value {value!r}.")
