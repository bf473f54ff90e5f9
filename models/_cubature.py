"""Global adaptive tensor-product Gauss–Kronrod cubature of e^{-u} and e^{-u} g on a box.

:func:`adaptive_cubature` integrates, over the box spanned by one sorted array of
breakpoints per axis (1 or 2 axes), the mass ∫e^{-u} and the moment ∫e^{-u} g of an
``energy(points) -> (u, g)``, and returns their ratio E[g] under p ∝ e^{-u}. It is the
cubature step of :func:`~._quad2d.finite_target_by_quadrature` (docs/math.md §6) and of the
two-solutions masses (:func:`~.two_solutions.solution_masses`).

Rule. On each rectangle, the tensor Kronrod rule K15⊗K15 (or K7⊗K7); the error estimate
of axis j is |K⊗K - (G along j, K along the others)|, the difference from the embedded
Gauss rule G7 (or G3) along j, for both the mass and the moment, propagated through their
ratio: err = (e_moment + |E| e_mass)/mass. Piessens et al. 1983, *QUADPACK* (the qk15/qk7
constants below); the global adaptive subdivision along the worst axis is in the manner of
Genz & Malik 1980, J. Comput. Appl. Math. 6(4).

Refinement. The rectangles that carry half of the total error estimate are bisected along
their worst axis, until the estimate is below ``rel_tol``·|E| + ``abs_tol`` or the
evaluation budget ``max_points`` is spent. The integrand is evaluated relative to
e^{-shift}, the smallest u seen so far, so that nβ-scaled energies do not underflow; when
a smaller u appears, the stored sums are rescaled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["adaptive_cubature", "gauss_kronrod"]

# Gauss–Kronrod pairs on [-1, 1] (QUADPACK qk15 and qk7 constants); the Gauss weights are zero
# at the Kronrod-only nodes. Checked in tests/test_targets.py: K15 is exact to degree 23 and
# G7 to 13; K7 to 11 and G3 to 5.
_XK15_POS = (0.991455371120812639206854697526329, 0.949107912342758524526189684047851,
             0.864864423359769072789712788640926, 0.741531185599394439863864773280788,
             0.586087235467691130294144845693013, 0.405845151377397166906606412076961,
             0.207784955007898467600689403773245)
_WK15_POS = (0.022935322010529224963732008058970, 0.063092092629978553290700663189204,
             0.104790010322250183839876322541518, 0.140653259715525918745189590510238,
             0.169004726639267902826583426598550, 0.190350578064785409913256402421014,
             0.204432940075298892414161999234649)
_WK15_0 = 0.209482141084727828012999174891714
_WG7_POS = (0.129484966168869693270611432679082, 0.279705391489276667901467771423780,
            0.381830050505118944950369775488975)  # at nodes 1, 3, 5 of _XK15_POS
_WG7_0 = 0.417959183673469387755102040816327
_XK7_POS = (0.9604912687080202, 0.7745966692414834, 0.4342437493468026)
_WK7_POS = (0.1046562260264672, 0.2684880898683334, 0.4013974147759622)
_WK7_0 = 0.4509165386584741
_WG3_POS = 5.0 / 9.0  # at node 1 of _XK7_POS
_WG3_0 = 8.0 / 9.0


def gauss_kronrod(order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nodes, Kronrod weights, embedded Gauss weights) of the G7/K15 (``order=15``) or
    G3/K7 (``order=7``) rule on [-1, 1]."""
    if order == 15:
        x = np.array([*(-np.asarray(_XK15_POS)), 0.0, *np.asarray(_XK15_POS)[::-1]])
        wk = np.array([*_WK15_POS, _WK15_0, *_WK15_POS[::-1]])
        wg = np.zeros(15)
        for i, w in zip((1, 3, 5), _WG7_POS):
            wg[i] = wg[14 - i] = w
        wg[7] = _WG7_0
        return x, wk, wg
    if order == 7:
        x = np.array([*(-np.asarray(_XK7_POS)), 0.0, *np.asarray(_XK7_POS)[::-1]])
        wk = np.array([*_WK7_POS, _WK7_0, *_WK7_POS[::-1]])
        wg = np.zeros(7)
        wg[1] = wg[5] = _WG3_POS
        wg[3] = _WG3_0
        return x, wk, wg
    raise ValueError(f"`order` must be 7 or 15, got {order!r}.")


