"""The compiled NumPyro potential is exactly U(v) = nβ L_n^ρ(u*, v) + γ/2 ||v - v*||² (issue 2)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pplpatterning import GibbsPosterior
from pplpatterning.backends.numpyro import potential_and_grad
from pplpatterning.models import get_model

ZOO = {
    "regular": dict(d=3),
    "normal_crossing": dict(k=(1, 2)),
    "product": {},
    "powers": dict(k=(1, 2, 3)),
    "rrr": dict(M=2, N=3, H=2, r=1),
    "dln": dict(widths=(2, 3, 2), r=1),
}
N = 16


def _posterior(name, draw):
    model = get_model(name, **ZOO[name])
    data = model.generate(N, seed=draw(st.integers(0, 3)))
    names = list(model.param_shapes)
    sampled = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    use_weights = draw(st.booleans())
    weights = np.array(draw(st.lists(st.floats(0.0, 3.0), min_size=N, max_size=N))) if use_weights else None
    normalize = use_weights and draw(st.booleans()) and weights.sum() > 0
    post = GibbsPosterior(model, data, n_beta=draw(st.floats(0.5, 1e4)), gamma=draw(st.floats(0.0, 50.0)),
                          weights=weights, normalize_weights=normalize, sampled=sampled)
    params = {}
    for k in post.sampled:
        shape = model.param_shapes[k]
        flat = draw(st.lists(st.floats(-2.0, 2.0), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        params[k] = np.asarray(flat, dtype=np.float64).reshape(shape)
    return post, params


def _numeric_grad(post, params, h=1e-6):
    grad = {}
    for k, v in params.items():
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            up, dn = dict(params), dict(params)
            up[k], dn[k] = v.copy(), v.copy()
            up[k][idx] += h
            dn[k][idx] -= h
            g[idx] = (post.potential(up) - post.potential(dn)) / (2 * h)
        grad[k] = g
    return grad


@pytest.mark.parametrize("name", sorted(ZOO))
@settings(max_examples=15)
@given(data=st.data())
def test_compiled_potential_equals_spec(name, data):
    post, params = _posterior(name, data.draw)
    value, grad = potential_and_grad(post, params)
    assert value == pytest.approx(post.potential(params), rel=1e-12, abs=1e-12)
    numeric = _numeric_grad(post, params)
    for k in post.sampled:
        # central differences: truncation O(h² U''') and rounding O(ε|U|/h) bound the error
        scale = 1e-5 * (1.0 + abs(value))
        np.testing.assert_allclose(grad[k], numeric[k], rtol=1e-5, atol=scale)


def test_frozen_parameters_do_not_move_the_potential():
    model = get_model("rrr", M=2, N=2, H=2, r=1)
    post = GibbsPosterior(model, model.generate(N, seed=0), gamma=3.0, sampled=("B",))
    B = np.ones((2, 2))
    v1, g = potential_and_grad(post, {"B": B})
    assert set(g) == {"B"}
    # the same value whatever A is passed: A is frozen at the centre
    assert post.potential({"B": B, "A": np.full((2, 2), 9.0)}) == pytest.approx(v1, rel=1e-12)
