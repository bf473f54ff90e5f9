"""Every bad input to GibbsPosterior raises a clear error naming the argument (issue 2, point 3)."""

import math

import numpy as np
import pytest

from pplpatterning import GibbsPosterior, SamplerSettings


def test_valid_posterior_defaults(tiny_model, tiny_data):
    post = GibbsPosterior(tiny_model, tiny_data)
    assert post.n == 20
    assert post.n_beta == pytest.approx(20 / math.log(20))
    assert post.n_beta_source.startswith("wbic")
    assert post.sampled == ("w", "b")
    assert post.gamma == 0.0
    np.testing.assert_array_equal(post.effective_weights, np.ones(20))


def test_posterior_is_immutable(tiny_model, tiny_data):
    post = GibbsPosterior(tiny_model, tiny_data)
    with pytest.raises(AttributeError):
        post.gamma = 1.0
    with pytest.raises(TypeError):
        post.data["x"] = np.zeros((20, 2))
    with pytest.raises(ValueError):
        post.data["x"][0, 0] = 1.0  # read-only array
    # the caller's arrays are copied, not aliased
    tiny_data["x"][0, 0] = 123.0
    assert post.data["x"][0, 0] != 123.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_data(tiny_model, tiny_data, bad):
    tiny_data["y"][3] = bad
    with pytest.raises(ValueError, match=r"data\['y'\].*NaN or infinite"):
        GibbsPosterior(tiny_model, tiny_data)


def test_data_length_mismatch(tiny_model, tiny_data):
    tiny_data["y"] = tiny_data["y"][:-1]
    with pytest.raises(ValueError, match="`data` entries disagree on the number of samples"):
        GibbsPosterior(tiny_model, tiny_data)


def test_data_missing_key(tiny_model, tiny_data):
    del tiny_data["y"]
    with pytest.raises(ValueError, match="evaluating the loss on `data` at the centre failed .KeyError: 'y'"):
        GibbsPosterior(tiny_model, tiny_data)


def test_data_not_mapping(tiny_model):
    with pytest.raises(TypeError, match="`data` must be a non-empty mapping"):
        GibbsPosterior(tiny_model, [1, 2, 3])


def test_data_shape_incompatible_with_model(tiny_model, tiny_data):
    tiny_data["x"] = np.ones((20, 3))  # model expects 2 features
    with pytest.raises(ValueError, match=r"evaluating the loss on `data` at the centre failed.*'x': \(20, 3\)"):
        GibbsPosterior(tiny_model, tiny_data)


def test_centre_shape_mismatch(tiny_model, tiny_data):
    with pytest.raises(ValueError, match=r"`centre\['w'\]` has shape \(3,\); the model expects \(2,\)"):
        GibbsPosterior(tiny_model, tiny_data, centre={"w": np.zeros(3), "b": 0.0})


def test_centre_missing_and_unknown(tiny_model, tiny_data):
    with pytest.raises(ValueError, match="`centre` lacks parameter 'b'"):
        GibbsPosterior(tiny_model, tiny_data, centre={"w": np.zeros(2)})
    with pytest.raises(ValueError, match=r"`centre` names unknown parameters \['c'\]"):
        GibbsPosterior(tiny_model, tiny_data, centre={"w": np.zeros(2), "b": 0.0, "c": 1.0})


def test_centre_nonfinite(tiny_model, tiny_data):
    with pytest.raises(ValueError, match=r"`centre\['w'\]` contains 1 NaN"):
        GibbsPosterior(tiny_model, tiny_data, centre={"w": np.array([0.0, np.nan]), "b": 0.0})


@pytest.mark.parametrize("n_beta", [0, -1.0, np.nan, np.inf])
def test_bad_n_beta(tiny_model, tiny_data, n_beta):
    with pytest.raises(ValueError, match="`n_beta` must be a finite positive number"):
        GibbsPosterior(tiny_model, tiny_data, n_beta=n_beta)


def test_n_beta_wrong_type(tiny_model, tiny_data):
    with pytest.raises(TypeError, match="`n_beta` must be a positive number"):
        GibbsPosterior(tiny_model, tiny_data, n_beta="10")


def test_explicit_n_beta_recorded(tiny_model, tiny_data):
    post = GibbsPosterior(tiny_model, tiny_data, n_beta=7)
    assert post.n_beta == 7.0 and post.n_beta_source == "user"


@pytest.mark.parametrize("gamma", [-0.1, np.nan, np.inf])
def test_bad_gamma(tiny_model, tiny_data, gamma):
    with pytest.raises(ValueError, match="`gamma` must be finite and ≥ 0"):
        GibbsPosterior(tiny_model, tiny_data, gamma=gamma)


def test_negative_weights(tiny_model, tiny_data):
    w = np.ones(20)
    w[4] = -0.5
    with pytest.raises(ValueError, match="`weights` must be non-negative; 1 are negative"):
        GibbsPosterior(tiny_model, tiny_data, weights=w)


