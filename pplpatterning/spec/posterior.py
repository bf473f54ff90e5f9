"""The backend-neutral specification of a localized, tempered Gibbs posterior.

    p(w) ∝ exp( -nβ · L_n^ρ(w) - (γ/2) ||v - v*||² )

with L_n^ρ(w) = (1/n) Σ_i ρ_i l_i(w) (or Σ_i ρ_i l_i / Σ_i ρ_i when the weights are
renormalised), w = (u, v) split into frozen parameters u (held at u*) and sampled
parameters v. Sources: Lau et al. 2023/2024 (arXiv 2308.12108), docs/math.md §1.

The potential U(v) = nβ L_n^ρ(u*, v) + (γ/2)||v - v*||² is written here once, against
the array-API namespace, and both backends compile it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from pplpatterning.spec.masks import MaskedParam, assemble, masked_param, resolve_component
from pplpatterning.spec.model import Model

__all__ = [
    "GibbsPosterior", "localization_energy", "tempered_loss_energy", "per_sample_loss_delta",
]


def finite_float_array(value: Any, what: str) -> np.ndarray:
    """A read-only float64 copy of ``value``: TypeError if it is not numeric, ValueError naming
    ``what`` if any entry is NaN or infinite."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`{what}` must be numeric array-like; could not convert: {exc}") from None
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"`{what}` contains {bad} NaN or infinite value(s); clean or drop them first.")
    arr.setflags(write=False)
    return arr


_INT64_MAX = np.iinfo(np.int64).max


