"""The NumPyro backend leaves the user's JAX configuration alone, keeps integer data integer,
evaluates observables at the centre eagerly, and never loses completed draws when a draw's
evaluation (inside the compiled loop since issue 11) fails (issue 9: contracts C1, C2, C3)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pplpatterning import GibbsPosterior, Model, Probes, sample
from pplpatterning.backends.numpyro import (
    evaluate_at_centre,
    model_from_jax,
    posterior_args,
    potential_and_grad,
)
from pplpatterning.backends.numpyro.precision import as_data
from pplpatterning.models import get_model

FAST = dict(num_chains=2, num_burnin=50, progress_bar=False)


@pytest.fixture(scope="module")
def post():
    model = get_model("regular", d=2)
    return GibbsPosterior(model, model.generate(100, seed=0), gamma=1.0)


# --------------------------------------------------------------------------- global JAX state

_CHILD = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    cfg = jax.config
    before = (cfg.jax_enable_x64, cfg.jax_compilation_cache_dir,
              cfg.jax_persistent_cache_min_compile_time_secs, cfg.jax_persistent_cache_min_entry_size_bytes)
    state = lambda: (cfg.jax_enable_x64, cfg.jax_compilation_cache_dir,
                     cfg.jax_persistent_cache_min_compile_time_secs, cfg.jax_persistent_cache_min_entry_size_bytes)
    from pplpatterning import GibbsPosterior, sample
    from pplpatterning.models import get_model
    import pplpatterning.backends.numpyro  # noqa: F401
    out = {"before": before, "after_import": state()}
    model = get_model("regular", d=2)
    post = GibbsPosterior(model, model.generate(100, seed=0), gamma=1.0)
    for start in (False, True):
        jax.config.update("jax_enable_x64", start)
        tr = sample(post, sampler="mala", num_chains=2, num_draws=30, num_burnin=20, seed=3, progress_bar=False)
        out[str(start)] = {"state": state(), "dtype": tr.attrs["dtype"],
                           "user_dtype": str(jax.numpy.ones(2).dtype),
                           "loss": tr["sample_stats"]["loss"].values.tolist(),
                           "w": tr["posterior"]["w"].values.tolist()}
    print(json.dumps(out))
""")


def test_import_and_sample_leave_the_global_jax_config_alone():
    """In a fresh process: importing the backend and sampling (with x64 off, then on) change
    neither ``jax_enable_x64`` nor the compilation-cache settings; both runs are float64 and
    identical for the same seed, and the user's own arrays stay float32 when x64 is off."""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    before = out["before"]
    assert before[0] is False  # JAX's default: the child never turned it on
    assert out["after_import"] == before
    assert out["False"]["state"] == [False, *before[1:]]
    assert out["True"]["state"] == [True, *before[1:]]
    assert out["False"]["user_dtype"] == "float32" and out["True"]["user_dtype"] == "float64"
    for start in ("False", "True"):
        assert out[start]["dtype"] == "float64"
    assert out["False"]["loss"] == out["True"]["loss"]  # bit-identical: x64 off does not mean float32
    assert out["False"]["w"] == out["True"]["w"]


def test_x64_off_still_samples_in_float64(post):
    before = (jax.config.jax_enable_x64, jax.config.jax_compilation_cache_dir)
    kw = dict(sampler="mala", num_draws=30, seed=4, observables={"w0": lambda p, xp: p["w"][0]}, **FAST)
    with jax.enable_x64(False):
        tr32 = sample(post, **kw)
        assert jnp.ones(1).dtype == jnp.float32  # the context the user chose is intact
    tr64 = sample(post, **kw)
    assert (jax.config.jax_enable_x64, jax.config.jax_compilation_cache_dir) == before
    assert tr32.attrs["dtype"] == "float64"
    for group, name in (("sample_stats", "loss"), ("sample_stats", "loss_delta"), ("observables", "w0"),
                        ("posterior", "w")):
        assert tr32[group][name].dtype == np.float64
        np.testing.assert_array_equal(tr32[group][name].values, tr64[group][name].values)