def _tensor_rule(dim: int, order: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes (order^D, D) on [-1, 1]^D, the Kronrod tensor weights, and per axis j the weights
    of the rule with Gauss along axis j and Kronrod along the others (their difference from
    the Kronrod tensor rule is the error estimate of that axis)."""
    xk, wk, wg = gauss_kronrod(order)
    if dim == 1:
        return xk[:, None], wk.copy(), wg[None, :].copy()
    gx, gy = np.meshgrid(xk, xk, indexing="ij")
    nodes = np.stack([gx.ravel(), gy.ravel()], axis=1)
    axis_rules = np.stack([np.outer(wg, wk).ravel(), np.outer(wk, wg).ravel()])
    return nodes, np.outer(wk, wk).ravel(), axis_rules


class _RectangleRule:
    """The tensor rule on a batch of rectangles, with the running shift and evaluation count.

    ``rule(lo, hi)`` returns, per rectangle, the Kronrod integrals (k0 of e^{-(u - shift)},
    k1 of e^{-(u - shift)} g), their per-axis error estimates (e0, e1: (R, D)), and the
    factor ``rescale`` by which previously returned values must be multiplied because the
    shift moved to a smaller u in this batch (1 when it did not).
    """

    def __init__(self, energy, dim: int, order: int, shift: float | None):
        self.energy, self.dim, self.shift, self.points = energy, dim, shift, 0
        self.nodes, self.wk, self.w_axis = _tensor_rule(dim, order)

    @property
    def size(self) -> int:
        """Evaluations per rectangle."""
        return self.wk.size

    def __call__(self, lo: np.ndarray, hi: np.ndarray):
        mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        pts = mid[:, None, :] + half[:, None, :] * self.nodes[None, :, :]
        u, g = self.energy(pts.reshape(-1, self.dim))
        u = np.asarray(u, dtype=np.float64).reshape(lo.shape[0], -1)
        g = np.asarray(g, dtype=np.float64).reshape(lo.shape[0], -1)
        self.points += u.size
        finite = np.isfinite(u)
        u = np.where(finite, u, np.inf)
        g = np.where(finite, g, 0.0)
        umin = float(np.min(u)) if u.size else np.inf
        rescale = 1.0
        if np.isfinite(umin) and (self.shift is None or umin < self.shift):
            old = self.shift
            self.shift = umin
            rescale = 0.0 if old is None else math.exp(umin - old)
        if self.shift is None:  # no finite value yet: any reference will do
            self.shift = 0.0
        q = np.exp(-(u - self.shift))
        qg = q * g
        vol = np.prod(half, axis=1)
        k0, k1 = (q @ self.wk) * vol, (qg @ self.wk) * vol
        e0 = np.abs(k0[:, None] - (q @ self.w_axis.T) * vol[:, None])
        e1 = np.abs(k1[:, None] - (qg @ self.w_axis.T) * vol[:, None])
        return k0, k1, e0, e1, rescale


def _initial_cells(breaks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi), each (R, D): the rectangles of the tensor grid spanned by ``breaks``."""
    dim = len(breaks)
    edges = [np.asarray(b, dtype=np.float64) for b in breaks]
    cells = np.meshgrid(*[np.arange(e.size - 1) for e in edges], indexing="ij")
    lo = np.stack([edges[j][cells[j].ravel()] for j in range(dim)], axis=1)
    hi = np.stack([edges[j][cells[j].ravel() + 1] for j in range(dim)], axis=1)
    return lo, hi


def _bisect_worst(lo, hi, err_r, err_axis, total: float, budget: int):
    """(keep, new lo, new hi): the rectangles carrying half of ``total`` (at most ``budget``),
    each bisected along its worst axis; ``keep`` marks the rectangles left as they are."""
    ranking = np.argsort(err_r)[::-1]
    cum = np.cumsum(err_r[ranking])
    count = min(int(np.searchsorted(cum, 0.5 * total)) + 1, ranking.size, budget)
    pick = ranking[:count]
    keep = np.ones(lo.shape[0], dtype=bool)
    keep[pick] = False
    plo, phi = lo[pick], hi[pick]
    axis = np.argmax(err_axis[pick], axis=1)
    split = np.zeros_like(plo, dtype=bool)
    split[np.arange(count), axis] = True
    pmid = 0.5 * (plo + phi)
    clo = np.concatenate([plo, np.where(split, pmid, plo)])
    chi = np.concatenate([np.where(split, pmid, phi), phi])
    return keep, clo, chi


def _shell_mass(k0, lo, hi, mass: float, inner) -> float:
    """Fraction of the mass in the rectangles outside the box ``inner`` = (lo, hi) (0 without one)."""
    if inner is None:
        return 0.0
    in_lo, in_hi = np.asarray(inner[0], dtype=np.float64), np.asarray(inner[1], dtype=np.float64)
    tol = 1e-12 * np.maximum(1.0, np.abs(in_hi - in_lo))
    outside = np.any((lo < in_lo - tol) | (hi > in_hi + tol), axis=1)
    return float(np.sum(k0[outside])) / mass


def adaptive_cubature(
    energy: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    breaks: list[np.ndarray],
    *,
    rel_tol: float = 1e-9,
    abs_tol: float = 1e-12,
    max_points: int = 3_000_000,
    shift: float | None = None,
    inner: tuple[np.ndarray, np.ndarray] | None = None,
    order: int = 15,
) -> dict[str, Any] | None:
    """∫ e^{-u} and ∫ e^{-u} g over the box spanned by ``breaks`` (one sorted array per axis).

    ``energy(points (P, D)) -> (u (P,), g (P,))``. Tensor Gauss–Kronrod G7/K15 (``order=15``)
    or G3/K7 (``order=7``) on each rectangle; the error estimate of axis j is the difference
    between the Kronrod tensor rule and the rule with Gauss along j, and a rectangle is
    split in two along its worst axis. Returns a dict with
    ``mass`` and ``moment`` (both relative to e^{-shift}), ``shift``, ``value`` =
    moment/mass, ``error`` (estimate for ``value``), ``shell_mass`` (fraction of the mass
    outside the box ``inner`` = (lo, hi), whose faces must be breakpoints; 0 without
    ``inner``), ``points`` (evaluations used) and ``converged``; ``None`` if the integrand
    carries no mass.
    """
    dim = len(breaks)
    if dim not in (1, 2):
        raise ValueError(f"adaptive_cubature integrates in 1 or 2 dimensions, got {dim}.")
    rule = _RectangleRule(energy, dim, order, shift)
    lo, hi = _initial_cells(breaks)
    k0, k1, e0, e1, _ = rule(lo, hi)
    converged = False
    while True:
        mass, moment = float(np.sum(k0)), float(np.sum(k1))
        if not (mass > 0.0 and math.isfinite(mass) and math.isfinite(moment)):
            return None
        value = moment / mass
        err_axis = (e1 + abs(value) * e0) / mass  # (R, D)
        err_r = np.sum(err_axis, axis=1)
        total = float(np.sum(err_r))
        if total <= rel_tol * abs(value) + abs_tol:
            converged = True
            break
        budget = (max_points - rule.points) // (2 * rule.size)
        if budget < 1:
            break
        keep, clo, chi = _bisect_worst(lo, hi, err_r, err_axis, total, budget)
        ck0, ck1, ce0, ce1, rescale = rule(clo, chi)
        lo, hi = np.concatenate([lo[keep], clo]), np.concatenate([hi[keep], chi])
        k0 = np.concatenate([k0[keep] * rescale, ck0])
        k1 = np.concatenate([k1[keep] * rescale, ck1])
        e0 = np.concatenate([e0[keep] * rescale, ce0])
        e1 = np.concatenate([e1[keep] * rescale, ce1])
    mass, moment = float(np.sum(k0)), float(np.sum(k1))
    value = moment / mass
    error = float(np.sum((e1 + abs(value) * e0) / mass))
    return {"mass": mass, "moment": moment, "shift": float(rule.shift), "value": value, "error": error,
            "shell_mass": _shell_mass(k0, lo, hi, mass, inner), "points": int(rule.points),
            "converged": converged}