def data_array(value: Any, what: str) -> np.ndarray:
    """A read-only copy of one data array (issue 9, contract C2): integer arrays (token ids)
    as int64, exactly (no float cast, so ids above 2**53 survive; no finiteness check);
    booleans as int64 0/1 (integer data too: masks, labels); everything else as float64 and
    finite. Complex data is refused, and unsigned values beyond int64 too."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`{what}` must be numeric array-like; could not convert: {exc}") from None
    if arr.dtype.kind == "c":
        raise TypeError(f"`{what}` is complex ({arr.dtype}); the loss takes real data: pass the real and "
                        "imaginary parts as two float arrays.")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > _INT64_MAX:
        raise ValueError(f"`{what}` holds unsigned integers above 2**63 - 1 (max {int(arr.max())}), which int64 "
                         "cannot represent; reduce them (e.g. modulo a vocabulary size) first.")
    if arr.dtype.kind in "iub":
        out = np.array(arr, dtype=np.int64)
        out.setflags(write=False)
        return out
    if arr.dtype.kind != "f":
        raise TypeError(f"`{what}` has dtype {arr.dtype} (mixed types, strings, or integers beyond int64); "
                        "convert it to an int64 or float64 array first.")
    return finite_float_array(arr, what)


@dataclass(frozen=True, eq=False)
class GibbsPosterior:
    """A localized, tempered Gibbs posterior around a centre w*.

    Parameters
    ----------
    model
        The :class:`~pplpatterning.Model` defining the per-sample loss l_i(w).
    data
        ``{name: array}`` with a common leading dimension n. Integer (and boolean) arrays are
        kept as int64 (token ids, labels), the others as finite float64; complex data is refused.
    centre
        The centre w*, ``{name: array}``; defaults to ``model.centre_for(data)``.
    n_beta
        The inverse temperature times n, nβ. Default: the WBIC value n / log n.
    gamma
        Localization strength γ ≥ 0 (0 = none; the posterior must then be proper).
    weights
        Optional per-sample weights ρ_i ≥ 0, shape (n,).
    normalize_weights
        If True, L^ρ = Σ ρ_i l_i / Σ ρ_i; else (1/n) Σ ρ_i l_i. A bool. Weights that are all
        zero or whose sum overflows float64 are refused.
    sampled
        What to sample; everything else stays frozen at the centre (weight restriction).
        Parameter names, or a mask mapping ``{name: boolean array of that parameter's
        shape}`` to sample only some entries of a parameter (a head's slice of W_Q, a row
        block; :mod:`pplpatterning.spec.masks`). Default: all. A masked parameter is sampled
        as the 1-D vector of its True entries (``sampled_shapes`` gives its shape).
    """

    model: Model
    data: Mapping[str, np.ndarray]
    centre: Mapping[str, np.ndarray] | None = None
    n_beta: float | None = None
    gamma: float = 0.0
    weights: np.ndarray | None = None
    normalize_weights: bool = False
    sampled: tuple[str, ...] | None = None
    masks: Mapping[str, np.ndarray] = field(init=False)
    n: int = field(init=False)
    n_beta_source: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, Model):
            raise TypeError(
                f"`model` must be a pplpatterning.Model, got {type(self.model).__name__}; "
                "wrap your loss with pplpatterning.Model(...)."
            )
        model = self.model
        data, n = _checked_data(self.data)
        object.__setattr__(self, "data", MappingProxyType(data))
        object.__setattr__(self, "n", n)
        centre = _checked_centre(model, model.centre_for(data) if self.centre is None else self.centre)
        object.__setattr__(self, "centre", MappingProxyType(centre))
        n_beta, source = _checked_n_beta(self.n_beta, n)
        object.__setattr__(self, "n_beta", n_beta)
        object.__setattr__(self, "n_beta_source", source)
        object.__setattr__(self, "gamma", _checked_gamma(self.gamma))
        if not isinstance(self.normalize_weights, (bool, np.bool_)):
            raise TypeError(f"`normalize_weights` must be True or False, got {self.normalize_weights!r}.")
        object.__setattr__(self, "normalize_weights", bool(self.normalize_weights))
        if self.weights is not None:
            object.__setattr__(self, "weights", _check_weights(self.weights, n, self.normalize_weights))
        sampled, masks = _checked_sampled(model, self.sampled)
        object.__setattr__(self, "sampled", sampled)
        object.__setattr__(self, "masks", MappingProxyType(masks))
        object.__setattr__(self, "_loss_at_centre_per_sample", _loss_at_centre(model, centre, data, n))

    # ----------------------------------------------------------------- derived
    @property
    def frozen(self) -> tuple[str, ...]:
        """Parameters held at the centre (the complement of ``sampled``)."""
        return tuple(k for k in self.model.param_shapes if k not in self.sampled)

    @property
    def effective_weights(self) -> np.ndarray:
        """Weights c·ρ_i such that L^ρ = (1/n) Σ_i c ρ_i l_i (c = n/Σρ if normalised, else 1)."""
        if self.weights is None:
            return np.ones(self.n)
        if self.normalize_weights:
            return self.weights * (self.n / float(np.sum(self.weights)))
        return self.weights

    @property
    def loss_at_centre_per_sample(self) -> np.ndarray:
        """l_i(w*) for every sample, float64 (read-only)."""
        return self._loss_at_centre_per_sample  # type: ignore[attr-defined]

    @property
    def loss_at_centre(self) -> float:
        """L_n^ρ(w*) in float64."""
        return float(np.mean(self.effective_weights * self.loss_at_centre_per_sample))

    @property
    def sampled_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of each sampled parameter: the parameter's own, or (k,) for a mask with k
        True entries."""
        return {k: (int(self.masks[k].sum()),) if k in self.masks else tuple(self.model.param_shapes[k])
                for k in self.sampled}

    @property
    def sampled_centre(self) -> dict[str, np.ndarray]:
        """The centre of the sampled coordinates, ``{name: w*[name]}`` or ``w*[name][mask]``."""
        return {k: self.centre[k][self.masks[k]] if k in self.masks else self.centre[k] for k in self.sampled}

    @property
    def masked(self) -> dict[str, MaskedParam]:
        """``{name: MaskedParam}`` (NumPy) of the partly sampled parameters, for :func:`assemble`."""
        return {k: masked_param(m, self.centre[k]) for k, m in self.masks.items()}

    @property
    def restriction(self) -> tuple[str, ...] | dict[str, np.ndarray]:
        """The ``sampled`` argument that rebuilds this restriction: the names, or a mask mapping."""
        if not self.masks:
            return self.sampled
        return {k: self.masks.get(k, np.ones(self.model.param_shapes[k], dtype=bool)) for k in self.sampled}

    @property
    def sampled_dim(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.sampled_shapes.values()))

    def loss(self, params: Mapping[str, Any]) -> float:
        """L_n^ρ(w) in float64 with NumPy; ``params`` may omit frozen parameters."""
        full = self.full_params(params)
        return float(np.mean(self.effective_weights * self.model.per_sample_loss_numpy(full, self.data)))

    def potential(self, params: Mapping[str, Any]) -> float:
        """U(v) = nβ L_n^ρ(u*, v) + γ/2 ||v - v*||², the reference value in float64 NumPy."""
        centre = self.sampled_centre
        sq = sum(float(np.sum((np.asarray(params[k], np.float64) - centre[k]) ** 2)) for k in self.sampled)
        return self.n_beta * self.loss(params) + 0.5 * self.gamma * sq

    def full_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter: the sampled ones from ``params`` (a masked one as its (k,) vector
        of sampled entries), the frozen ones (and frozen entries) from the centre."""
        missing = [k for k in self.sampled if k not in params]
        if missing:
            raise ValueError(f"`params` lacks sampled parameters {missing}.")
        shapes = self.sampled_shapes
        sampled = {}
        for k in self.sampled:
            v = np.asarray(params[k], dtype=np.float64)
            if v.shape != shapes[k]:
                raise ValueError(f"`params[{k!r}]` has shape {v.shape}; the sampled coordinates of {k!r} have shape "
                                 f"{shapes[k]}" + (" (its masked entries)." if k in self.masks else "."))
            sampled[k] = v
        return assemble(sampled, {k: self.centre[k] for k in self.frozen}, self.masked, np)

    def with_(self, **changes: Any) -> "GibbsPosterior":
        """A copy with some fields changed (validated again), e.g. ``post.with_(weights=rho)``."""
        fields = dict(
            model=self.model, data=self.data, centre=self.centre, n_beta=self.n_beta, gamma=self.gamma,
            weights=self.weights, normalize_weights=self.normalize_weights, sampled=self.restriction,
        )
        if self.n_beta_source != "user" and "n_beta" not in changes:
            fields["n_beta"] = None
        fields.update(changes)
        return GibbsPosterior(**fields)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary stored in every Trace's attrs."""
        return {
            "model": self.model.name,
            "n": self.n,
            "n_beta": self.n_beta,
            "n_beta_source": self.n_beta_source,
            "gamma": self.gamma,
            "weights": "none" if self.weights is None else ("normalised" if self.normalize_weights else "raw"),
            "sampled": list(self.sampled),
            "masked": {k: int(m.sum()) for k, m in self.masks.items()},
            "loss_at_centre": self.loss_at_centre,
            "dim": self.sampled_dim,
        }

    def __repr__(self) -> str:
        return (
            f"GibbsPosterior(model={self.model.name!r}, n={self.n}, n_beta={self.n_beta:.6g} "
            f"[{self.n_beta_source}], gamma={self.gamma:g}, sampled={list(self.sampled)}, "
            f"weights={'none' if self.weights is None else 'given'})"
        )


