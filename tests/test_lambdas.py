"""Exact learning coefficients of the toy models (docs/math.md §5)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pplpatterning.models import get_model
from pplpatterning.models.lambdas import (
    dln_lambda, gaussian_mixture_lambda, norm_power_lambda, normal_crossing_lambda, powers_lambda, regular_lambda,
    rrr_lambda, tanh_lambda,
)

# ----------------------------------------------------------------- worked examples
# docs/math.md writes the RRR examples as (M, H, N, r); rrr_lambda takes (M, N, H, r).


@pytest.mark.parametrize(
    ("M", "H", "N", "r", "lam", "m"),
    [
        (2, 2, 2, 0, Fraction(3, 2), 1),
        (3, 3, 3, 0, Fraction(7, 2), 2),
        (3, 3, 3, 1, Fraction(4), 1),
    ],
)
def test_rrr_worked_examples(M, H, N, r, lam, m):
    got_lam, got_m = rrr_lambda(M=M, N=N, H=H, r=r)
    assert got_lam == lam
    assert isinstance(got_lam, Fraction)
    assert got_m == m


@pytest.mark.parametrize(
    ("widths", "r", "lam", "m"),
    [([1, 1, 1, 1], 0, Fraction(1, 2), 3), ([2, 3, 3, 2], 0, Fraction(2), 3)],
)
def test_dln_worked_examples(widths, r, lam, m):
    assert dln_lambda(widths, r) == (lam, m)


def test_rrr_cases_by_hand():
    # N + H < M + r branch: λ = (HN - Hr + Mr)/2
    assert rrr_lambda(M=6, N=1, H=1, r=1) == (Fraction(6, 2), 1)
    # M + H < N + r branch (transpose of the above)
    assert rrr_lambda(M=1, N=6, H=1, r=1) == (Fraction(6, 2), 1)
    # M + N < H + r branch: the inner dimension is redundant, λ = MN/2
    assert rrr_lambda(M=1, N=1, H=5, r=0) == (Fraction(1, 2), 1)
    # the product model y = a b x is RRR with M = N = H = 1, r = 0: λ = 1/2, m = 2
    assert rrr_lambda(M=1, N=1, H=1, r=0) == (Fraction(1, 2), 2)


# ------------------------------------------------------- DLN with two layers is RRR


def test_two_layer_dln_equals_rrr_exhaustively():
    checked = 0
    for M in range(1, 7):
        for H in range(1, 7):
            for N in range(1, 7):
                for r in range(0, min(M, H, N) + 1):
                    assert dln_lambda([M, H, N], r) == rrr_lambda(M=M, N=N, H=H, r=r), (M, H, N, r)
                    checked += 1
    assert checked > 600


def test_one_layer_dln_is_regular():
    for M in range(1, 6):
        for N in range(1, 6):
            for r in range(0, min(M, N) + 1):
                assert dln_lambda([M, N], r) == (Fraction(M * N, 2), 1)


# ------------------------------------------------------------------ bounds (hypothesis)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(M=st.integers(1, 12), N=st.integers(1, 12), H=st.integers(1, 12), data=st.data())
def test_rrr_lambda_between_zero_and_half_dim(M, N, H, data):
    r = data.draw(st.integers(0, min(M, N, H)), label="r")
    lam, m = rrr_lambda(M=M, N=N, H=H, r=r)
    d = H * (M + N)
    assert 0 <= lam <= Fraction(d, 2)
    assert m in (1, 2)
    # symmetry under transposition (swap input and output)
    assert rrr_lambda(M=N, N=M, H=H, r=r) == (lam, m)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(widths=st.lists(st.integers(1, 9), min_size=2, max_size=6), data=st.data())
def test_dln_lambda_between_zero_and_half_dim(widths, data):
    r = data.draw(st.integers(0, min(widths)), label="r")
    lam, m = dln_lambda(widths, r)
    d = sum(widths[i] * widths[i + 1] for i in range(len(widths) - 1))
    assert 0 <= lam <= Fraction(d, 2)
    assert m >= 1
    assert dln_lambda(widths[::-1], r) == (lam, m)  # transposing the network


# --------------------------------------------------------------------- simple models


@pytest.mark.parametrize("d", [1, 2, 3, 7])
def test_regular_lambda_is_half_dim(d):
    assert regular_lambda(d) == (Fraction(d, 2), 1)
    model = get_model("regular", d=d)
    assert model.lam == d / 2 and model.multiplicity == 1
    assert model.dim == d


def test_normal_crossing_and_powers_lambdas():
    assert normal_crossing_lambda((1, 2)) == (Fraction(1, 4), 1)
    assert normal_crossing_lambda((2, 2, 1)) == (Fraction(1, 4), 2)
    assert normal_crossing_lambda((1, 1)) == (Fraction(1, 2), 2)
    assert powers_lambda((1, 2)) == (Fraction(3, 4), 1)
    assert powers_lambda((1, 1, 1)) == (Fraction(3, 2), 1)  # regular in 3 dimensions
    assert get_model("product").lam == 0.5 and get_model("product").multiplicity == 2
    assert get_model("normal_crossing", k=(3, 1, 3)).multiplicity == 2


def test_model_lambdas_match_formulas():
    assert get_model("rrr", M=3, N=3, H=3, r=0).lam == 3.5
    assert get_model("rrr", M=3, N=3, H=3, r=0).multiplicity == 2
    assert get_model("dln").lam == 2.0 and get_model("dln").multiplicity == 3
    assert get_model("dln", widths=[1, 1, 1, 1]).lam == 0.5


# -------------------------------------------------------- norm_power, tanh, mixtures


@pytest.mark.parametrize(
    ("H", "lam", "m"),
    [(1, Fraction(1, 2), 2), (2, Fraction(2, 3), 1), (3, Fraction(5, 6), 1), (4, Fraction(1), 2),
     (5, Fraction(11, 10), 1), (8, Fraction(7, 5), 1), (9, Fraction(3, 2), 2), (10, Fraction(11, 7), 1)],
)
def test_tanh_lambda_worked_values(H, lam, m):
    # (H + i² + i)/(4i + 2), i = ⌊√H⌋: H = 1..3 → i = 1; 4..8 → 2; 9, 10 → 3
    assert tanh_lambda(H) == (lam, m)
    model = get_model("tanh", H=H)
    assert model.lam == float(lam) and model.multiplicity == m and model.dim == 2 * H


def test_tanh_with_one_unit_is_the_product_model():
    """tanh(bx) = bx + O(b³): one hidden unit has the product model's (= RRR(1,1,1,0)) λ and m."""
    assert tanh_lambda(1) == normal_crossing_lambda((1, 1)) == rrr_lambda(M=1, N=1, H=1, r=0)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(H=st.integers(1, 10_000))
