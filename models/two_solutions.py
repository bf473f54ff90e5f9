"""Two solutions that both fit the training data: y = a·b·(a·x₁ + b·x₂), truth 0.

A two-parameter toy for patterning (docs/math.md §4), the analogue of the Nested and
Equal-Count algorithms of the balanced-parentheses task (Murfet & Wang 2026, "Patterning:
the dual of interpretability", arXiv 2601.13548): two distinct solution sets, both with
zero training loss, between which re-weighting the data moves posterior mass.

Data. Every input uses one of two channels: x = (±1, 0) ("channel 1", a fraction ``p`` of
the samples, exactly round(p·n) of them) or x = (0, ±1) ("channel 2"); the target is
y = ``noise``·ε (default 0: every sample is fitted exactly by both solutions). Per-sample
loss l_i = (y_i - f(x_i))² / (2σ²) with f(x) = a b (a x₁ + b x₂) = a²b x₁ + ab² x₂.

Solutions. f vanishes on every input exactly when a = 0 or b = 0:

- **solution A** = {b = 0} (a free): off it, f ≈ a² b x₁, so only channel-1 inputs see
  the deviation; the valley around A has transverse curvature nβ S₁ a⁴/σ² in b;
- **solution B** = {a = 0} (b free): f ≈ a b² x₂, curvature nβ S₂ b⁴/σ² in a,

with S_c = (1/n) Σ_i c_i x_{ic}² the (effectively weighted) share of channel c. They meet
at the origin, where (noise-free) L_n = (S₁ a⁴b² + S₂ a²b⁴)/(2σ²).

Which solution the posterior prefers is set by the data: a valley's posterior mass scales
like 1/√(its curvature), so more channel-1 data narrows the valley around A and moves mass
to B. Re-weighting channel-1 samples down and channel-2 samples up moves mass to A; that
is the data re-weighting patterning should discover when asked for more mass on A.

Observables. :func:`on_solution_a` = 1[|a| > |b|] and :func:`on_solution_b` = 1[|b| > |a|]
(their posterior means are the mass fractions of the two solutions);
:func:`solution_masses` computes those fractions exactly by 2-D cubature on the posterior's
actual data, weights, centre and γ, for checking samplers and patterning.

The demonstration (validation/patterning_demo.py, docs/patterning.md) uses the localizing
prior N((1, 1), γ⁻¹ I) (``DEMO_CENTRE``), equally far from both solutions, so the posterior
has two lobes, around (1, 0) on A and around (0, 1) on B, joined through the crossing.

λ at the default centre (the crossing, a = b = 0, the true parameter): K = (S₁a⁴b² +
S₂a²b⁴)/(2σ²) = a²b²(S₁a² + S₂b²)/(2σ²). Blowing up a = u, b = uv gives
u⁶ v² (S₁ + S₂v²)/(2σ²) with Jacobian |u|: λ = min((1+1)/6, 1/2) = 1/3, attained by one
coordinate, so m = 1 (the other chart is symmetric; Watanabe 2009, Ch. 2-3).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from pplpatterning.spec.model import Model

from ._cubature import adaptive_cubature
from ._quad2d import quadrature_target
from ._validate import positive_float

__all__ = [
    "two_solutions", "two_solutions_loss", "two_solutions_data", "on_solution_a", "on_solution_b",
    "solution_masses", "two_solutions_target", "posterior_energy_fast", "DEMO_CENTRE",
]

#: The demonstration's prior centre: equally far from solution A (b = 0) and B (a = 0).
DEMO_CENTRE = {"a": np.asarray(1.0), "b": np.asarray(1.0)}


def two_solutions_loss(params, batch, consts, xp):
    """l_i = (y_i - a b (a x_i1 + b x_i2))² / (2σ²).

    Broadcasts over leading grid axes: scalar a, b of shape (G, 1) give (G, n).
    """
    a, b = params["a"], params["b"]
    x = batch["x"]
    f = a * b * (a * x[..., 0] + b * x[..., 1])
    resid = batch["y"] - f
    return resid * resid / (2.0 * consts["sigma"] ** 2)


def two_solutions_data(n, rng, consts):
    """round(p·n) channel-1 inputs (±1, 0), the rest channel-2 (0, ±1), in random order;
    y = noise·ε."""
    n1 = int(round(float(consts["p"]) * n))
    channel = np.zeros(n, dtype=np.int64)
    channel[n1:] = 1
    channel = rng.permutation(channel)
    sign = rng.choice(np.array([-1.0, 1.0]), size=n)
    x = np.zeros((n, 2))
    x[np.arange(n), channel] = sign
    y = float(consts["noise"]) * rng.standard_normal(n)
    return {"x": x, "y": y}


def _as_float(cond, like, xp):
    return xp.astype(cond, like.dtype)


def on_solution_a(params, xp):
    """1[|a| > |b|]: the draw lies nearer solution A = {b = 0} than B (E = A's mass fraction)."""
    a, b = params["a"], params["b"]
    return _as_float(xp.abs(a) > xp.abs(b), a, xp)


def on_solution_b(params, xp):
    """1[|b| > |a|]: the draw lies nearer solution B = {a = 0} (E = B's mass fraction)."""
    a, b = params["a"], params["b"]
    return _as_float(xp.abs(b) > xp.abs(a), a, xp)


def _moments(posterior) -> dict[str, float]:
    """The weighted data moments that determine L_n^ρ exactly: with f = a²b x₁ + ab² x₂,
    2σ² L_n^ρ = ⟨y²⟩ - 2a²b⟨y x₁⟩ - 2ab²⟨y x₂⟩ + a⁴b²⟨x₁²⟩ + a²b⁴⟨x₂²⟩ + 2a³b³⟨x₁x₂⟩,
    ⟨·⟩ = (1/n) Σ_i c_i (·)_i with the effective weights c_i."""
    c = np.asarray(posterior.effective_weights, dtype=np.float64)
    x, y = np.asarray(posterior.data["x"], np.float64), np.asarray(posterior.data["y"], np.float64)
    x1, x2 = x[:, 0], x[:, 1]
    return {k: float(np.mean(c * v)) for k, v in
            {"yy": y * y, "yx1": y * x1, "yx2": y * x2, "x1x1": x1 * x1, "x2x2": x2 * x2, "x1x2": x1 * x2}.items()}


def posterior_energy_fast(posterior):
    """``energy(points (P, 2)) -> (U, nβ L)``: U(a, b) = nβ L_n^ρ(a, b) + γ/2 ||(a, b) - w*||²
    from the six data moments of :func:`_moments` (exact for this model, any data and
    weights; O(1) per point instead of O(n))."""
    mo = _moments(posterior)
    s2 = 2.0 * float(posterior.model.consts["sigma"]) ** 2
    nb, gamma = float(posterior.n_beta), float(posterior.gamma)
    ca, cb = float(posterior.centre["a"]), float(posterior.centre["b"])

    def energy(pts):
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        a, b = pts[:, 0], pts[:, 1]
        u1, u2 = a * a * b, a * b * b
        loss = (mo["yy"] - 2 * u1 * mo["yx1"] - 2 * u2 * mo["yx2"] + u1 * u1 * mo["x1x1"] + u2 * u2 * mo["x2x2"]
                + 2 * u1 * u2 * mo["x1x2"]) / s2
        tempered = nb * loss
        return tempered + 0.5 * gamma * ((a - ca) ** 2 + (b - cb) ** 2), tempered

    return energy


def solution_masses(posterior, *, rel_tol: float = 1e-7, half_width: float | None = None) -> dict[str, float]:
    """Exact posterior mass fractions of the two solutions by 2-D cubature.

    P(A) = P(|a| > |b|) and P(B) = 1 - P(A) under p(a, b) ∝ exp(-nβ L_n^ρ(a, b) - γ/2 ||w - w*||²)
    on the posterior's data, weights, centre and γ. Each region is a pair of wedges, mapped
    to a rectangle so that the boundary |a| = |b| is exact: region A is a = r, b = r t with
    (r, t) ∈ [-R, R] × [-1, 1] and Jacobian |r| (region B the same with a and b swapped);
    both are integrated with :func:`~._cubature.adaptive_cubature` (tensor Gauss–Kronrod,
    breakpoints graded towards r = 0 and t = 0, where the valleys and the crossing lie), and
    the two masses brought to a common reference energy. Returns ``{"A": P(A), "B": P(B), "error": estimate}``.

    R defaults to |w*|_∞ + 12/√γ (the prior's density is below e^-72 of its peak beyond,
    along every direction) and needs γ > 0.
    """
    if posterior.sampled_dim != 2 or set(posterior.sampled) != {"a", "b"}:
        raise ValueError("solution_masses needs a posterior that samples both a and b of the two_solutions model.")
    if half_width is None:
        if posterior.gamma <= 0:
            raise ValueError("solution_masses needs γ > 0 (or an explicit `half_width`) to bound the domain.")
        centre = max(abs(float(posterior.centre["a"])), abs(float(posterior.centre["b"])))
        half_width = centre + 12.0 / math.sqrt(posterior.gamma)
    energy = posterior_energy_fast(posterior)
    grade = half_width * 0.5 ** np.arange(1, 18)
    r_breaks = np.unique(np.concatenate([np.linspace(-half_width, half_width, 9), grade, -grade, [0.0]]))
    t_grade = 0.5 ** np.arange(1, 14)
    t_breaks = np.unique(np.concatenate([np.linspace(-1.0, 1.0, 9), t_grade, -t_grade, [0.0]]))

    def region(swap: bool):
        def wedge_energy(pts):
            r, t = pts[:, 0], pts[:, 1]
            ab = np.stack([r * t, r], axis=1) if swap else np.stack([r, r * t], axis=1)
            u, _ = energy(ab)
            with np.errstate(divide="ignore"):
                return u - np.log(np.abs(r)), np.ones_like(r)
        return wedge_energy

    out = {}
    for name, swap in (("A", False), ("B", True)):
        res = adaptive_cubature(region(swap), [r_breaks, t_breaks], rel_tol=rel_tol, abs_tol=0.0)
        if res is None or not res["converged"]:
            raise RuntimeError(f"solution_masses: the cubature of region {name} did not converge; "
                               "raise rel_tol or give a smaller half_width.")
        out[name] = res
    # Each mass is relative to e^{-shift} with its own shift (the smallest energy it met).
    ref = min(out["A"]["shift"], out["B"]["shift"])
    mass = {k: out[k]["mass"] * math.exp(-(out[k]["shift"] - ref)) for k in out}
    total = mass["A"] + mass["B"]
    frac_a = mass["A"] / total
    # With g = 1 the cubature's error estimate is 2 × the relative error of the mass; the
    # fraction's error follows from δF = F(1 - F)(δm_A/m_A + δm_B/m_B) (worst case).
    err = frac_a * (1.0 - frac_a) * 0.5 * (out["A"]["error"] + out["B"]["error"])
    return {"A": frac_a, "B": 1.0 - frac_a, "error": float(err)}


def two_solutions_target(posterior) -> float | None:
    """Exact finite-nβ E[λ̂] = nβ E[L_n^ρ(w) - L_n^ρ(w*)].

    Closed form when γ = 0, both a and b are sampled, the centre is the crossing (0, 0) and
    the data are noise-free (y = 0): then nβ L_n^ρ = nβ (S₁a⁴b² + S₂a²b⁴)/(2σ²) is
    homogeneous of degree 6 in (a, b) and, when the data's second moments ⟨x xᵀ⟩ are
    positive definite, ∫ e^{-nβ L} converges (along each solution the transverse width
    decays like 1/a²), so Z(t) = ∫ e^{-t L} = t^{-2/6} Z(1) and
    nβ E[L] = -nβ d log Z/dt |_{t=nβ} = 2/6 = 1/3 = λ exactly, for every nβ and any
    weights. Otherwise the 2-D cubature :func:`~._quad2d.quadrature_target` (None when the
    posterior looks improper).
    """
    mo = _moments(posterior)
    at_crossing = all(float(posterior.centre[k]) == 0.0 for k in ("a", "b"))
    noise_free = mo["yy"] == 0.0 and mo["yx1"] == 0.0 and mo["yx2"] == 0.0
    if posterior.gamma == 0.0 and posterior.sampled_dim == 2 and at_crossing and noise_free \
            and mo["x1x1"] * mo["x2x2"] > mo["x1x2"] ** 2:
        return 1.0 / 3.0
    return quadrature_target(posterior)


def two_solutions(p: float = 0.5, noise: float = 0.0, sigma: float = 1.0) -> Model:
    """y = a b (a x₁ + b x₂) + noise, x one-hot ±1 on channel 1 (share ``p``) or channel 2.

    Parameters
    ----------
    p
        Share of channel-1 inputs, 0 < p < 1 (exactly round(p·n) of n samples). Default ½.
        Channel-1 data constrain solution A = {b = 0}, channel-2 data solution B = {a = 0}.
    noise
        Standard deviation of the label noise, ≥ 0. Default 0: both solutions fit every
        training sample exactly.
    sigma
        The loss scale σ > 0 in l = (y - f)²/(2σ²). Default 1.

    Default centre: the crossing a = b = 0 (the true parameter), λ = 1/3, m = 1. The
    patterning demonstration centres the localizing prior at ``DEMO_CENTRE`` = (1, 1).
    """
    p = positive_float(p, "p")
    if not p < 1.0:
        raise ValueError(f"`p` (the share of channel-1 inputs) must lie strictly between 0 and 1, got {p!r}.")
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(noise)) or float(noise) < 0:
        raise ValueError(f"`noise` must be a finite number ≥ 0, got {noise!r}.")
    sigma = positive_float(sigma, "sigma")
    lam = Fraction(1, 3)
    return Model(
        name="two_solutions",
        loss=two_solutions_loss,
        param_shapes={"a": (), "b": ()},
        centre={"a": np.zeros(()), "b": np.zeros(())},
        consts={"p": p, "noise": float(noise), "sigma": sigma},
        data_generator=two_solutions_data,
        lam=float(lam),
        multiplicity=1,
        target_fn=two_solutions_target,
        description=(f"two solutions y = ab(a x1 + b x2), solution A: b = 0, B: a = 0; channel-1 share p={p:g}, "
                     f"noise={float(noise):g}, σ={sigma:g}; λ = 1/3 at the crossing"),
    )
