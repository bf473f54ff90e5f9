"""Weight restriction below the parameter level (issue 12, item 3): sampling a boolean mask
of a parameter's entries, the rest frozen at the centre, on both backends."""

from __future__ import annotations

import numpy as np
import pytest

import pplpatterning as pp
from pplpatterning.models import get_model
from pplpatterning.spec.masks import assemble, masked_param, resolve_component
from pplpatterning.spec.observables import Observable
from pplpatterning.spec.refine import refine
from pplpatterning.workflows.compare import finite_target

BACKENDS = ("numpyro", "pyro")


@pytest.fixture(scope="module")
def dln():
    model = get_model("dln", widths=(2, 3, 3, 2), r=2)
    return model, model.generate(120, seed=1)


def _head_mask(shape, rows):
    mask = np.zeros(shape, dtype=bool)
    mask[rows] = True
    return mask


def test_assemble_puts_each_entry_back():
    centre = np.arange(12.0).reshape(3, 4)
    mask = np.zeros((3, 4), bool)
    mask[1, 1:3] = True
    mask[2, 0] = True
    m = masked_param(mask, centre)
    v = np.array([-1.0, -2.0, -3.0])
    full = assemble({"w": v}, {}, {"w": m}, np)["w"]
    expect = centre.copy()
    expect[mask] = v
    assert np.array_equal(full, expect)


def test_masked_posterior_shapes_and_round_trip(dln):
    model, data = dln
    mask = _head_mask(model.param_shapes["W2"], 0)
    post = pp.GibbsPosterior(model, data, gamma=10.0, sampled={"W2": mask, "W3": np.ones((2, 3), bool)})
    assert post.sampled == ("W2", "W3") and post.frozen == ("W1",)
    assert post.sampled_shapes == {"W2": (3,), "W3": (2, 3)} and post.sampled_dim == 9
    assert np.array_equal(post.sampled_centre["W2"], post.centre["W2"][0])
    moved = post.with_(gamma=5.0)  # with_ keeps the mask
    assert moved.masks.keys() == {"W2"} and np.array_equal(moved.masks["W2"], mask)
    assert post.describe()["masked"] == {"W2": 3}
    assert finite_target(post) is None  # zoo targets restrict whole parameters only
    full = post.full_params({"W2": np.zeros(3), "W3": post.centre["W3"]})
    assert np.array_equal(full["W2"][1:], post.centre["W2"][1:]) and np.all(full["W2"][0] == 0)


@pytest.mark.parametrize("bad, err, match", [
    ({"W2": np.ones((3, 3))}, TypeError, r"`sampled\['W2'\]` must be a boolean mask"),
    ({"W2": np.ones((2, 3), bool)}, ValueError, r"`sampled\['W2'\]` has shape \(2, 3\)"),
    ({"W2": np.zeros((3, 3), bool)}, ValueError, "selects no parameter entry"),
    ({"W9": np.ones((3, 3), bool)}, ValueError, "unknown parameter 'W9'"),
])
def test_bad_masks_are_refused(dln, bad, err, match):
    model, data = dln
    with pytest.raises(err, match=match):
        pp.GibbsPosterior(model, data, sampled=bad)


def test_full_params_checks_the_masked_shape(dln):
    model, data = dln
    post = pp.GibbsPosterior(model, data, sampled={"W2": _head_mask((3, 3), 1)})
    with pytest.raises(ValueError, match=r"`params\['W2'\]` has shape \(3, 3\).*\(3,\) \(its masked entries\)"):
        post.potential({"W2": np.zeros((3, 3))})


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_potential_matches_the_spec(dln, backend):
    model, data = dln
    post = pp.GibbsPosterior(model, data, gamma=10.0, sampled={"W2": _head_mask((3, 3), 1), "W1": _head_mask((3, 2), 2)})
    rng = np.random.default_rng(3)
    params = {k: c + 0.1 * rng.normal(size=c.shape) for k, c in post.sampled_centre.items()}
    from pplpatterning.sampling.backend import get_backend
    module = get_backend(backend)
    value, grad = module.potential_and_grad(post, params)
    assert value == pytest.approx(post.potential(params), rel=1e-12)
    h = 1e-6
    for k in params:
        for j in range(params[k].size):
            up = {q: v.copy() for q, v in params.items()}
            dn = {q: v.copy() for q, v in params.items()}
            up[k][j] += h
            dn[k][j] -= h
            fd = (post.potential(up) - post.potential(dn)) / (2 * h)
            assert grad[k][j] == pytest.approx(fd, rel=1e-6, abs=1e-6)