def test_tanh_lambda_bounds(H):
    lam, m = tanh_lambda(H)
    i = int(H**0.5)
    while (i + 1) ** 2 <= H:
        i += 1
    while i * i > H:
        i -= 1
    assert lam == Fraction(H + i * i + i, 4 * i + 2)
    assert 0 < lam <= Fraction(2 * H, 2)  # d = 2H parameters
    assert lam < tanh_lambda(H + 1)[0]  # more hidden units, larger λ
    assert m == (2 if i * i == H else 1)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(d=st.integers(1, 50), k=st.integers(1, 20))
def test_norm_power_lambda(d, k):
    lam, m = norm_power_lambda(d, k)
    assert lam == Fraction(d, 2 * k) and m == 1
    assert 0 < lam <= Fraction(d, 2)
    # k = 1 is regular; ‖w‖^{2k} in 1-D is the powers model with one coordinate
    assert norm_power_lambda(d, 1) == regular_lambda(d)
    assert norm_power_lambda(1, k) == powers_lambda((k,))


def test_gaussian_mixture_lambdas():
    assert gaussian_mixture_lambda("means") == (Fraction(3, 4), 1)
    assert gaussian_mixture_lambda("means") == powers_lambda((1, 2))  # K equivalent to a² + b⁴
    assert gaussian_mixture_lambda("weight") == (Fraction(1, 2), 1)  # K equivalent to b², s flat
    assert get_model("gaussian_mixture").lam == 0.75
    assert get_model("gaussian_mixture", variant="weight").lam == 0.5
    for variant in ("means", "weight"):
        assert 0 < get_model("gaussian_mixture", variant=variant).lam <= 1.0  # d/2 = 1


# ------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("call", "argname"),
    [
        (lambda: rrr_lambda(M=0, N=2, H=2, r=0), "M"),
        (lambda: rrr_lambda(M=2, N=-1, H=2, r=0), "N"),
        (lambda: rrr_lambda(M=2, N=2, H=1.5, r=0), "H"),
        (lambda: rrr_lambda(M=2, N=2, H=2, r=3), "r"),
        (lambda: rrr_lambda(M=2, N=2, H=2, r=-1), "r"),
        (lambda: rrr_lambda(M=True, N=2, H=2, r=0), "M"),
        (lambda: dln_lambda([2, 0, 2], 0), "widths[1]"),
        (lambda: dln_lambda([2], 0), "widths"),
        (lambda: dln_lambda([2, 3, 2], 3), "r"),
        (lambda: dln_lambda("232", 0), "widths"),
        (lambda: regular_lambda(0), "d"),
        (lambda: normal_crossing_lambda((1, 0)), "k"),
        (lambda: powers_lambda((1.5,)), "k"),
        (lambda: powers_lambda(()), "k"),
        (lambda: tanh_lambda(0), "H"),
        (lambda: tanh_lambda(1.5), "H"),
        (lambda: norm_power_lambda(0, 1), "d"),
        (lambda: norm_power_lambda(2, 0), "k"),
        (lambda: gaussian_mixture_lambda("both"), "variant"),
    ],
)
def test_invalid_arguments_name_the_argument(call, argname):
    with pytest.raises(ValueError, match=f"`{argname}`".replace("[", r"\[").replace("]", r"\]")):
        call()
