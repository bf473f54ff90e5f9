"""Components of a model's parameters: whole parameters and boolean masks below them.

A component C is given as a parameter name, a sequence of names, or a mask mapping
``{name: boolean array of that parameter's shape}`` (True = part of C; names absent from
the mapping are not in C). The same form names the sampled set of a weight-restricted
posterior (``GibbsPosterior(sampled=...)``, :func:`~.refine.refine`) and the moved weights
of a component observable (:func:`~.observables.component_loss`): a head is its slice of
the Q/K/V/O matrices, a row block is a mask, etc. (refined LLCs, Wang et al. 2024,
arXiv 2410.02984).

A masked parameter's sampled coordinates are its True entries in C (row-major) order, the
1-D vector ``w[name][mask]``. :func:`assemble` puts the full array back together from that
vector and the frozen entries without a scatter, as one ``take`` of the concatenation
``[v, frozen entries]`` through a fixed index map, which every array-API namespace (NumPy,
jax.numpy, torch) differentiates: entry j of the parameter is ``v[k]`` if it is the k-th
True entry of the mask, else the frozen value ``w*[j]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = ["resolve_component", "MaskedParam", "masked_param", "assemble"]


def resolve_component(shapes: Mapping[str, tuple[int, ...]], component: Any, what: str = "component"
                      ) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """(names taken whole, ``{name: read-only bool mask}`` for partial ones), both in the
    model's parameter order, from a name, names, or a mask mapping. ``what`` names the
    argument in error messages. An all-True mask counts as the whole parameter and an
    all-False one as absent."""
    if isinstance(component, str):
        component = (component,)
    if isinstance(component, Mapping):
        whole, masks = [], {}
        for name, mask in component.items():
            if name not in shapes:
                raise ValueError(f"`{what}` mask names unknown parameter {name!r}; the model has {list(shapes)}.")
            arr = np.asarray(mask)
            if arr.dtype != np.bool_:
                raise TypeError(f"`{what}[{name!r}]` must be a boolean mask, got dtype {arr.dtype}.")
            if arr.shape != tuple(shapes[name]):
                raise ValueError(f"`{what}[{name!r}]` has shape {arr.shape}; parameter {name!r} has shape "
                                 f"{tuple(shapes[name])}.")
            if arr.all():
                whole.append(name)
            elif arr.any():
                m = np.array(arr)
                m.setflags(write=False)
                masks[name] = m
        if not whole and not masks:
            raise ValueError(f"`{what}` mask selects no parameter entry; set at least one entry True.")
        return tuple(n for n in shapes if n in whole), {n: masks[n] for n in shapes if n in masks}
    if not isinstance(component, Iterable):
        raise TypeError(f"`{what}` must be a parameter name, a sequence of names, or a mask {{name: bool array}}.")
    names = [str(c) for c in component]
    unknown = [c for c in names if c not in shapes]
    if unknown:
        raise ValueError(f"`{what}` names unknown parameters {unknown}; the model has {list(shapes)}.")
    if not names:
        raise ValueError(f"`{what}` is empty; name at least one parameter.")
    if len(set(names)) != len(names):
        raise ValueError(f"`{what}` repeats a name: {names}.")
    return tuple(n for n in shapes if n in names), {}


class MaskedParam(NamedTuple):
    """What :func:`assemble` needs for one masked parameter: ``index`` (int64, the
    parameter's shape, each entry's position in ``[v, rest]``) and ``rest`` (the frozen
    entries' centre values, row-major). Only arrays, so a backend passes it as a traced
    argument (a new centre or another mask of the same size reuses the compiled program)."""

    index: Any
    rest: Any


def masked_param(mask: np.ndarray, centre: np.ndarray) -> MaskedParam:
    """The NumPy :class:`MaskedParam` of ``mask`` over a parameter whose centre is ``centre``."""
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    k = int(flat.sum())
    index = np.empty(flat.size, dtype=np.int64)
    index[flat] = np.arange(k)
    index[~flat] = k + np.arange(flat.size - k)
    rest = np.asarray(centre, dtype=np.float64).reshape(-1)[~flat]
    return MaskedParam(index.reshape(np.shape(mask)), rest)


def assemble(sampled: Mapping[str, Any], frozen: Mapping[str, Any], masked: Mapping[str, MaskedParam],
             xp: Any) -> dict[str, Any]:
    """Every parameter of the model: frozen ones as given, sampled ones as given, and masked
    ones rebuilt from their sampled vector (``sampled[name]``, shape (k,)) and frozen rest."""
    params = dict(frozen)
    for name, value in sampled.items():
        m = masked.get(name)
        if m is None:
            params[name] = value
        else:
            flat = xp.take(xp.concat([value, xp.astype(m.rest, value.dtype)]), xp.reshape(m.index, (-1,)), axis=0)
            params[name] = xp.reshape(flat, tuple(m.index.shape))
    return params
