"""The model contract: a per-sample loss written once against the array-API namespace.

A :class:`Model` carries everything the backends need to build a Gibbs posterior and
everything the estimators need to check themselves against known answers:

- ``loss(params, batch, consts, xp) -> Array[batch]``: the per-sample loss l_i(w)
  (a negative log-likelihood up to constants). ``xp`` is the array namespace the backend
  passes in (``jax.numpy`` or torch through array-api-compat); autodiff belongs to the
  backend. ``consts`` holds the model's fixed arrays (exponents, noise scales, ...):
  they are passed as arguments, never closed over, so the same compiled program serves
  every instance of a model family with the same shapes (no recompilation per example).
- ``param_shapes``: parameter names and shapes, in a fixed order.
- ``centre``: the default centre w* (a local minimum of the population loss).
- ``generate(n, seed)``: a data generator returning ``{name: array with leading dim n}``.
- ``lam`` / ``multiplicity``: the exact learning coefficient and its multiplicity at the
  default centre where known (docs/math.md §5), else ``None``.
- ``centre_for(data)``: an optional data-dependent centre (e.g. the least-squares
  estimate, which is the exact minimum of the empirical loss L_n).
- ``finite_target(posterior)``: optional exact E[λ̂] a perfect sampler returns at the
  posterior's nβ and γ (docs/math.md §6).

The ``loss`` must be a module-level function (not a closure or bound method) so that it
hashes the same across instances; backends key their compiled programs on it.

Sequence models (``Model(..., tokens="mean")`` or ``"sum"``): the loss returns per-token
losses, shape ``(batch, T)``; the model's per-sample loss is their mean (or sum) over the T
tokens of each sequence (:class:`TokenReduced`), which is what the posterior uses, and the
per-token losses stay available (``Model.token_loss``) for per-token susceptibilities
(``Probes(per_token=True)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["Model", "LossFn", "TokenReduced", "TOKEN_REDUCTIONS"]

#: Rows per chunk of the NumPy reference evaluation of l_i(w) (``per_sample_loss_numpy``).
REFERENCE_ROWS = 2048

#: How a sequence's per-token losses become its per-sample loss.
TOKEN_REDUCTIONS = ("mean", "sum")

LossFn = Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any], Any], Any]


def _frozen_arrays(arrays: Mapping[str, Any], what: str) -> Mapping[str, np.ndarray]:
    out = {}
    for key, value in arrays.items():
        arr = np.array(value, dtype=np.float64 if np.asarray(value).dtype.kind in "fiub" else None)
        arr.setflags(write=False)
        out[str(key)] = arr
    return MappingProxyType(out)


@dataclass(frozen=True)
class TokenReduced:
    """l_i(w) = mean_t (or sum_t) of ``token_loss(params, batch, consts, xp)[i, t]``: the
    per-sample loss of a model whose loss returns per-token losses (batch, T). Equal (and
    hashing equal) for the same function and reduction, like a module-level loss."""

    token_loss: LossFn
    how: str = "mean"

    def __call__(self, params, batch, consts, xp):
        per_token = self.token_loss(params, batch, consts, xp)
        return xp.mean(per_token, axis=-1) if self.how == "mean" else xp.sum(per_token, axis=-1)


@dataclass(frozen=True, eq=False)
class Model:
    """A model family member: per-sample loss, parameter shapes, centre and known answers.

    Parameters
    ----------
    name
        Short identifier, used in traces and reports.
    loss
        ``loss(params, batch, consts, xp)`` returning the per-sample losses, shape
        ``(batch_size,)``. Module-level function; see the module docstring.
    param_shapes
        ``{name: shape}`` of every parameter.
    centre
        Default centre w*, ``{name: array}`` matching ``param_shapes``.
    consts
        Fixed arrays the loss reads (passed to it, not closed over).
    data_generator
        ``data_generator(n, rng, consts) -> {name: array (n, ...)}``.
    lam, multiplicity
        Exact learning coefficient λ and multiplicity m at ``centre``, where known.
    centre_fn
        Optional ``centre_fn(data, consts) -> {name: array}``: a data-dependent centre.
    target_fn
        Optional ``target_fn(posterior) -> float``: exact finite-nβ expectation of λ̂.
    description
        One line for tables and ``--help``.
    tokens
        ``None`` (default): ``loss`` returns one loss per sample. ``"mean"`` / ``"sum"``:
        ``loss`` returns per-token losses ``(batch, T)`` and the per-sample loss is their
        mean / sum over the sequence (``Model.loss`` is then that reduction and
        ``Model.token_loss`` the per-token function).
    """

    name: str
    loss: LossFn
    param_shapes: Mapping[str, tuple[int, ...]]
    centre: Mapping[str, np.ndarray]
    consts: Mapping[str, np.ndarray] = field(default_factory=dict)
    data_generator: Callable[..., dict[str, np.ndarray]] | None = None
    lam: float | None = None
    multiplicity: int | None = None
    centre_fn: Callable[..., dict[str, np.ndarray]] | None = None
    target_fn: Callable[[Any], float | None] | None = None
    description: str = ""
    tokens: str | None = None

    def __post_init__(self) -> None:
        if not callable(self.loss):
            raise TypeError(f"Model {self.name!r}: `loss` must be callable, got {type(self.loss).__name__}.")
        if self.tokens is not None:
            if self.tokens not in TOKEN_REDUCTIONS:
                raise ValueError(f"Model {self.name!r}: `tokens` must be None, 'mean' or 'sum', got {self.tokens!r}.")
            if not isinstance(self.loss, TokenReduced):
                object.__setattr__(self, "loss", TokenReduced(self.loss, self.tokens))
        shapes = {str(k): tuple(int(s) for s in v) for k, v in self.param_shapes.items()}
        if not shapes:
            raise ValueError(f"Model {self.name!r}: `param_shapes` is empty; a model needs at least one parameter.")
        object.__setattr__(self, "param_shapes", MappingProxyType(shapes))
        centre = _frozen_arrays(self.centre, "centre")
        for key, shape in shapes.items():
            if key not in centre:
                raise ValueError(f"Model {self.name!r}: `centre` lacks parameter {key!r}.")
            if centre[key].shape != shape:
                raise ValueError(
                    f"Model {self.name!r}: `centre[{key!r}]` has shape {centre[key].shape}, "
                    f"`param_shapes` says {shape}."
                )
        extra = set(centre) - set(shapes)
        if extra:
            raise ValueError(f"Model {self.name!r}: `centre` has unknown parameters {sorted(extra)}.")
        object.__setattr__(self, "centre", centre)
        object.__setattr__(self, "consts", _frozen_arrays(self.consts, "consts"))

    @property
    def token_loss(self) -> LossFn | None:
        """The per-token loss ``(batch, T)`` of a sequence model (``tokens`` set), else None."""
        return self.loss.token_loss if isinstance(self.loss, TokenReduced) else None

    @property
    def dim(self) -> int:
        """Number of scalar parameters d."""
        return int(sum(int(np.prod(s)) for s in self.param_shapes.values()))

    def generate(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Draw a data set of ``n`` samples with a fixed seed."""
        if self.data_generator is None:
            raise ValueError(f"Model {self.name!r} has no data generator; pass `data` explicitly.")
        if int(n) < 1:
            raise ValueError(f"`n` must be a positive integer, got {n!r}.")
        rng = np.random.default_rng(seed)
        return self.data_generator(int(n), rng, self.consts)

    def centre_for(self, data: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """The centre to use with ``data``: ``centre_fn(data)`` if given, else ``centre``."""
        if self.centre_fn is None:
            return self.centre
        return self.centre_fn(data, self.consts)

    def per_sample_loss_numpy(self, params: Mapping[str, Any], data: Mapping[str, Any]) -> np.ndarray:
        """Evaluate l_i(w) for every sample with NumPy in float64 (reference implementation),
        :data:`REFERENCE_ROWS` rows at a time: the loss is per sample, so the chunks give the
        same values, and the forward pass's activations (a transformer's attention patterns
        are rows × heads × T² floats) never exist for all n rows at once."""
        p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        arrays = {k: np.asarray(v) for k, v in data.items()}
        n = len(next(iter(arrays.values()))) if arrays else 0
        if n <= REFERENCE_ROWS:
            return np.asarray(self.loss(p, arrays, self.consts, np), dtype=np.float64)
        parts = [np.asarray(self.loss(p, {k: v[a:a + REFERENCE_ROWS] for k, v in arrays.items()}, self.consts, np),
                      dtype=np.float64) for a in range(0, n, REFERENCE_ROWS)]
        return np.concatenate(parts, axis=0)

    def check_example(self, example_data: Mapping[str, Any], rows: int = 8) -> None:
        """Evaluate the per-sample loss at the centre on the first ``rows`` rows of
        ``example_data`` now (what the adapters' ``example_data=`` does), so that a loss that
        fails or is not one value per sample says so before any posterior is built."""
        if not isinstance(example_data, Mapping) or not example_data:
            raise TypeError("`example_data` must be a non-empty mapping {name: array (n, ...)}.")
        head = {k: np.asarray(v)[:rows] for k, v in example_data.items()}
        n = len(next(iter(head.values())))
        shape = np.shape(self.per_sample_loss_numpy(self.centre, head))
        if shape != (n,):
            hint = (" It returned a single number: do not average over the batch (e.g. drop a final `.mean()`)."
                    if shape == () else " Sum or average over the non-sample axes so that there is one loss per row.")
            raise ValueError(f"Model {self.name!r}: the loss must return one loss per sample, shape ({n},) for "
                             f"{n} rows of example_data; got shape {shape}.{hint}")

    def __repr__(self) -> str:
        lam = "unknown" if self.lam is None else f"{self.lam:g}"
        return f"Model({self.name!r}, d={self.dim}, λ={lam}, m={self.multiplicity})"
