"""Argument checks shared by the model factories.

Every check raises ``ValueError`` with a message that names the offending argument, so a
bad call such as ``get_model("rrr", M=0)`` says ``\\`M\\` must be a positive integer``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

__all__ = [
    "positive_int", "nonnegative_int", "positive_float", "int_exponents", "positive_floats",
    "finite_vector", "split_point",
]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def positive_int(value, name: str) -> int:
    """``value`` as an int ≥ 1 (bools and non-integral numbers are rejected)."""
    if not _is_int(value) or int(value) < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def nonnegative_int(value, name: str) -> int:
    """``value`` as an int ≥ 0."""
    if not _is_int(value) or int(value) < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
    return int(value)


def positive_float(value, name: str) -> float:
    """``value`` as a finite float > 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a finite positive number, got {value!r}.")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"`{name}` must be a finite positive number, got {value!r}.")
    return v


def _sequence(values, name: str, what: str) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise ValueError(f"`{name}` must be a sequence of {what}, e.g. (1, 2); got {values!r}.")
    items = list(np.asarray(values).tolist()) if isinstance(values, np.ndarray) else list(values)
    if not items:
        raise ValueError(f"`{name}` must be a non-empty sequence of {what}; got an empty sequence.")
    return items


def int_exponents(values, name: str) -> tuple[int, ...]:
    """A non-empty sequence of positive integers (integral floats such as 2.0 are accepted)."""
    items = _sequence(values, name, "positive integers")
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise ValueError(f"`{name}` must contain positive integers; got {v!r} in {values!r}.")
        fv = float(v)
        if not math.isfinite(fv) or fv < 1 or fv != math.floor(fv):
            raise ValueError(f"`{name}` must contain positive integers; got {v!r} in {values!r}.")
        out.append(int(fv))
    return tuple(out)


def positive_floats(values, name: str, length: int | None = None, length_name: str = "") -> tuple[float, ...]:
    """A non-empty sequence of finite positive floats, optionally of a given length."""
    items = _sequence(values, name, "positive numbers")
    out = tuple(positive_float(v, f"{name}[{i}]") for i, v in enumerate(items))
    if length is not None and len(out) != length:
        raise ValueError(f"`{name}` has {len(out)} entries but `{length_name}` has {length}; they must match.")
    return out


def finite_vector(values, name: str, length: int) -> np.ndarray:
    """A float64 vector of the given length with finite entries."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a numeric vector of length {length}, got {values!r}.") from None
    if arr.shape != (length,):
        raise ValueError(f"`{name}` must have shape ({length},), got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite, got {values!r}.")
    return arr.copy()


def split_point(value, d: int, name: str = "split") -> int | None:
    """``None`` (one parameter vector ``w``) or an int 1 ≤ split ≤ d-1 (parameters ``u``, ``v``)."""
    if value is None:
        return None
    if not _is_int(value) or not 1 <= int(value) <= d - 1:
        raise ValueError(
            f"`{name}` must be None or an integer with 1 ≤ {name} ≤ d-1 = {d - 1} "
            f"(u = the first `{name}` coordinates, v = the rest); got {value!r}."
        )
    return int(value)
