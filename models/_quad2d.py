"""Exact finite-nβ targets of 1- and 2-dimensional posteriors by adaptive cubature.

``finite_target_by_quadrature(posterior)`` returns ``(E[λ̂], error estimate)`` for a Gibbs
posterior whose sampled parameters have 1 or 2 scalar coordinates, where

    E[λ̂] = nβ E_p[L_n^ρ(w) - L_n^ρ(w*)],   p(v) ∝ exp(-U(v)),
    U(v)  = nβ (L_n^ρ(u*, v) - L_n^ρ(w*)) + (γ/2)||v - v*||²,

on the posterior's actual data, weights, centre and restriction, the loss difference taken
per sample (MATH.md §2, §6). It is the value a perfect sampler returns; it returns ``None``
when the posterior is improper (e.g. γ = 0 with a flat or asymptotically flat direction)
or when the cubature does not reach its tolerance.

Method
------
1. Domain. A box [v* - B, v* + B]^D. B is doubled until U on the box boundary is at least
   ``drop`` (default 80, e^-80 ≈ 2e-35) above the smallest U seen, *and* the boundary
   minimum keeps rising on the boxes of half-width 2B, 4B and 8B (by ≥ 1 per doubling);
   then halved while both still hold. The second condition rejects asymptotically flat
   directions (mixtures, tanh networks with γ = 0), whose posterior is improper although
   the boundary density is tiny. Each side of the boundary is scanned on a uniform grid
   plus points graded towards the anchors (the centre v*, the mode, and the model's
   default centre, where the singular sets of the zoo models cross), and the lowest scan
   points are polished by a bounded 1-D minimisation, so that narrow valleys crossing the
   boundary elsewhere (the hyperbola ab = const of a product model) are found.
2. Cubature on the box of half-width 2B: global adaptive tensor-product Gauss–Kronrod
   (G7/K15) on rectangles (intervals when D = 1). The error estimate of a rectangle along
   axis j is the difference between the K15 tensor rule and the rule with G7 along j, for
   both the mass ∫e^{-U} and the moment ∫e^{-U} nβΔL, propagated through their ratio;
   the rectangles carrying half of the total estimate are split in two along their worst
   axis, until the estimate is below ``rel_tol``·|E| + ``abs_tol``. The estimate is
   conservative (it is the G7 error; the K15 value is far more accurate). The initial
   partition is a tensor grid with 4 uniform panels, graded geometrically (ratio 1/8,
   down to ≲ 1/(400 √nβ) of the box) towards the anchors in every coordinate: this
   resolves the narrow ridges (widths ~ (nβ)^-1/2) that singular posteriors have along the
   coordinate lines through the singular point, which an adaptive rule started on a
   coarse grid could miss.
3. Tail-mass check: ±B are breakpoints, so the mass in the outer shell between the boxes
   B and 2B is known; it must be below ``rel_tol``/100 of the total (else ``None``).

Evaluating the loss: the model's array-API loss is called with NumPy and every sampled
parameter given a leading grid axis, shape (G, 1, *shape), so that a loss written with
broadcasting (reductions over trailing axes only) returns (G, n) in one call; the zoo's
1–2-dimensional models are written that way. The vectorised result is checked against
point-by-point evaluation at a few points first; a loss that does not broadcast is
evaluated point by point in a loop (correct, slower).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["finite_target_by_quadrature", "quadrature_target", "adaptive_cubature", "posterior_energy"]

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
    nodes, wk, w_axis = _tensor_rule(dim, order)
    edges = [np.asarray(b, dtype=np.float64) for b in breaks]
    cells = np.meshgrid(*[np.arange(e.size - 1) for e in edges], indexing="ij")
    lo = np.stack([edges[j][cells[j].ravel()] for j in range(dim)], axis=1)
    hi = np.stack([edges[j][cells[j].ravel() + 1] for j in range(dim)], axis=1)
    state = {"shift": shift, "points": 0}

    def evaluate(lo_, hi_):
        """Per rectangle: K15 integrals (k0, k1) and per-axis error estimates (R, D) of each."""
        mid, half = 0.5 * (lo_ + hi_), 0.5 * (hi_ - lo_)
        pts = mid[:, None, :] + half[:, None, :] * nodes[None, :, :]
        u, g = energy(pts.reshape(-1, dim))
        u = np.asarray(u, dtype=np.float64).reshape(lo_.shape[0], -1)
        g = np.asarray(g, dtype=np.float64).reshape(lo_.shape[0], -1)
        state["points"] += u.size
        finite = np.isfinite(u)
        u = np.where(finite, u, np.inf)
        g = np.where(finite, g, 0.0)
        umin = float(np.min(u)) if u.size else np.inf
        rescale = 1.0
        if np.isfinite(umin) and (state["shift"] is None or umin < state["shift"]):
            old = state["shift"]
            state["shift"] = umin
            rescale = 0.0 if old is None else math.exp(umin - old)
        if state["shift"] is None:  # no finite value yet: any reference will do
            state["shift"] = 0.0
        q = np.exp(-(u - state["shift"]))
        qg = q * g
        vol = np.prod(half, axis=1)
        k0, k1 = (q @ wk) * vol, (qg @ wk) * vol
        e0 = np.abs(k0[:, None] - (q @ w_axis.T) * vol[:, None])
        e1 = np.abs(k1[:, None] - (qg @ w_axis.T) * vol[:, None])
        return k0, k1, e0, e1, rescale

    k0, k1, e0, e1, _ = evaluate(lo, hi)
    converged = False
    per_rect = wk.size
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
        budget = (max_points - state["points"]) // (2 * per_rect)
        if budget < 1:
            break
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
        ck0, ck1, ce0, ce1, rescale = evaluate(clo, chi)
        lo, hi = np.concatenate([lo[keep], clo]), np.concatenate([hi[keep], chi])
        k0 = np.concatenate([k0[keep] * rescale, ck0])
        k1 = np.concatenate([k1[keep] * rescale, ck1])
        e0 = np.concatenate([e0[keep] * rescale, ce0])
        e1 = np.concatenate([e1[keep] * rescale, ce1])
    mass, moment = float(np.sum(k0)), float(np.sum(k1))
    value = moment / mass
    error = float(np.sum((e1 + abs(value) * e0) / mass))
    shell_mass = 0.0
    if inner is not None:
        in_lo, in_hi = np.asarray(inner[0], dtype=np.float64), np.asarray(inner[1], dtype=np.float64)
        tol = 1e-12 * np.maximum(1.0, np.abs(in_hi - in_lo))
        outside = np.any((lo < in_lo - tol) | (hi > in_hi + tol), axis=1)
        shell_mass = float(np.sum(k0[outside])) / mass
    return {"mass": mass, "moment": moment, "shift": float(state["shift"]), "value": value, "error": error,
            "shell_mass": shell_mass, "points": int(state["points"]), "converged": converged}


# ------------------------------------------------------------------ the posterior's energy


def _layout(posterior) -> list[tuple[str, tuple[int, ...], int, int]]:
    out, start = [], 0
    for name in posterior.sampled:
        shape = tuple(posterior.model.param_shapes[name])
        size = int(np.prod(shape))
        out.append((name, shape, start, start + size))
        start += size
    return out


def _loss_deltas_loop(posterior, pts: np.ndarray, layout) -> np.ndarray:
    model, data = posterior.model, posterior.data
    c = posterior.effective_weights
    base = posterior.loss_at_centre_per_sample
    out = np.empty(pts.shape[0])
    for i, p in enumerate(pts):
        params = dict(posterior.centre)
        for name, shape, a, b in layout:
            params[name] = p[a:b].reshape(shape)
        out[i] = np.mean(c * (model.per_sample_loss_numpy(params, data) - base))
    return out


def _loss_deltas_vectorised(posterior, pts: np.ndarray, layout) -> np.ndarray:
    model, data = posterior.model, posterior.data
    g = pts.shape[0]
    params = {}
    for name in model.param_shapes:
        centre = np.asarray(posterior.centre[name], dtype=np.float64)
        params[name] = np.broadcast_to(centre, (g, 1, *centre.shape))
    for name, shape, a, b in layout:
        params[name] = pts[:, a:b].reshape(g, 1, *shape)
    losses = np.asarray(model.loss(params, data, model.consts, np), dtype=np.float64)
    if losses.shape != (g, posterior.n):
        raise ValueError(f"loss returned shape {losses.shape} for a batch of {g} parameter points")
    c = posterior.effective_weights
    return np.mean(c * (losses - posterior.loss_at_centre_per_sample), axis=1)


def posterior_energy(posterior) -> tuple[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], np.ndarray, bool]:
    """(energy, centre, vectorised) for the sampled coordinates of ``posterior``.

    ``energy(points (P, D)) -> (U, nβ ΔL)`` with ΔL = L_n^ρ(u*, v) - L_n^ρ(w*) taken per
    sample; ``centre`` is v* flattened; ``vectorised`` says whether the loss broadcasts over
    a leading grid axis (checked against point-by-point evaluation).
    """
    layout = _layout(posterior)
    centre = np.concatenate([np.asarray(posterior.centre[name], dtype=np.float64).reshape(-1)
                             for name, *_ in layout])
    dim = centre.size
    nb, gamma = float(posterior.n_beta), float(posterior.gamma)
    rng = np.random.default_rng(0)
    probe = centre[None, :] + rng.uniform(-0.7, 0.7, size=(3, dim))
    vectorised = True
    try:
        with np.errstate(all="ignore"):
            fast = _loss_deltas_vectorised(posterior, probe, layout)
            slow = _loss_deltas_loop(posterior, probe, layout)
        scale = max(1.0, float(np.max(np.abs(slow))))
        if not np.allclose(fast, slow, rtol=1e-10, atol=1e-12 * scale, equal_nan=True):
            vectorised = False
    except Exception:  # the loss does not broadcast over a grid axis: evaluate point by point
        vectorised = False
    # chunks of ~2^16 array elements keep the loss's temporaries in cache (3-4x faster than
    # one large call for data-dependent losses)
    width = 1 + max(int(np.prod(s)) for s in posterior.model.param_shapes.values())
    chunk = max(1, 65_536 // (posterior.n * width))

    def energy(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, dim)
        delta = np.empty(pts.shape[0])
        with np.errstate(all="ignore"):
            if vectorised:
                for s in range(0, pts.shape[0], chunk):
                    delta[s:s + chunk] = _loss_deltas_vectorised(posterior, pts[s:s + chunk], layout)
            else:
                delta[:] = _loss_deltas_loop(posterior, pts, layout)
        tempered = nb * delta
        u = tempered + 0.5 * gamma * np.sum((pts - centre) ** 2, axis=1)
        return u, tempered

    return energy, centre, vectorised


# ------------------------------------------------------------------------ the domain


_RATIO = 0.125  # geometric grading ratio of the initial partition


def _graded(anchors, lo: float, hi: float, ratio: float, levels: int, uniform: int, extra=()) -> np.ndarray:
    """Breakpoints on [lo, hi]: ``uniform`` equal panels plus, around every anchor a, the points
    a ± h·ratio^t (t = 0..levels, h = (hi - lo)/2), a geometric grading towards a, plus the
    points ``extra``."""
    half = 0.5 * (hi - lo)
    steps = half * ratio ** np.arange(levels + 1)
    pts = [np.linspace(lo, hi, uniform + 1), np.asarray(extra, dtype=np.float64).reshape(-1)]
    for a in anchors:
        pts.append(np.array([a]))
        pts.append(a + steps)
        pts.append(a - steps)
    out = np.unique(np.clip(np.concatenate(pts), lo, hi))
    # drop breakpoints closer than 1e-12 of the box to a neighbour (round-off duplicates)
    keep = np.concatenate([[True], np.diff(out) > 1e-12 * (hi - lo)])
    out = out[keep]
    out[0], out[-1] = lo, hi
    return out


def _boundary_min(energy, centre: np.ndarray, half: float, anchors: np.ndarray) -> float:
    """min U on the boundary of the box of half-width ``half`` around ``centre``.

    Each side is scanned on a uniform grid plus points graded towards the anchors'
    coordinates; the lowest scan points of each side are then polished by a bounded 1-D
    minimisation between their neighbours, so that narrow valleys crossing the boundary
    away from the anchors (e.g. the hyperbola ab = const of a product model) are found.
    """
    from scipy import optimize

    dim = centre.size
    if dim == 1:
        u, _ = energy(np.array([[centre[0] - half], [centre[0] + half]]))
        u = u[np.isfinite(u)]
        return float(np.min(u)) if u.size else -np.inf
    best = np.inf
    for j in range(2):
        other = 1 - j
        t = _graded(anchors[:, other], centre[other] - half, centre[other] + half, 0.5, 30, 128)
        for sign in (-1.0, 1.0):
            pts = np.empty((t.size, 2))
            pts[:, j] = centre[j] + sign * half
            pts[:, other] = t
            u, _ = energy(pts)
            u = np.where(np.isfinite(u), u, np.inf)
            best = min(best, float(np.min(u)))
            # local minima of the scan, lowest first
            is_min = np.ones(t.size, dtype=bool)
            is_min[1:] &= u[1:] <= u[:-1]
            is_min[:-1] &= u[:-1] <= u[1:]
            cand = np.flatnonzero(is_min)
            cand = cand[np.argsort(u[cand])][:3]

            def f(x, j=j, sign=sign):
                p = np.empty((1, 2))
                p[0, j] = centre[j] + sign * half
                p[0, other] = x
                val = energy(p)[0][0]
                return val if np.isfinite(val) else 1e300

            for i in cand:
                a, b = t[max(i - 1, 0)], t[min(i + 1, t.size - 1)]
                if b <= a:
                    continue
                res = optimize.minimize_scalar(f, bounds=(a, b), method="bounded",
                                               options={"xatol": 1e-12 * max(1.0, half), "maxiter": 200})
                best = min(best, float(res.fun))
    return best


def _find_mode(energy, centre: np.ndarray) -> tuple[np.ndarray, float]:
    """A low point of U: the best of a coarse multi-scale scan, polished by Nelder–Mead."""
    from scipy import optimize

    dim = centre.size
    cands = [centre[None, :]]
    for scale in 10.0 ** np.arange(-4, 3):
        t = np.linspace(-1.0, 1.0, 9) * scale
        grid = np.stack(np.meshgrid(*([t] * dim), indexing="ij"), axis=-1).reshape(-1, dim)
        cands.append(centre + grid)
    pts = np.concatenate(cands)
    u, _ = energy(pts)
    u = np.where(np.isfinite(u), u, np.inf)
    best = int(np.argmin(u))
    x0, u0 = pts[best], float(u[best])
    step = max(1e-6, float(np.max(np.abs(x0 - centre))) * 0.1 + 1e-3)
    simplex = np.vstack([x0] + [x0 + step * np.eye(dim)[j] for j in range(dim)])

    def f(x):
        val = energy(x[None, :])[0][0]
        return val if np.isfinite(val) else 1e300

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = optimize.minimize(f, x0, method="Nelder-Mead",
                                options={"initial_simplex": simplex, "xatol": 1e-10, "fatol": 1e-10,
                                         "maxfev": 400})
    if res.fun < u0:
        return np.asarray(res.x, dtype=np.float64), float(res.fun)
    return x0, u0


def _axis_widths(energy, mode: np.ndarray, u_mode: float) -> np.ndarray:
    """1/sqrt(∂²U/∂v_j²) at the mode by central differences (∞ where U is flat or concave)."""
    dim = mode.size
    out = np.full(dim, np.inf)
    for j in range(dim):
        h = 1e-4 * max(1.0, abs(mode[j]))
        for _ in range(12):
            pts = np.repeat(mode[None, :], 2, axis=0)
            pts[0, j] += h
            pts[1, j] -= h
            u, _ = energy(pts)
            curv = (u[0] + u[1] - 2.0 * u_mode) / (h * h)
            if np.all(np.isfinite(u)) and u[0] + u[1] - 2.0 * u_mode < 1.0:
                break
            h *= 0.1  # shrink until the second difference is local
        if np.isfinite(curv) and curv > 0:
            out[j] = 1.0 / math.sqrt(curv)
    return out


def finite_target_by_quadrature(
    posterior,
    *,
    rel_tol: float = 1e-8,
    abs_tol: float = 1e-10,
    drop: float = 80.0,
    max_half_width: float = 1e4,
    max_points: int = 3_000_000,
    order: int = 15,
) -> tuple[float, float] | None:
    """(E[λ̂], error estimate) for a posterior with 1 or 2 sampled coordinates, or ``None``.

    E[λ̂] = nβ E_p[L_n^ρ(u*, v) - L_n^ρ(w*)] under p(v) ∝ exp(-nβ L_n^ρ(u*, v) - γ/2‖v - v*‖²)
    on the posterior's data, weights, centre and restriction (see the module docstring for
    the method). The error estimate is the cubature's (|K15 - G7|, pessimistic: the actual
    error is usually orders of magnitude smaller). ``None`` means the posterior looks
    improper (no box of half-width ≤ ``max_half_width`` contains all but e^-``drop`` of
    the density with the density still decaying outside), or the cubature missed
    ``rel_tol``·|E| + ``abs_tol`` within ``max_points`` evaluations, or more than
    ``rel_tol``/100 of the mass lies in the outer shell of the integration box (tail check).
    ``order`` selects the Gauss–Kronrod pair (15: G7/K15, 7: G3/K7).
    Raises ``ValueError`` if the posterior samples more than 2 scalar coordinates.
    """
    dim = int(posterior.sampled_dim)
    if dim not in (1, 2):
        raise ValueError(
            f"finite_target_by_quadrature handles 1 or 2 sampled coordinates; this posterior samples {dim} "
            f"({list(posterior.sampled)}). Restrict `sampled` or use a model with a closed-form target."
        )
    energy, centre, _ = posterior_energy(posterior)
    # the model's default centre is where its singular sets cross (the true parameter); when
    # the posterior is centred elsewhere, narrow ridges of the posterior run along them
    model_centre = np.concatenate([np.asarray(posterior.model.centre[name], dtype=np.float64).reshape(-1)
                                   for name in posterior.sampled])
    mode, u_mode = _find_mode(energy, centre)
    anchors = np.unique(np.stack([centre, mode, model_centre]), axis=0)
    cache: dict[float, float] = {}

    def bmin(h: float) -> float:
        if h not in cache:
            cache[h] = _boundary_min(energy, centre, h, anchors)
        return cache[h]

    # 1. the box: U on its boundary ≥ min U + drop, and the boundary minimum still rising on
    #    the boxes 2, 4 and 8 times larger (no asymptotically flat direction)
    half = max(1.0, 2.0 * float(np.max(np.abs(mode - centre))))
    while True:
        if half > max_half_width:
            return None
        m = [bmin(half * 2.0**j) for j in range(4)]
        floor = min(u_mode, *m)
        if m[0] - floor >= drop and all(m[j + 1] >= m[j] + 1.0 for j in range(3)):
            break
        half *= 2.0
    while half > 1e-8 * max(1.0, float(np.max(np.abs(centre)))):  # shrink while the criterion holds
        inner = bmin(0.5 * half)
        if not (inner - min(u_mode, inner) >= drop and bmin(half) >= inner + 1.0):
            break
        half *= 0.5
    # 2. cubature on the box of half-width 2·half, graded towards the centre in every
    #    coordinate, towards the model's default centre if it differs, and towards the mode
    #    where it lies more than a few local widths (from the curvature of U along the axis)
    #    away from the centre; ±half are breakpoints so that the mass of the outer shell
    #    (the tail beyond the box found above) is known exactly.
    width = _axis_widths(energy, mode, u_mode)
    # grading depth: the ridges of a singular posterior have widths down to ~ (nβ)^-1/2 (in
    # units of the loss's curvature); the finest initial panel is ≲ 1/(400 √nβ) of the box,
    # the adaptive refinement does the rest
    levels = int(np.clip(math.ceil(math.log(400.0 * math.sqrt(max(1.0, posterior.n_beta))) / math.log(1 / _RATIO)),
                         3, 10))
    breaks = []
    for j in range(dim):
        axis_anchors = [centre[j]]
        if abs(mode[j] - centre[j]) > 3.0 * width[j]:
            axis_anchors.append(mode[j])
        if abs(model_centre[j] - centre[j]) > 1e-6 * half:
            axis_anchors.append(model_centre[j])
        lo, hi = centre[j] - 2.0 * half, centre[j] + 2.0 * half
        breaks.append(_graded(axis_anchors, lo, hi, _RATIO, levels, 4, extra=(centre[j] - half, centre[j] + half)))
    out = adaptive_cubature(energy, breaks, rel_tol=rel_tol, abs_tol=abs_tol, max_points=max_points,
                            shift=u_mode, inner=(centre - half, centre + half), order=order)
    if out is None or not out["converged"]:
        return None
    if out["shell_mass"] > 0.01 * rel_tol:  # 3. tail-mass check
        return None
    return float(out["value"]), float(out["error"])


def quadrature_target(posterior) -> float | None:
    """``target_fn`` for models without a closed form: E[λ̂] by cubature when the posterior
    samples 1 or 2 scalar coordinates, else ``None`` (no exact target)."""
    if int(posterior.sampled_dim) not in (1, 2):
        return None
    out = finite_target_by_quadrature(posterior)
    return None if out is None else out[0]