def test_wrongly_sized_weights(tiny_model, tiny_data):
    with pytest.raises(ValueError, match=r"`weights` must have shape \(n,\) = \(20,\), got \(19,\)"):
        GibbsPosterior(tiny_model, tiny_data, weights=np.ones(19))


def test_nonfinite_weights(tiny_model, tiny_data):
    w = np.ones(20)
    w[0] = np.nan
    with pytest.raises(ValueError, match="`weights` contains 1 NaN"):
        GibbsPosterior(tiny_model, tiny_data, weights=w)


@pytest.mark.parametrize("normalize", [True, False])
def test_all_zero_weights_are_refused(tiny_model, tiny_data, normalize):
    """Raw or normalised, all-zero weights leave no data term (issue 9)."""
    with pytest.raises(ValueError, match="`weights` are all zero"):
        GibbsPosterior(tiny_model, tiny_data, weights=np.zeros(20), normalize_weights=normalize)


def test_weights_whose_sum_overflows_are_refused(tiny_model, tiny_data):
    w = np.full(20, np.finfo(np.float64).max / 4)  # each finite, the sum is not
    with pytest.raises(ValueError, match=r"`weights` sum to inf \(overflow"):
        GibbsPosterior(tiny_model, tiny_data, weights=w)


@pytest.mark.parametrize("bad", [1, "yes", None, np.float64(1.0)])
def test_normalize_weights_must_be_bool(tiny_model, tiny_data, bad):
    with pytest.raises(TypeError, match="`normalize_weights` must be True or False"):
        GibbsPosterior(tiny_model, tiny_data, weights=np.ones(20), normalize_weights=bad)


def test_normalised_weights(tiny_model, tiny_data):
    w = np.arange(20.0)
    post = GibbsPosterior(tiny_model, tiny_data, weights=w, normalize_weights=True)
    lstar = post.loss_at_centre_per_sample
    assert post.loss_at_centre == pytest.approx(np.sum(w * lstar) / np.sum(w), rel=1e-14)


def test_unknown_sampled_names(tiny_model, tiny_data):
    with pytest.raises(ValueError, match=r"`sampled` names unknown parameters \['v'\]"):
        GibbsPosterior(tiny_model, tiny_data, sampled=("w", "v"))
    with pytest.raises(TypeError, match="`sampled` must be a sequence of parameter names"):
        GibbsPosterior(tiny_model, tiny_data, sampled="w")
    with pytest.raises(ValueError, match="`sampled` is empty"):
        GibbsPosterior(tiny_model, tiny_data, sampled=())


def test_restriction_keeps_model_order(tiny_model, tiny_data):
    post = GibbsPosterior(tiny_model, tiny_data, sampled=("b",))
    assert post.sampled == ("b",) and post.frozen == ("w",)


def test_loss_not_per_sample(tiny_data):
    from pplpatterning import Model

    def mean_loss(params, batch, consts, xp):
        return xp.mean((batch["y"] - batch["x"] @ params["w"]) ** 2)

    model = Model("bad", mean_loss, {"w": (2,)}, {"w": np.zeros(2)})
    with pytest.raises(ValueError, match="it must return one loss per sample"):
        GibbsPosterior(model, tiny_data)


def test_model_must_be_model(tiny_data):
    with pytest.raises(TypeError, match="`model` must be a pplpatterning.Model"):
        GibbsPosterior(object(), tiny_data)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sampler="langevin"), "`sampler` must be one of"),
        (dict(num_chains=0), "`num_chains` must be a positive integer"),
        (dict(num_draws=2.5), "`num_draws` must be a positive integer"),
        (dict(num_burnin=-1), "`num_burnin` must be a non-negative integer"),
        (dict(sampler="sgld", step_size=-1e-3), "`step_size` must be a finite positive number"),
        (dict(sampler="sgld", batch_size=0), "`batch_size` must be a positive integer"),
        (dict(loss_estimate="approx"), "`loss_estimate` must be one of"),
        (dict(sampler="nuts", loss_estimate="minibatch"), "applies to SG samplers only"),
        (dict(sampler="sgld", options={"alpha": 0.9}), r"Unknown option\(s\) \['alpha'\] for sampler 'sgld'"),
        (dict(seed=-3), r"`seed` must be an integer in \[0, 2\*\*63\)"),
    ],
)
def test_bad_sampler_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplerSettings(**kwargs)


def test_batch_size_larger_than_n_is_caught_before_sampling(tiny_model, tiny_data):
    from pplpatterning import sample

    post = GibbsPosterior(tiny_model, tiny_data)
    with pytest.raises(ValueError, match="`batch_size`=50 exceeds the number of samples n=20"):
        sample(post, sampler="sgld", batch_size=50)
    with pytest.raises(ValueError, match="`backend` must be one of"):
        sample(post, backend="stan")
