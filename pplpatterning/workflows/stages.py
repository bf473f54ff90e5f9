"""Stage boundaries of an LLC trajectory: the significant turning points of λ̂ over training.

Developmental interpretability places the boundaries between developmental stages at the
critical points of the estimated LLC curve λ̂(t) over training (Hoogland, Wang,
Farrugia-Roberts, Carroll, Wei & Murfet 2024, "The developmental landscape of in-context
learning", arXiv 2402.02364). :func:`detect_stages` finds the critical points that are
*extrema* (the slope of λ̂ changes sign), and only those that the Monte Carlo error bars
cannot explain.

**The rule.** Let y_i = λ̂ at step t_i with standard error s_i (its MCSE), independent across
checkpoints (each checkpoint's chains are their own). The curve is followed in step order as
a zig-zag with hysteresis τ: a running maximum y_h (while rising) is confirmed as a turning
point at the first later point j with

    (y_h - y_j) / √(s_h² + s_j²) > τ,

after which the curve is falling and the running minimum is followed the same way (and
symmetrically). The first leg only sets the direction; the end points are never
boundaries. The result is the steps of the confirmed extrema, alternately maxima and minima.

**The threshold.** τ is the (1 - ``alpha``) quantile of the largest standardised drop
max_{i<j} (ε_i - ε_j)/√(s_i² + s_j²) of pure noise ε_i ~ N(0, s_i²), by Monte Carlo with
``num_null`` draws from a fixed ``seed``. If the true curve is non-decreasing, every drop
of the data is at most the drop of its noise, so a spurious maximum is reported with
probability at most ``alpha`` (and symmetrically for non-increasing curves): on a monotone
or flat curve the detector reports no boundary with probability ≥ 1 - ``alpha``. A true
turning point is found once its rise and fall each exceed τ standard errors of a
difference (at ``alpha`` = 0.05 and one common error bar: τ = 2.9 for 10 checkpoints,
3.6 for 30, 4.1 for 100, 4.4 for 200).

The rule uses only the order of the steps, so it is the same in step and in log step (a
critical point of λ̂(t) is one of λ̂(log t)). It does not report a plateau where the slope
vanishes without changing sign, and a boundary is located at a checkpoint (the extreme
one), so its precision is the checkpoint spacing near it. The MCSE is taken as the
standard deviation of the error; an MCSE underestimated from few effective draws makes the
test too liberal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

__all__ = ["detect_stages", "turning_point_threshold", "DEFAULT_ALPHA", "DEFAULT_NUM_NULL"]

#: The default probability of reporting a boundary on a monotone (or flat) curve.
DEFAULT_ALPHA = 0.05
#: The default number of noise draws behind the threshold τ.
DEFAULT_NUM_NULL = 4000


def _max_drop(noise: np.ndarray, se: np.ndarray) -> np.ndarray:
    """max_{i<j} (e_i - e_j)/√(s_i² + s_j²) of every row of ``noise`` (draws, n)."""
    if np.all(se == se[0]):  # one error bar: the running maximum, O(n)
        running = np.maximum.accumulate(noise, axis=1)
        return np.max(running[:, :-1] - noise[:, 1:], axis=1) / (math.sqrt(2.0) * se[0])
    best = np.full(noise.shape[0], -np.inf)
    var = se * se
    for j in range(1, noise.shape[1]):  # O(n²) pairs, vectorised over draws and i < j
        drops = (noise[:, :j] - noise[:, j:j + 1]) / np.sqrt(var[:j] + var[j])
        best = np.maximum(best, drops.max(axis=1))
    return best


@lru_cache(maxsize=64)
def _threshold(se: tuple[float, ...], alpha: float, num_null: int, seed: int) -> float:
    s = np.asarray(se, dtype=np.float64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, len(s)]))
    stats = np.concatenate([_max_drop(rng.standard_normal((k, len(s))) * s, s)
                            for k in np.diff(np.r_[0:num_null:1000, num_null])])  # 1000 draws at a time
    return float(np.quantile(stats, 1.0 - alpha))


def turning_point_threshold(se, *, alpha: float = DEFAULT_ALPHA, num_null: int = DEFAULT_NUM_NULL,
                            seed: int = 0) -> float:
    """τ: the (1 - ``alpha``) quantile of the largest standardised drop
    max_{i<j} (ε_i - ε_j)/√(s_i² + s_j²) of independent noise ε_i ~ N(0, s_i²) over the
    checkpoints (``se`` = the s_i), by Monte Carlo with ``num_null`` draws seeded by ``seed``
    (deterministic). With one common error bar τ depends only on the number of checkpoints.
    See the module docstring for why this bounds the false-detection probability by ``alpha``."""
    s = _checked_se(se, None)
    alpha, num_null = _checked_level(alpha, num_null)
    if s.size < 2:
        return math.inf
    scale = float(s.max())
    return _threshold(tuple(float(v) for v in s / scale), alpha, num_null, int(seed))


def detect_stages(steps: Sequence[float], llc: Sequence[float], se, *, alpha: float = DEFAULT_ALPHA,
                  num_null: int = DEFAULT_NUM_NULL, seed: int = 0) -> list:
    """The stage boundaries of an LLC trajectory: the steps of λ̂'s significant turning points.

    ``steps`` (strictly increasing training steps), ``llc`` (λ̂ at each) and ``se`` (its
    standard error, the MCSE: one number or one per step, > 0) describe the curve. A
    boundary is a checkpoint where λ̂ has a local maximum or minimum whose rise and fall
    both exceed τ standard errors of a difference, τ = :func:`turning_point_threshold`
    (``alpha``, ``num_null``, ``seed``): on a monotone or flat curve no boundary is reported
    with probability ≥ 1 - ``alpha``. The full rule, its guarantee and its limits are in
    the module docstring (after arXiv 2402.02364, which puts stage boundaries at critical
    points of the LLC curve). Returns the boundary steps in increasing order (maxima and
    minima alternate); fewer than three checkpoints have none.
    """
    x = np.asarray(steps)
    if x.ndim != 1 or x.dtype.kind not in "iuf":
        raise TypeError(f"`steps` must be a 1-D sequence of numbers (the training steps), got shape {x.shape}, "
                        f"dtype {x.dtype}.")
    n = x.size
    y = np.asarray(llc, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"`llc` must have one value per step: shape ({n},), got {y.shape}.")
    if not np.all(np.isfinite(y)) or not np.all(np.isfinite(x.astype(np.float64))):
        raise ValueError("`steps` and `llc` must be finite; drop the checkpoints whose λ̂ is NaN "
                         "(see llc_mcse and the runs' diagnose()).")
    if n > 1 and np.any(np.diff(x) <= 0):
        raise ValueError("`steps` must be strictly increasing; sort the checkpoints by step and drop duplicates.")
    s = _checked_se(se, n)
    alpha, num_null = _checked_level(alpha, num_null)
    if n < 3:
        return []
    tau = turning_point_threshold(s, alpha=alpha, num_null=num_null, seed=seed)
    return [x[i].item() for i in _zigzag(y, s, tau)]


def _zigzag(y: np.ndarray, s: np.ndarray, tau: float) -> list[int]:
    """The indices of the extrema confirmed by a reversal of more than ``tau`` standard errors."""
    def z(a: int, b: int) -> float:  # standardised y_a - y_b
        return (y[a] - y[b]) / math.hypot(s[a], s[b])

    direction, hi, lo, out = 0, 0, 0, []
    for j in range(1, y.size):
        if direction == 0:  # the first leg: which way does the curve go?
            if z(j, lo) > tau:
                direction, hi = 1, j
            elif z(hi, j) > tau:
                direction, lo = -1, j
            else:
                hi = j if y[j] > y[hi] else hi
                lo = j if y[j] < y[lo] else lo
        elif direction > 0:  # rising: follow the maximum until a significant drop
            if y[j] >= y[hi]:
                hi = j
            elif z(hi, j) > tau:
                out.append(hi)
                direction, lo = -1, j
        else:  # falling: follow the minimum until a significant rise
            if y[j] <= y[lo]:
                lo = j
            elif z(j, lo) > tau:
                out.append(lo)
                direction, hi = 1, j
    return out


def _checked_se(se, n: int | None) -> np.ndarray:
    s = np.asarray(se, dtype=np.float64)
    if n is not None and s.ndim == 0:
        s = np.full(n, float(s))
    if s.ndim != 1 or (n is not None and s.shape != (n,)):
        raise ValueError(f"`se` must be one number or one standard error per step (shape ({n},)), got shape {s.shape}.")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("`se` must be finite and > 0 (the MCSE of each λ̂); a zero or NaN MCSE means a run "
                         "without usable draws: rerun it or drop that checkpoint.")
    return s


def _checked_level(alpha, num_null) -> tuple[float, int]:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < float(alpha) < 1:
        raise ValueError(f"`alpha` must be a number in (0, 1) (the false-detection probability), got {alpha!r}.")
    if isinstance(num_null, bool) or not isinstance(num_null, (int, np.integer)) or int(num_null) < 100:
        raise ValueError(f"`num_null` must be an integer ≥ 100 (noise draws behind the threshold), got {num_null!r}.")
    if int(num_null) * float(alpha) < 10:
        raise ValueError(f"`num_null`={num_null} is too few for alpha={alpha}: the quantile needs "
                         "num_null·alpha ≥ 10 draws beyond it; raise num_null.")
    return float(alpha), int(num_null)
