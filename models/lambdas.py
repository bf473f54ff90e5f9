"""Exact learning coefficients λ (RLCTs) and multiplicities m of the toy models (docs/math.md §5).

Pure Python with :class:`fractions.Fraction` arithmetic: every function returns
``(λ, m)`` with λ an exact ``Fraction`` and m an ``int``. Convert with ``float(λ)``
where a float is needed (the :class:`~pplpatterning.Model` field ``lam`` stores the float).

Sources
-------
- Regular models, λ = d/2: Watanabe 2009, *Algebraic Geometry and Statistical Learning
  Theory*, §1 and §6.
- Normal crossings and separable powers: Watanabe 2009, Ch. 2 and 7 (λ of
  Π w_i^{2k_i} with a prior positive at 0 is min_i 1/(2k_i); λ of a sum of functions
  of disjoint variables is the sum of the λs, multiplicities combine as m_1 + m_2 - 1).
- Reduced-rank regression: Aoyagi & Watanabe 2005, "Stochastic complexities of
  reduced rank regression in Bayesian estimation", Neural Networks 18(7).
- Deep linear networks: Aoyagi 2024, "Consideration on the learning efficiency of
  multiple-layered neural networks with linear units", Neural Networks.
- K = ‖w‖^{2k}: in polar coordinates Z(n) = ∫ e^{-n r^{2k}} r^{d-1} dr dΩ ∝ n^{-d/(2k)}
  exactly (a one-line computation; equivalently the blow-up of the origin, Watanabe 2009
  Ch. 3): λ = d/(2k), m = 1.
- One-hidden-layer tanh network y = Σ_{h≤H} a_h tanh(b_h x), truth 0: Aoyagi & Watanabe
  2005, "Resolution of singularities and the generalization error with Bayesian estimation
  for layered neural network", IEICE Trans. J88-D-II(10) (in Japanese), and Aoyagi 2006,
  "The zeta function of learning theory and generalization error of three layered neural
  perceptron", RIMS Kôkyûroku 1501; quoted in Watanabe 2009, Ch. 7: with i = ⌊√H⌋,
  λ = (H + i² + i)/(4i + 2), m = 2 if i² = H else 1. (Kurumadani 2026, arXiv 2603.12785,
  recovers these values for one input unit as the value of a general upper-bound formula.)
- Two-component Gaussian mixtures at the truth N(0, σ²): K is equivalent (bounded above and
  below by positive multiples, which preserves λ and m; Watanabe 2009, Ch. 2 and 7) to a
  polynomial whose λ follows from the rules above; see :func:`gaussian_mixture_lambda`.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from math import isqrt

from ._validate import int_exponents, nonnegative_int, positive_int

__all__ = [
    "regular_lambda", "normal_crossing_lambda", "powers_lambda", "rrr_lambda", "dln_lambda", "norm_power_lambda",
    "tanh_lambda", "gaussian_mixture_lambda",
]


def regular_lambda(d: int) -> tuple[Fraction, int]:
    """A regular model with d parameters: λ = d/2, m = 1."""
    d = positive_int(d, "d")
    return Fraction(d, 2), 1


def normal_crossing_lambda(k: Sequence[int]) -> tuple[Fraction, int]:
    """K(w) = Π_i w_i^{2k_i} at 0, prior positive at 0: λ = 1/(2 max k), m = #{i : k_i = max k}."""
    k = int_exponents(k, "k")
    kmax = max(k)
    return Fraction(1, 2 * kmax), sum(1 for ki in k if ki == kmax)


def powers_lambda(k: Sequence[int]) -> tuple[Fraction, int]:
    """K(w) = Σ_i c_i w_i^{2k_i} (c_i > 0) at 0: λ = Σ_i 1/(2k_i), m = 1."""
    k = int_exponents(k, "k")
    return sum((Fraction(1, 2 * ki) for ki in k), Fraction(0)), 1