def _checked_data(value: Any) -> tuple[dict[str, np.ndarray], int]:
    """The data as read-only arrays with a common leading dimension n ≥ 1, and n."""
    if not isinstance(value, Mapping) or not value:
        raise TypeError("`data` must be a non-empty mapping {name: array} with a common leading dimension n.")
    data = {str(k): data_array(v, f"data[{k!r}]") for k, v in value.items()}
    lengths = {k: (v.shape[0] if v.ndim else None) for k, v in data.items()}
    if any(v is None for v in lengths.values()):
        scalars = [k for k, v in lengths.items() if v is None]
        raise ValueError(f"`data` entries {scalars} are scalars; every entry needs a leading sample dimension n.")
    if len(set(lengths.values())) != 1:
        raise ValueError(f"`data` entries disagree on the number of samples n: {lengths}.")
    n = next(iter(lengths.values()))
    if n < 1:
        raise ValueError("`data` has zero samples.")
    return data, int(n)


def _checked_centre(model: Model, centre_in: Any) -> dict[str, np.ndarray]:
    """w*: one finite float64 array of the model's shape per parameter."""
    if not isinstance(centre_in, Mapping):
        raise TypeError("`centre` must be a mapping {parameter name: array}.")
    unknown = set(map(str, centre_in)) - set(model.param_shapes)
    if unknown:
        raise ValueError(
            f"`centre` names unknown parameters {sorted(unknown)}; "
            f"the model has {list(model.param_shapes)}."
        )
    centre = {}
    for name, shape in model.param_shapes.items():
        if name not in centre_in:
            raise ValueError(f"`centre` lacks parameter {name!r}; give a value for every parameter.")
        arr = finite_float_array(centre_in[name], f"centre[{name!r}]")
        if arr.shape != shape:
            raise ValueError(f"`centre[{name!r}]` has shape {arr.shape}; the model expects {shape}.")
        centre[name] = arr
    return centre


def _checked_n_beta(nb: Any, n: int) -> tuple[float, str]:
    """nβ (default the WBIC value n / log n) and where it came from."""
    if nb is None:
        if n < 2:
            raise ValueError("`n_beta` defaults to n/log n, which needs n ≥ 2; pass `n_beta` explicitly.")
        return n / math.log(n), "wbic: n/log(n)"
    if isinstance(nb, bool) or not isinstance(nb, (int, float, np.floating, np.integer)):
        raise TypeError(f"`n_beta` must be a positive number, got {type(nb).__name__}.")
    if not math.isfinite(float(nb)) or float(nb) <= 0:
        raise ValueError(f"`n_beta` must be a finite positive number (nβ > 0), got {nb!r}.")
    return float(nb), "user"


