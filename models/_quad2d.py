"""Exact finite-nβ targets of 1- and 2-dimensional posteriors by adaptive cubature.

``finite_target_by_quadrature(posterior)`` returns ``(E[λ̂], error estimate)`` for a Gibbs
posterior whose sampled parameters have 1 or 2 scalar coordinates, where

    E[λ̂] = nβ E_p[L_n^ρ(w) - L_n^ρ(w*)],   p(v) ∝ exp(-U(v)),
    U(v)  = nβ (L_n^ρ(u*, v) - L_n^ρ(w*)) + (γ/2)||v - v*||²,

on the posterior's actual data, weights, centre and restriction, the loss difference taken
per sample (docs/math.md §2, §6). It is the value a perfect sampler returns; it returns ``None``
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
2. Cubature on the box of half-width 2B (:func:`~._cubature.adaptive_cubature`): global
   adaptive tensor-product Gauss–Kronrod (G7/K15) on rectangles (intervals when D = 1). The
   error estimate of a rectangle along axis j is the difference between the K15 tensor rule
   and the rule with G7 along j, for both the mass ∫e^{-U} and the moment ∫e^{-U} nβΔL,
   propagated through their ratio; the rectangles carrying half of the total estimate are
   split in two along their worst axis, until the estimate is below ``rel_tol``·|E| +
   ``abs_tol``. The estimate is conservative (it is the G7 error; the K15 value is far more
   accurate). The initial partition is a tensor grid with 4 uniform panels, graded
   geometrically (ratio 1/8, down to ≲ 1/(400 √nβ) of the box) towards the anchors in every
   coordinate: this resolves the narrow ridges (widths ~ (nβ)^-1/2) that singular
   posteriors have along the coordinate lines through the singular point, which an adaptive
   rule started on a coarse grid could miss.
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

import numpy as np
from scipy import optimize

from ._cubature import adaptive_cubature

__all__ = ["finite_target_by_quadrature", "quadrature_target", "posterior_energy", "graded_breakpoints"]


# ------------------------------------------------------------------ the posterior's energy


def _layout(posterior) -> list[tuple[str, tuple[int, ...], int, int]]:
    """(name, shape, start, stop) of every sampled parameter in the flat coordinate vector."""
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


def graded_breakpoints(anchors, lo: float, hi: float, ratio: float, levels: int, uniform: int,
                       extra=()) -> np.ndarray:
    """Breakpoints on [lo, hi]: ``uniform`` equal panels plus, around every anchor a, the points
    a ± h·ratio^t (t = 0..levels, h = (hi - lo)/2), a geometric grading towards a, plus the
    points ``extra``.

    Sorted, with ``lo`` and ``hi`` as the end points and neighbours closer than 1e-12 of the
    interval merged. A geometric grading resolves features of any width down to h·ratio^levels
    around an anchor with O(levels) panels (the initial partition of the cubature, and the
    scan of the box boundary).
    """
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
    dim = centre.size
    if dim == 1:
        u, _ = energy(np.array([[centre[0] - half], [centre[0] + half]]))
        u = u[np.isfinite(u)]
        return float(np.min(u)) if u.size else -np.inf
    best = np.inf
    for j in range(2):
        other = 1 - j
        t = graded_breakpoints(anchors[:, other], centre[other] - half, centre[other] + half, 0.5, 30, 128)
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


def _box_half_width(energy, centre: np.ndarray, mode: np.ndarray, u_mode: float, anchors: np.ndarray, *,
                    drop: float, max_half_width: float) -> float | None:
    """Step 1 of the method: the half-width B of the integration box, or ``None`` (improper).

    U on the boundary of the box must be ≥ min U + ``drop``, and the boundary minimum must
    still rise (by ≥ 1 per doubling) on the boxes 2, 4 and 8 times larger, so that no
    direction is asymptotically flat; B is doubled from 2‖mode - centre‖_∞ (at least 1)
    until both hold, then halved while they still hold.
    """
    cache: dict[float, float] = {}

    def bmin(h: float) -> float:
        if h not in cache:
            cache[h] = _boundary_min(energy, centre, h, anchors)
        return cache[h]

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
    return half


def _initial_breaks(centre: np.ndarray, mode: np.ndarray, model_centre: np.ndarray, width: np.ndarray,
                    half: float, n_beta: float) -> list[np.ndarray]:
    """Step 2's initial partition: per axis, breakpoints on [v*_j - 2B, v*_j + 2B].

    Graded towards the centre in every coordinate, towards the model's default centre if it
    differs, and towards the mode where it lies more than 3 local widths (``width``, from the
    curvature of U along the axis) away from the centre; ±B are breakpoints so that the mass
    of the outer shell (the tail beyond the box of step 1) is known exactly. Grading depth:
    the ridges of a singular posterior have widths down to ~ (nβ)^-1/2 (in units of the
    loss's curvature); the finest initial panel is ≲ 1/(400 √nβ) of the box, the adaptive
    refinement does the rest.
    """
    levels = int(np.clip(math.ceil(math.log(400.0 * math.sqrt(max(1.0, n_beta))) / math.log(1 / _RATIO)),
                         3, 10))
    breaks = []
    for j in range(centre.size):
        axis_anchors = [centre[j]]
        if abs(mode[j] - centre[j]) > 3.0 * width[j]:
            axis_anchors.append(mode[j])
        if abs(model_centre[j] - centre[j]) > 1e-6 * half:
            axis_anchors.append(model_centre[j])
        lo, hi = centre[j] - 2.0 * half, centre[j] + 2.0 * half
        breaks.append(graded_breakpoints(axis_anchors, lo, hi, _RATIO, levels, 4,
                                         extra=(centre[j] - half, centre[j] + half)))
    return breaks


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
    half = _box_half_width(energy, centre, mode, u_mode, anchors, drop=drop, max_half_width=max_half_width)
    if half is None:
        return None
    breaks = _initial_breaks(centre, mode, model_centre, _axis_widths(energy, mode, u_mode), half,
                             posterior.n_beta)
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