def rrr_dims(M, N, H, r) -> tuple[int, int, int, int]:
    """Validated reduced-rank-regression dimensions: M, N, H ≥ 1 and 0 ≤ r ≤ min(M, N, H)."""
    M = positive_int(M, "M")
    N = positive_int(N, "N")
    H = positive_int(H, "H")
    r = nonnegative_int(r, "r")
    if r > min(M, N, H):
        raise ValueError(f"`r` (true rank) must be ≤ min(M, N, H) = {min(M, N, H)}, got {r}.")
    return M, N, H, r


def rrr_lambda(M: int, N: int, H: int, r: int) -> tuple[Fraction, int]:
    """Reduced-rank regression y = BAx, A: H×M, B: N×H, true rank r (Aoyagi & Watanabe 2005).

    Parameters: M input dimension, N output dimension, H inner dimension, r true rank
    (0 ≤ r ≤ min(M, N, H)). Note the argument order (M, N, H, r); docs/math.md's worked examples
    are written (M, H, N, r).

        if N + H < M + r:   λ = (HN - Hr + Mr)/2,  m = 1
        elif M + H < N + r: λ = (HM - Hr + Nr)/2,  m = 1
        elif M + N < H + r: λ = MN/2,              m = 1
        else: num = 2(H + r)(M + N) - (M - N)² - (H + r)²
              λ = num/8, m = 1 if M + N + H + r is even, else λ = (num + 1)/8, m = 2
    """
    M, N, H, r = rrr_dims(M, N, H, r)
    if N + H < M + r:
        return Fraction(H * N - H * r + M * r, 2), 1
    if M + H < N + r:
        return Fraction(H * M - H * r + N * r, 2), 1
    if M + N < H + r:
        return Fraction(M * N, 2), 1
    num = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
    if (M + N + H + r) % 2 == 0:
        return Fraction(num, 8), 1
    return Fraction(num + 1, 8), 2


def _dln_sigma(delta: Sequence[int]) -> tuple[list[int], int]:
    """The set Σ of Aoyagi 2024 as (its Δ values, ℓ) by searching prefixes of sorted Δ.

    Conditions on Σ (|Σ| = ℓ + 1 ≥ 2), with S = Σ_{i∈Σ} Δ_i:
      (i)   max_Σ Δ < min_{∉Σ} Δ
      (ii)  S ≥ ℓ · max_Σ Δ
      (iii) S < ℓ · min_{∉Σ} Δ
    (i) and (iii) hold vacuously when Σ is every layer.
    """
    order = sorted(delta)
    for size in range(2, len(order) + 1):
        sigma, rest = order[:size], order[size:]
        ell = size - 1
        s = sum(sigma)
        if rest and not sigma[-1] < rest[0]:
            continue
        if not s >= ell * sigma[-1]:
            continue
        if rest and not s < ell * rest[0]:
            continue
        return sigma, ell
    raise RuntimeError(f"No admissible set Σ for Δ = {list(delta)}; this contradicts Aoyagi 2024.")