def _checked_gamma(g: Any) -> float:
    if isinstance(g, bool) or not isinstance(g, (int, float, np.floating, np.integer)):
        raise TypeError(f"`gamma` must be a non-negative number, got {type(g).__name__}.")
    if not math.isfinite(float(g)) or float(g) < 0:
        raise ValueError(f"`gamma` must be finite and ≥ 0 (0 means no localization), got {g!r}.")
    return float(g)


def _checked_sampled(model: Model, sampled_in: Any) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """(the sampled parameter names in the model's order, {name: mask} of the partly sampled)."""
    if sampled_in is None:
        return tuple(model.param_shapes), {}
    if isinstance(sampled_in, str):
        raise TypeError("`sampled` must be a sequence of parameter names, e.g. ('a',), not a string "
                        "(or a mask mapping {name: bool array}).")
    whole, masks = resolve_component(model.param_shapes, sampled_in, "sampled")
    return tuple(k for k in model.param_shapes if k in whole or k in masks), masks


def _loss_at_centre(model: Model, centre, data, n: int) -> np.ndarray:
    """l_i(w*) for every sample (read-only): the loss must accept the data and return one
    finite value per sample."""
    try:
        losses = model.per_sample_loss_numpy(centre, data)
    except Exception as exc:
        shapes = {k: v.shape for k, v in data.items()}
        raise ValueError(
            f"Model {model.name!r}: evaluating the loss on `data` at the centre failed "
            f"({type(exc).__name__}: {exc}). Check that `data` has the keys and shapes the model "
            f"expects; got {shapes}."
        ) from exc
    if losses.shape != (n,):
        raise ValueError(
            f"Model {model.name!r}: `loss` returned shape {losses.shape} on the data; "
            f"it must return one loss per sample, shape ({n},)."
        )
    if not np.all(np.isfinite(losses)):
        raise ValueError(f"Model {model.name!r}: the loss at the centre is not finite for some samples.")
    losses.setflags(write=False)
    return losses


def _check_weights(weights: Any, n: int, normalize: bool) -> np.ndarray:
    """ρ as float64, shape (n,), finite, ≥ 0, not all zero, with a finite sum (the loss
    averages ρ_i l_i and the normalised form divides by Σρ)."""
    w = finite_float_array(weights, "weights")
    if w.shape != (n,):
        raise ValueError(f"`weights` must have shape (n,) = ({n},), got {w.shape}.")
    if np.any(w < 0):
        raise ValueError(
            f"`weights` must be non-negative; {int(np.sum(w < 0))} are negative "
            "(clip them, or use a smaller patterning step α)."
        )
    if not np.any(w > 0):
        raise ValueError("`weights` are all zero, so the posterior has no data term; give at least one positive "
                         "weight, or drop `weights` for the unweighted posterior.")
    with np.errstate(over="ignore"):
        total = float(np.sum(w))
    if not math.isfinite(total):
        raise ValueError(f"`weights` sum to {total} (overflow in float64); rescale them, e.g. divide by their "
                         "maximum (with `normalize_weights=True` the scale does not matter).")
    return w


def localization_energy(sampled_params, centre, gamma, xp):
    """(γ/2) Σ_{k ∈ sampled} ||v_k - v*_k||², the localizing prior's negative log density."""
    sq = 0.0
    for k, v in sampled_params.items():
        sq = sq + xp.sum((v - centre[k]) ** 2)
    return 0.5 * gamma * sq


def tempered_loss_energy(loss_fn, params, batch, batch_weights, consts, n_beta, xp):
    """nβ · (1/B) Σ_b c ρ_b l_b(u*, v): nβ L_n^ρ on the full data, an unbiased estimate on a
    uniform minibatch (``batch_weights`` are the effective weights c ρ_b of its rows).
    ``params``: every parameter, the frozen ones at the centre (:func:`~.masks.assemble`)."""
    return n_beta * xp.mean(batch_weights * loss_fn(params, batch, consts, xp))


def per_sample_loss_delta(loss_fn, params, batch, batch_weights, loss_at_centre, consts, xp):
    """(L^ρ(w), L^ρ(w) - L^ρ(w*)) on a batch, the difference taken per sample.

    Averaging c ρ_i (l_i(w) - l_i(w*)) instead of subtracting two means avoids the
    cancellation that costs ~1e-3 absolute at n = 1e6 in float32 (docs/math.md §2).
    """
    losses = loss_fn(params, batch, consts, xp)
    loss = xp.mean(batch_weights * losses)
    delta = xp.mean(batch_weights * (losses - loss_at_centre))
    return loss, delta