def test_potential_and_user_models_are_float64_with_x64_off(post):
    w = {"w": np.array([0.3, -0.7])}
    with jax.enable_x64(False):
        value, grad = potential_and_grad(post, w)
        model = model_from_jax(lambda p, b: 0.5 * (b["y"] - b["x"] @ p["w"]) ** 2, {"w": np.zeros(2)})
        data = {"x": np.linspace(-1, 1, 20).reshape(10, 2) * (1 + 1e-9), "y": np.linspace(0, 1, 10)}
        user_post = GibbsPosterior(model, data, n_beta=10.0)
    assert value == pytest.approx(post.potential(w), rel=1e-13)
    assert grad["w"].dtype == np.float64
    ref = 0.5 * (data["y"] - data["x"] @ np.zeros(2)) ** 2
    np.testing.assert_allclose(user_post.loss_at_centre_per_sample, ref, rtol=1e-15)


# --------------------------------------------------------------------------- C1: evaluate_at_centre


def test_evaluate_at_centre_is_eager_float64_and_sees_every_parameter():
    model = get_model("rrr", M=2, N=2, H=2, r=1)
    post = GibbsPosterior(model, model.generate(20, seed=0), gamma=1.0, sampled=("B",))
    seen = {}

    def fn(params, consts, xp):
        seen.update(params=params, consts=consts, xp=xp)
        return xp.sum(params["A"]) + xp.sum(params["B"] ** 2)

    with jax.enable_x64(False):
        out = evaluate_at_centre(post, fn)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == ()
    assert set(seen["params"]) == {"A", "B"}  # frozen parameters too
    assert seen["xp"] is jnp
    assert set(seen["consts"]) == set(model.consts)
    for v in seen["params"].values():
        assert isinstance(v, jax.Array) and not isinstance(v, jax.core.Tracer) and v.dtype == jnp.float64
    expected = np.sum(post.centre["A"]) + np.sum(post.centre["B"] ** 2)
    assert float(out) == pytest.approx(expected, rel=1e-14)

    def boom(params, consts, xp):
        raise ZeroDivisionError("no")

    with pytest.raises(ZeroDivisionError, match="no"):  # never caught here: the core names the observable
        evaluate_at_centre(post, boom)


# --------------------------------------------------------------------------- C2: integer data

V = 5
SEEN_TOKEN_DTYPES: list = []


def embedding_loss(params, batch, consts, xp):
    """l_i = (y_i - E[tok_i])² / 2: the loss indexes the embedding by integer token ids."""
    tok = batch["tok"]
    SEEN_TOKEN_DTYPES.append(np.dtype(tok.dtype))
    assert np.issubdtype(tok.dtype, np.integer), f"token ids arrived as {tok.dtype}"
    return (batch["y"] - xp.take(params["E"], tok, axis=0)) ** 2 / 2


@pytest.fixture(scope="module")
def embedding_post():
    rng = np.random.default_rng(1)
    tok = rng.integers(0, V, size=60)
    model = Model("embedding", embedding_loss, {"E": (V,)}, {"E": np.zeros(V)})
    return GibbsPosterior(model, {"tok": tok, "y": 0.1 * rng.normal(size=60)}, n_beta=10.0, gamma=10.0)


def test_as_data_keeps_integers_exact():
    with jax.enable_x64(True):
        big = as_data(np.array([2**53 + 1, -3]))
        assert big.dtype == jnp.int64 and int(big[0]) == 2**53 + 1
        assert as_data(np.arange(3, dtype=np.int32)).dtype == jnp.int64
        assert as_data(np.array([True])).dtype == jnp.bool_
        assert as_data(np.ones(2, np.float32)).dtype == jnp.float64


@pytest.mark.parametrize("sampler, kw", [("mala", {}), ("sgld", dict(step_size=1e-3, batch_size=16))])
def test_integer_token_ids_stay_integer_end_to_end(embedding_post, sampler, kw):
    args = posterior_args(embedding_post)
    assert args.data["tok"].dtype == jnp.int64 and args.data["y"].dtype == jnp.float64
    SEEN_TOKEN_DTYPES.clear()
    probes = Probes(datasets={"other": {"tok": np.arange(V), "y": np.zeros(V)}}, per_sample=[0, 3]) \
        if sampler == "mala" else None
    tr = sample(embedding_post, sampler=sampler, num_draws=20, observables={"e0": lambda p, xp: p["E"][0]},
                probes=probes, **FAST, **kw)
    assert tr.attrs["incomplete"] == 0
    assert np.all(np.isfinite(tr["sample_stats"]["loss"].values))
    assert SEEN_TOKEN_DTYPES and all(np.issubdtype(d, np.integer) for d in SEEN_TOKEN_DTYPES)
    if probes is not None:
        assert np.all(np.isfinite(tr["probe_losses"]["other"].values))
        assert np.all(np.isfinite(tr["per_sample_losses"]["train"].values))