def dln_lambda(widths: Sequence[int], r: int) -> tuple[Fraction, int]:
    """Deep linear network y = W_L ··· W_1 x with widths H_1 (input), ..., H_{L+1} (output).

    With Δ_i = H_i - r and Σ, ℓ, S as in :func:`_dln_sigma` (Aoyagi 2024, docs/math.md §5),
    M = ⌈S/ℓ⌉ and a = S - (M - 1)ℓ:

        λ = (r(H_1 + H_{L+1}) - r²)/2 + a(ℓ - a)/(4ℓ) - (ℓ(ℓ - 1)/4)(S/ℓ)²
            + (1/2) Σ_{i<j ∈ Σ} Δ_i Δ_j
        m = a(ℓ - a) + 1

    ``widths`` needs at least two entries (one layer); r must satisfy 0 ≤ r ≤ min(widths).
    For two layers ([M, H, N]) this equals :func:`rrr_lambda` (M, N, H, r).
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise ValueError(f"`widths` must be a sequence of positive integers [H_1, ..., H_(L+1)], got {widths!r}.")
    H = [positive_int(h, f"widths[{i}]") for i, h in enumerate(widths)]
    if len(H) < 2:
        raise ValueError(f"`widths` needs at least 2 entries (input and output width), got {list(widths)!r}.")
    r = nonnegative_int(r, "r")
    if r > min(H):
        raise ValueError(f"`r` (true rank) must be ≤ min(widths) = {min(H)}, got {r}.")
    delta = [h - r for h in H]
    sigma, ell = _dln_sigma(delta)
    s = sum(sigma)
    m_ceil = -(-s // ell)
    a = s - (m_ceil - 1) * ell
    pair_sum = (s * s - sum(v * v for v in sigma)) // 2  # Σ_{i<j} Δ_i Δ_j, an integer
    lam = (
        Fraction(r * (H[0] + H[-1]) - r * r, 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(s, ell) ** 2
        + Fraction(pair_sum, 2)
    )
    return lam, a * (ell - a) + 1


def norm_power_lambda(d: int, k: int) -> tuple[Fraction, int]:
    """K(w) = ‖w‖^{2k} in R^d at 0: λ = d/(2k), m = 1."""
    d = positive_int(d, "d")
    k = positive_int(k, "k")
    return Fraction(d, 2 * k), 1


def tanh_lambda(H: int) -> tuple[Fraction, int]:
    """y = Σ_{h≤H} a_h tanh(b_h x), x ~ U(-1, 1), truth 0, at w = 0 (Aoyagi & Watanabe 2005;
    Aoyagi 2006; Watanabe 2009, Ch. 7): with i = ⌊√H⌋,

        λ = (H + i² + i)/(4i + 2),   m = 2 if i² = H else 1.

    H = 1 gives λ = 1/2, m = 2, the product model's value (tanh(bx) = bx + O(b³)).
    """
    H = positive_int(H, "H")
    i = isqrt(H)
    return Fraction(H + i * i + i, 4 * i + 2), 2 if i * i == H else 1


def gaussian_mixture_lambda(variant: str = "means") -> tuple[Fraction, int]:
    """λ, m of the two-component mixtures of :mod:`~pplpatterning.models.mixture` at their centres.

    - ``"means"``: p(x | a, b) = ½N(x; a + b, σ²) + ½N(x; a - b, σ²), truth N(0, σ²), centre
      (0, 0). K(a, b) = a² u(a, b) + b⁴ v(b) with u, v analytic and positive at 0 (K is even
      in a and in b; u(0,0) = 1/(2σ²), v(0) = 1/(4σ⁴)), so K is equivalent to a² + b⁴ and
      λ = 1/2 + 1/4 = 3/4, m = 1.
    - ``"weight"``: p(x | s, b) = (1 - σ(s)) N(x; 0, σ²) + σ(s) N(x; b, σ²), truth
      N(0, σ²), centre (s*, 0) with s* finite (weight a* = σ(s*) ∈ (0, 1)). K = a² b² u(a, b)
      with u(0, 0) = 1/(2σ²) > 0, and a² is a unit near a* > 0: K is equivalent to b², so
      λ = 1/2, m = 1 (s is a flat, non-identifiable direction). The logistic map s ↦ σ(s) is a
      diffeomorphism onto (0, 1) and λ, m are invariant under diffeomorphisms of a
      neighbourhood of the centre. (At the boundary point a = 0, b = 0, where K ≍ a²b²,
      λ = 1/2 with m = 2; no unconstrained diffeomorphic chart reaches it.)
    """
    if variant == "means":
        return Fraction(3, 4), 1
    if variant == "weight":
        return Fraction(1, 2), 1
    raise ValueError(f"`variant` must be 'means' or 'weight', got {variant!r}.")
