"""The Trace: structure, attrs, exact netCDF round trip, seeds reproduce (issue 2, point 6)."""

import numpy as np
import pytest
import xarray as xr

from pplpatterning import GibbsPosterior, llc, load_trace, sample, save_trace
from pplpatterning.trace import build_trace, trace_attr

REQUIRED_ATTRS = {"backend", "sampler", "n_beta", "n_beta_source", "gamma", "n", "loss_at_centre", "seed",
                  "versions", "settings", "loss_estimate", "model"}


@pytest.fixture(scope="module")
def small_trace():
    from tests.conftest import linear_loss
    from pplpatterning import Model

    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 2))
    data = {"x": x, "y": x @ np.array([1.0, 2.0]) + rng.normal(size=50)}
    model = Model("tiny", linear_loss, {"w": (2,), "b": ()}, {"w": np.zeros(2), "b": np.zeros(())})
    post = GibbsPosterior(model, data, gamma=10.0)
    phi = {"w0": lambda p, xp: p["w"][0], "norm": lambda p, xp: xp.sum(p["w"] ** 2)}
    return post, sample(post, sampler="sgld", step_size=1e-3, num_chains=2, num_draws=200, num_burnin=50,
                        seed=3, progress_bar=False, observables=phi)


def test_groups_dims_and_attrs(small_trace):
    post, tr = small_trace
    assert {"posterior", "sample_stats", "observables"} <= set(tr.children)
    ss = tr["sample_stats"]
    assert ss["loss"].dims == ("chain", "draw") and ss["loss"].shape == (2, 200)
    assert ss["loss_delta"].dtype == np.float64
    assert tr["posterior"]["w"].shape == (2, 200, 2)
    assert tr["observables"]["w0"].shape == (2, 200)
    np.testing.assert_allclose(tr["observables"]["w0"].values, tr["posterior"]["w"].values[..., 0], rtol=1e-15)
    assert REQUIRED_ATTRS <= set(tr.attrs)
    assert trace_attr(tr, "backend") == "numpyro"
    assert trace_attr(tr, "n_beta") == pytest.approx(post.n_beta)
    assert trace_attr(tr, "settings")["step_size"] == 1e-3
    assert "jax" in trace_attr(tr, "versions")


def test_loss_delta_matches_direct_float64(small_trace):
    post, tr = small_trace
    w = tr["posterior"]["w"].values
    b = tr["posterior"]["b"].values
    for c, d in [(0, 0), (1, 17), (0, 199)]:
        params = {"w": w[c, d], "b": b[c, d]}
        assert tr["sample_stats"]["loss"].values[c, d] == pytest.approx(post.loss(params), rel=1e-12)
        assert tr["sample_stats"]["loss_delta"].values[c, d] == pytest.approx(
            post.loss(params) - post.loss_at_centre, rel=1e-9, abs=1e-13)


def test_netcdf_round_trip_is_exact(small_trace, tmp_path):
    _, tr = small_trace
    path = save_trace(tr, tmp_path / "trace.nc")
    back = load_trace(path)
    for group in ("posterior", "sample_stats", "observables"):
        xr.testing.assert_identical(back[group].to_dataset(), tr[group].to_dataset())
    assert dict(back.attrs) == dict(tr.attrs)
    assert llc(back) == llc(tr)


def test_load_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="No trace at"):
        load_trace(tmp_path / "nope.nc")


def test_same_seed_same_trace_different_seed_different(small_trace):
    post, tr = small_trace
    phi = {"w0": lambda p, xp: p["w"][0], "norm": lambda p, xp: xp.sum(p["w"] ** 2)}
    kw = dict(sampler="sgld", step_size=1e-3, num_chains=2, num_draws=200, num_burnin=50, progress_bar=False,
              observables=phi)
    again = sample(post, seed=3, **kw)
    np.testing.assert_array_equal(again["posterior"]["w"].values, tr["posterior"]["w"].values)
    np.testing.assert_array_equal(again["sample_stats"]["loss"].values, tr["sample_stats"]["loss"].values)
    other = sample(post, seed=4, **kw)
    assert not np.array_equal(other["posterior"]["w"].values, tr["posterior"]["w"].values)


def test_build_trace_requires_loss_fields():
    with pytest.raises(ValueError, match="must contain 'loss_delta'"):
        build_trace(posterior={}, sample_stats={"loss": np.zeros((1, 3))}, attrs={})


def test_keep_params_false_drops_posterior(small_trace):
    post, _ = small_trace
    tr = sample(post, sampler="sgld", step_size=1e-3, num_chains=1, num_draws=20, num_burnin=0,
                progress_bar=False, keep_params=False)
    assert len(tr["posterior"].data_vars) == 0
    assert tr["sample_stats"]["loss"].shape == (1, 20)


# ------------------------------------------------------- load_trace checks the schema (issue 9)
def _minimal_trace(attrs=None):
    delta = np.zeros((1, 4))
    base = {"n": 5, "n_beta": 2.0, "gamma": 0.0, "loss_at_centre": 0.0, "backend": "numpyro", "sampler": "nuts"}
    return build_trace(posterior={}, sample_stats={"loss": delta + 1.0, "loss_delta": delta},
                       attrs=base if attrs is None else attrs)


def test_load_trace_refuses_an_arbitrary_netcdf(tmp_path):
    path = tmp_path / "other.nc"
    xr.Dataset({"temperature": (("time",), np.arange(3.0))}).to_netcdf(path, engine="netcdf4")
    with pytest.raises(ValueError, match=r"other\.nc' has no group 'posterior'.*not a pplpatterning Trace"):
        load_trace(path)


def test_load_trace_names_a_missing_sample_stat(tmp_path):
    tree = _minimal_trace()
    tree["sample_stats"] = xr.DataTree(tree["sample_stats"].to_dataset().drop_vars("loss_delta"))
    path = save_trace(tree, tmp_path / "t.nc")
    with pytest.raises(ValueError, match=r"'sample_stats' has no variable 'loss_delta'"):
        load_trace(path)


@pytest.mark.parametrize("attr", ["n_beta", "loss_at_centre"])
def test_load_trace_names_a_missing_attr(tmp_path, attr):
    tree = _minimal_trace()
    del tree.attrs[attr]
    path = save_trace(tree, tmp_path / "t.nc")
    with pytest.raises(ValueError, match=rf"t\.nc' lacks the root attribute\(s\) \['{attr}'\]"):
        load_trace(path)


def test_load_trace_refuses_a_file_that_is_not_netcdf(tmp_path):
    path = tmp_path / "junk.nc"
    path.write_text("not a netCDF file")
    with pytest.raises(ValueError, match=r"Could not read .*junk\.nc' as a Trace"):
        load_trace(path)


def test_minimal_trace_without_params_round_trips(tmp_path):
    back = load_trace(save_trace(_minimal_trace(), tmp_path / "t.nc"))
    assert back["sample_stats"]["loss"].shape == (1, 4) and trace_attr(back, "n_beta") == 2.0