class _FrozenDrift(Observable):
    """Σ |w - w*| over the frozen entries of the masked parameters and the frozen parameters:
    exactly 0 in every draw when only the mask moves."""

    def __init__(self, post):
        self.centre = {k: np.array(v) for k, v in post.centre.items()}
        self.frozen_entries = {k: np.array(~post.masks[k]) if k in post.masks else np.ones_like(v, bool)
                               for k, v in post.centre.items() if k in post.masks or k in post.frozen}

    def __call__(self, params, xp):
        total = 0.0
        for k, keep in self.frozen_entries.items():
            diff = xp.abs(params[k] - xp.asarray(self.centre[k]))
            total = total + xp.sum(xp.where(xp.asarray(keep), diff, xp.zeros_like(diff)))
        return total


@pytest.mark.parametrize("backend", BACKENDS)
def test_head_masked_run_moves_only_the_head(dln, backend):
    model, data = dln
    mask = _head_mask((3, 3), 1)
    post = pp.GibbsPosterior(model, data, gamma=10.0, sampled={"W2": mask})
    trace = pp.sample(post, backend=backend, sampler="sgld", step_size=1e-3, num_chains=2, num_draws=40,
                      num_burnin=10, seed=4, progress_bar=False, observables={"drift": _FrozenDrift(post)})
    drift = trace["observables"]["drift"].values
    assert drift.shape == (2, 40) and np.all(drift == 0.0)  # bit-identical to the centre
    head = trace["posterior"]["W2"].values
    assert head.shape == (2, 40, 3)
    assert np.all(np.std(head, axis=1) > 0)  # the head itself does move


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_mask_equals_the_same_restriction_by_name(backend):
    """The first two coordinates of regular(d=4) as a mask, and as the parameter u of
    regular(d=4, split=2): the same posterior, the same noise, so the same draws; and λ̂ on
    the exact finite-nβ target of the named restriction."""
    whole, split = get_model("regular", d=4), get_model("regular", d=4, split=2)
    data = whole.generate(400, seed=2)
    by_mask = pp.GibbsPosterior(whole, data, gamma=1.0, sampled={"w": np.array([True, True, False, False])})
    by_name = pp.GibbsPosterior(split, data, gamma=1.0, sampled=("u",))
    kw = dict(backend=backend, sampler="mala", step_size=0.05, num_chains=4, num_draws=400, num_burnin=100,
              seed=7, progress_bar=False)
    t_mask, t_name = pp.sample(by_mask, **kw), pp.sample(by_name, **kw)
    assert np.allclose(t_mask["posterior"]["w"].values, t_name["posterior"]["u"].values, rtol=0, atol=1e-10)
    est = pp.llc(t_mask)
    target = finite_target(by_name)
    assert abs(est.llc - target) < 4 * est.mcse, (est, target)


def test_refine_and_components_take_masks(dln):
    model, data = dln
    post = pp.GibbsPosterior(model, data, gamma=10.0)
    head = {"W2": _head_mask((3, 3), 0)}
    r = refine(post, component=head)
    assert r.sampled == ("W2",) and r.sampled_shapes == {"W2": (3,)}
    parts = pp.spec.components(post, {"h0": head, "last": "W3"})
    assert parts["h0"].sampled_dim == 3 and parts["last"].sampled == ("W3",)
    whole, masks = resolve_component(model.param_shapes, {"W1": np.ones((3, 2), bool), "W2": head["W2"]})
    assert whole == ("W1",) and list(masks) == ["W2"]
