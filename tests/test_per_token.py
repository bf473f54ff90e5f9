"""Per-token losses (issue 11, item 2): a sequence model's loss returns (batch, T); the
posterior uses the per-sequence mean, integer token ids stay integer, and per-token
susceptibilities χ_{z,t} = -Cov(φ, l_{z,t} - L) are recorded stored or streamed, on both
backends. Linearity makes the per-sequence χ_z the mean over positions of χ_{z,t} exactly."""

import numpy as np
import pytest

import pplpatterning as pp
from pplpatterning.models import get_model
from pplpatterning.spec.model import Model, TokenReduced
from pplpatterning.spec.probes import Probes

V, T, N = 5, 6, 40


def token_loss(params, batch, consts, xp):
    """l_{z,t} = ½ (e[id_{z,t}] - y_{z,t})²: one embedding per token id (integer ids)."""
    e = params["e"]
    return 0.5 * (xp.take(e, xp.reshape(batch["ids"], (-1,)), axis=0).reshape(batch["ids"].shape) - batch["y"]) ** 2


@pytest.fixture(scope="module")
def post():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, size=(N, T))
    y = 0.3 * ids + rng.normal(0, 0.5, size=(N, T))
    model = Model("tokens", token_loss, {"e": (V,)}, {"e": 0.3 * np.arange(V)}, tokens="mean")
    return pp.GibbsPosterior(model, {"ids": ids, "y": y}, n_beta=20.0, gamma=1.0)


def test_the_model_reduces_tokens_to_a_per_sample_mean(post):
    assert isinstance(post.model.loss, TokenReduced) and post.model.token_loss is token_loss
    per_token = token_loss(dict(post.centre), post.data, {}, np)
    np.testing.assert_allclose(post.loss_at_centre_per_sample, per_token.mean(axis=1), rtol=1e-14)
    with pytest.raises(ValueError, match="`tokens` must be None, 'mean' or 'sum'"):
        Model("bad", token_loss, {"e": (V,)}, {"e": np.zeros(V)}, tokens="max")
    with pytest.raises(ValueError, match="`per_token=True` needs a sequence model"):
        regular = get_model("regular", d=2)
        pp.sample(pp.GibbsPosterior(regular, regular.generate(20)), probes=Probes(per_sample="all", per_token=True),
                  progress_bar=False)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_per_token_chi_stored_streamed_and_per_sequence_agree(post, backend):
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    kw = dict(backend=backend, sampler="mala", num_chains=2, num_draws=200, num_burnin=100, seed=1,
              progress_bar=False, observables={"e0": pp.observables.param("e", 0)}, keep_params=False)
    rows = [0, 3, 7]
    stored = pp.sample(post, probes=Probes(per_sample=rows, per_token=True, stream=False), **kw)
    streamed = pp.sample(post, probes=Probes(per_sample=rows, per_token=True, stream=True), **kw)
    sequences = pp.sample(post, probes=Probes(per_sample=rows, stream=False), **kw)
    a, b, c = pp.attribution(stored), pp.attribution(streamed), pp.attribution(sequences)
    assert a.sizes["sample"] == len(rows) * T
    np.testing.assert_array_equal(a["sequence"].values, np.repeat(rows, T))
    np.testing.assert_array_equal(a["position"].values, np.tile(np.arange(T), len(rows)))
    np.testing.assert_allclose(a["weight"].values, 1.0 / T)  # c ρ_z / T: mean over tokens
    scale = float(abs(a["chi"]).max())
    # floating-point reproduction: the same draws, χ is linear in the probe's losses
    np.testing.assert_allclose(b["chi"].values, a["chi"].values, rtol=1e-10, atol=1e-12 * scale)
    per_sequence = a["chi"].values.reshape(len(rows), T, -1).mean(axis=1)
    np.testing.assert_allclose(per_sequence, c["chi"].values, rtol=1e-10, atol=1e-12 * scale)
    assert scale > 0
