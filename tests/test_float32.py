"""``dtype="float32"`` (issue 11, item 3): positions, data and passes in float32, the loss
differences, the recorded series and every accumulator in float64; the estimate stays on the
exact finite-nβ target on both backends."""

import numpy as np
import pytest

import pplpatterning as pp
from pplpatterning.models import get_model
from pplpatterning.spec.probes import Probes

RUN = dict(sampler="mala", num_chains=4, num_draws=1500, num_burnin=500, seed=11, progress_bar=False)


@pytest.fixture(scope="module")
def post():
    model = get_model("regular", d=2)
    return pp.GibbsPosterior(model, model.generate(500, seed=3), gamma=1.0)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_float32_mala_is_on_the_exact_target(post, backend):
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    target = post.model.target_fn(post)
    tr = pp.sample(post, backend=backend, dtype="float32", keep_params=True,
                   observables={"w0": pp.observables.param("w", 0)}, probes=Probes(per_sample=[0, 1], stream=True), **RUN)
    assert tr.attrs["dtype"] == "float32"
    assert tr["posterior"]["w"].dtype == np.float32
    for name in ("loss", "loss_delta", "accept_prob"):
        assert tr["sample_stats"][name].dtype == np.float64, name
    assert tr["observables"]["w0"].dtype == np.float64
    assert tr["per_sample_moments"]["train_cross"].dtype == np.float64
    est = pp.llc(tr)
    # 4 MCSE against the exact finite-nβ target (fixed seed)
    assert abs(est.llc - target) < 4 * est.mcse, (est.llc, est.mcse, target)
    np.testing.assert_array_equal(tr["observables"]["w0"].values, tr["posterior"]["w"].values[:, :, 0])


def test_float32_is_refused_for_nuts_before_compiling(post):
    with pytest.raises(ValueError, match="`dtype='float32'` applies to the update-rule samplers"):
        pp.sample(post, sampler="nuts", dtype="float32", progress_bar=False)
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        pp.sample(post, sampler="mala", dtype="float16", progress_bar=False)


def test_the_memory_estimate_counts_float32_and_suggests_it(post):
    from pplpatterning.samplers.settings import SamplerSettings
    from pplpatterning.sampling.memory import SampleMemoryError, check_memory, estimate_memory

    s64, s32 = SamplerSettings(sampler="mala"), SamplerSettings(sampler="mala", dtype="float32")
    e64 = estimate_memory(post, s64, keep_params=True)
    e32 = estimate_memory(post, s32, keep_params=True)
    assert e32["state"] * 2 == e64["state"] and e32["data"] * 2 == e64["data"]
    assert e64["draws"] - e32["draws"] == 4 * 1000 * 2 * post.model.dim * 4  # the kept parameters halve
    need64, need32 = sum(e64.values()), sum(e32.values())
    with pytest.raises(SampleMemoryError, match='dtype="float32"'):
        check_memory(post, s64, keep_params=True, available=(need64 + need32) // 2)


# ---------------------------------------------------------------- bfloat16 forward passes
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_bfloat16_forward_mala_is_on_the_exact_target(post, backend):
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    target = post.model.target_fn(post)
    tr = pp.sample(post, backend=backend, dtype="float32", forward_dtype="bfloat16", **RUN)
    assert tr.attrs["dtype"] == "float32" and tr.attrs["forward_dtype"] == "bfloat16"
    for name in ("loss", "loss_delta"):
        assert tr["sample_stats"][name].dtype == np.float64, name
    ref = pp.sample(post, backend=backend, dtype="float32", **RUN)
    assert ref.attrs["forward_dtype"] == "float32"
    # the passes really ran in bfloat16: the loss series differ from float32's, by a rounding error
    a, b = tr["sample_stats"]["loss"].values, ref["sample_stats"]["loss"].values
    assert not np.array_equal(a[:, :5], b[:, :5])
    est = pp.llc(tr)
    assert abs(est.llc - target) < 4 * est.mcse, (est.llc, est.mcse, target)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_low_precision_loss_casts_floats_only_and_returns_float32(backend):
    from pplpatterning.spec.forward import LowPrecisionLoss

    if backend == "numpyro":
        xp = pytest.importorskip("jax.numpy")
    else:
        pytest.importorskip("torch")
        import array_api_compat.torch as xp
    seen = {}

    def loss(params, batch, consts, xp):
        seen.update(w=params["w"].dtype, x=batch["x"].dtype, ids=batch["ids"].dtype, c=consts["c"].dtype)
        return xp.sum(params["w"] * batch["x"], axis=-1) + consts["c"]

    f = LowPrecisionLoss(loss)
    assert f == LowPrecisionLoss(loss) and hash(f) == hash(LowPrecisionLoss(loss))  # compiled programs are reused
    out = f({"w": xp.asarray([1.0, 2.0], dtype=xp.float32)},
            {"x": xp.asarray([[1.0, 1.0], [3.0, 1.0]], dtype=xp.float32), "ids": xp.asarray([1, 2], dtype=xp.int64)},
            {"c": xp.asarray(0.5, dtype=xp.float32)}, xp)
    assert seen["w"] == xp.bfloat16 and seen["x"] == xp.bfloat16 and seen["c"] == xp.bfloat16
    assert xp.isdtype(seen["ids"], "integral")  # token ids stay integer
    assert out.dtype == xp.float32
    np.testing.assert_allclose(np.asarray(out), [3.5, 5.5])


def test_bfloat16_sequence_model_reduces_tokens_after_the_cast():
    jnp = pytest.importorskip("jax.numpy")
    from pplpatterning.models.transformer import TransformerConfig, transformer_model
    from pplpatterning.spec.forward import LowPrecisionLoss, forward_losses
    from pplpatterning.spec.model import TokenReduced

    model = transformer_model(TransformerConfig(vocab=8, context=8, d_model=8, n_heads=2, d_head=4, n_layers=1))
    assert forward_losses(model, None) == (model.loss, model.token_loss)
    loss, token = forward_losses(model, "bfloat16")
    assert isinstance(token, LowPrecisionLoss) and isinstance(loss, TokenReduced) and loss.token_loss is token
    data = model.generate(16, seed=0)
    p32 = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in model.centre.items()}
    consts = {k: jnp.asarray(v) for k, v in model.consts.items()}
    batch = {"tokens": jnp.asarray(data["tokens"])}
    low = np.asarray(loss(p32, batch, consts, jnp))
    ref = model.per_sample_loss_numpy(model.centre, data)
    assert low.dtype == np.float32 and low.shape == ref.shape
    np.testing.assert_allclose(low, ref, rtol=2e-2)  # bfloat16 keeps 8 significand bits
    assert not np.allclose(low, ref, rtol=1e-6)


def test_forward_dtype_is_checked_before_compiling(post):
    with pytest.raises(ValueError, match="pass dtype='float32' as well"):
        pp.sample(post, sampler="mala", forward_dtype="bfloat16", progress_bar=False)
    with pytest.raises(ValueError, match="`forward_dtype` must be None or one of"):
        pp.sample(post, sampler="mala", dtype="float32", forward_dtype="float16", progress_bar=False)