# --------------------------------------------------------------------------- C3: evaluation failures


def _failing_observable(c0, thr):
    """φ(w) = w_0 - c0 through a host callback that raises once |φ| > thr (fine at the centre).

    The callback's values are float32: JAX's x64 switch is thread-local (the backend turns it
    on around its calls only), and a callback run from inside the compiled loop runs on
    XLA's thread, where JAX canonicalises its arrays to float32. The threshold has a 1e-4
    relative margin for that rounding."""
    def host(x):
        x = np.asarray(x)
        if np.any(np.abs(x) > thr * (1 + 1e-4)):
            raise ValueError(f"w0 too large: {float(np.max(np.abs(x))):.3g}")
        return x.astype(np.float32)

    def phi(params, xp):
        v = params["w"][0] - c0
        out = jax.pure_callback(host, jax.ShapeDtypeStruct((), jnp.float32), v, vmap_method="sequential")
        return out.astype(jnp.float64)

    return phi


def test_record_inside_the_loop_matches_numpy(post):
    """37 draws, every kept draw's loss and observable evaluated inside the compiled loop:
    equal to the float64 NumPy reference at the recorded draws."""
    tr = sample(post, sampler="mala", num_draws=37, seed=1, observables={"w1": lambda p, xp: p["w"][1]}, **FAST)
    w = tr["posterior"]["w"].values
    ref = np.array([[post.loss({"w": w[c, d]}) for d in range(37)] for c in range(2)])
    np.testing.assert_allclose(tr["sample_stats"]["loss"].values, ref, rtol=1e-12)
    np.testing.assert_array_equal(tr["observables"]["w1"].values, w[:, :, 1])


def test_failing_observable_stops_the_run_and_keeps_the_completed_segments(post):
    """An observable that raises (from a host callback) at draw k stops the run in the
    segment holding k (40 draws: 20 compiled segments of 2); the trace keeps the completed
    segments, their values equal to a complete run's, and says why it stopped."""
    kw = dict(sampler="mala", num_draws=40, seed=2, **FAST)
    ref = sample(post, observables={"ok": lambda p, xp: p["w"][1]}, **kw)
    c0 = float(post.centre["w"][0])
    dev = np.abs(ref["posterior"]["w"].values[:, :, 0] - c0).max(axis=0)  # per draw, over chains
    prefix = next(p for p in (12, 8, 16, 4, 20, 24) if dev[p:].max() > dev[:p].max() * (1 + 1e-3))
    thr = dev[:prefix].max()
    K = int(np.argmax(dev > thr * (1 + 1e-4))) // 2 * 2  # the first draw of the failing segment
    assert K > 0
    with pytest.warns(RuntimeWarning, match=rf"Sampling stopped early: .*w0 too large.*keeps the {K} of 40"):
        tr = sample(post, observables={"ok": lambda p, xp: p["w"][1], "bad": _failing_observable(c0, thr)},
                    keep_params=True, **kw)
    assert tr.attrs["incomplete"] == 1
    reason = tr.attrs["incomplete_reason"]
    assert "ValueError: w0 too large" in reason and "\n" not in reason
    np.testing.assert_array_equal(tr["posterior"]["w"].values, ref["posterior"]["w"].values[:, :K])
    for group, name in (("sample_stats", "loss"), ("sample_stats", "loss_delta"), ("observables", "ok"),
                        ("sample_stats", "accept_prob")):
        np.testing.assert_array_equal(tr[group][name].values, ref[group][name].values[:, :K], err_msg=name)
    assert np.all(np.isfinite(tr["observables"]["bad"].values))


def test_observable_failing_at_the_first_draw_raises(post):
    """Nothing kept: the error is raised, as for any run stopped before its first kept draw."""
    bad = _failing_observable(float(post.centre["w"][0]), 1e-300)
    with pytest.raises(Exception, match="w0 too large"):
        sample(post, sampler="sgld", step_size=1e-3, num_draws=200, loss_estimate="minibatch",
               observables={"bad": bad}, keep_params=False, **FAST)
