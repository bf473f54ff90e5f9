"""The built-in small transformer (issue 12, item 1): one xp definition agreeing across
NumPy / JAX / torch, gradients, integer tokens end to end, the induction task's labels,
training and checkpoints, components and head scores, the torch.nn.Module wrapper, and
short SGLD runs on both backends."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import pplpatterning as pp
from pplpatterning.models.transformer import (
    LABEL_CODES, InductionTask, TransformerConfig, attention_patterns, head_scores, init_params, param_shapes,
    transformer_components, transformer_consts, transformer_model, transformer_token_loss,
)
from pplpatterning.models.transformer.components import scores_from_patterns
from pplpatterning.spec.checkpoints import load_checkpoints

TINY = TransformerConfig(vocab=5, context=6, d_model=8, n_heads=2, d_head=4, n_layers=2)
CONFIGS = {
    "attn-only": TINY,
    "mlp-gelu-ln": TransformerConfig(vocab=5, context=6, d_model=8, n_heads=2, d_head=4, n_layers=2, mlp=True,
                                     d_mlp=12, layer_norm=True),
    "mlp-relu": TransformerConfig(vocab=5, context=6, d_model=8, n_heads=2, d_head=3, n_layers=1, mlp=True,
                                  d_mlp=6, activation="relu"),
}


def _params(config, seed=1):
    """Init params with every bias / layer-norm gain perturbed too (so they matter)."""
    rng = np.random.default_rng(100 + seed)
    return {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in init_params(config, seed).items()}


def _tokens(config, n=4, seed=0):
    return np.random.default_rng(seed).integers(0, config.vocab, size=(n, config.context + 1))


@pytest.fixture
def one_thread():
    """torch on one thread: a tiny model, and 2 threads spin-wait on a loaded 2-core machine."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def jax_x64():
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        yield jax


# --------------------------------------------------------------------------- one definition


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_per_token_loss_agrees_on_numpy_jax_and_torch(name, jax_x64):
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xt
    import jax.numpy as jnp

    config = CONFIGS[name]
    params, tokens, consts = _params(config), _tokens(config), transformer_consts(config)
    ref = transformer_token_loss(params, {"tokens": tokens}, consts, np)
    assert ref.shape == (4, config.context) and ref.dtype == np.float64
    # the per-token loss is a proper NLL: log-softmax normalised over the vocabulary
    assert np.all(ref > 0)
    with jax_x64.enable_x64(True):
        lj = transformer_token_loss({k: jnp.asarray(v) for k, v in params.items()}, {"tokens": jnp.asarray(tokens)},
                                    {k: jnp.asarray(v) for k, v in consts.items()}, jnp)
        lj = np.asarray(lj)
    lt = transformer_token_loss({k: torch.tensor(v) for k, v in params.items()}, {"tokens": torch.tensor(tokens)},
                                {k: torch.tensor(v) for k, v in consts.items()}, xt).numpy()
    np.testing.assert_allclose(lj, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lt, ref, rtol=1e-10, atol=1e-12)
    # the Model reduces per-token losses to their mean per sequence
    model = transformer_model(config, params)
    np.testing.assert_allclose(model.per_sample_loss_numpy(params, {"tokens": tokens}), ref.mean(axis=1), rtol=1e-14)


def test_causality_and_shorter_sequences():
    """Changing a later token never changes an earlier position's loss; a sequence shorter
    than the context gives the first positions of the full one's losses."""
    params, tokens, consts = _params(TINY), _tokens(TINY), transformer_consts(TINY)
    base = transformer_token_loss(params, {"tokens": tokens}, consts, np)
    changed = tokens.copy()
    changed[:, 4] = (changed[:, 4] + 1) % TINY.vocab
    after = transformer_token_loss(params, {"tokens": changed}, consts, np)
    np.testing.assert_array_equal(after[:, :3], base[:, :3])  # targets 1..3 see inputs 0..2 only
    assert np.all(after[:, 3] != base[:, 3])  # target 4 itself changed
    short = transformer_token_loss(params, {"tokens": tokens[:, :4]}, consts, np)
    np.testing.assert_allclose(short, base[:, :3], rtol=1e-13)
    pats = attention_patterns(params, tokens[:, :-1], consts, np)
    assert len(pats) == 2 and pats[0].shape == (4, 2, 6, 6)
    np.testing.assert_allclose(pats[1].sum(axis=-1), 1.0, rtol=1e-13)
    assert np.all(np.triu(pats[0][0, 0], 1) == 0.0)
    with pytest.raises(ValueError, match="context is 6"):
        transformer_token_loss(params, {"tokens": np.zeros((2, 9), dtype=np.int64)}, consts, np)


@pytest.mark.parametrize("name", ["attn-only", "mlp-gelu-ln"])
def test_gradients_match_central_differences(name, jax_x64):
    """jax.grad and torch autograd of the mean loss agree with each other to 1e-10 and with
    float64 central differences (h = 1e-5: truncation ~h² f''' and rounding ~1e-16/h, both
    far below the 1e-6 relative tolerance) on a few coordinates of several parameters."""
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xt
    import jax
    import jax.numpy as jnp

    config = CONFIGS[name]
    params, tokens, consts = _params(config), _tokens(config), transformer_consts(config)

    def f_np(p):
        return float(np.mean(transformer_token_loss(p, {"tokens": tokens}, consts, np)))

    with jax_x64.enable_x64(True):
        gj = jax.grad(lambda p: jnp.mean(transformer_token_loss(p, {"tokens": jnp.asarray(tokens)},
                                                                 {k: jnp.asarray(v) for k, v in consts.items()}, jnp))
                      )({k: jnp.asarray(v) for k, v in params.items()})
        gj = {k: np.asarray(v) for k, v in gj.items()}
    pt = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    xt.mean(transformer_token_loss(pt, {"tokens": torch.tensor(tokens)},
                                   {k: torch.tensor(v) for k, v in consts.items()}, xt)).backward()
    gt = {k: v.grad.numpy() for k, v in pt.items()}
    for k in params:
        np.testing.assert_allclose(gt[k], gj[k], rtol=1e-9, atol=1e-12, err_msg=k)
    rng = np.random.default_rng(3)
    h = 1e-5
    names = [n for n in params if n in ("embed", "pos_embed", "unembed") or n.endswith(("W_Q", "W_O", "W_in", ".w"))]
    for k in names:
        for _ in range(2):
            idx = tuple(int(rng.integers(0, s)) for s in params[k].shape)
            up = {**params, k: params[k].copy()}
            dn = {**params, k: params[k].copy()}
            up[k][idx] += h
            dn[k][idx] -= h
            fd = (f_np(up) - f_np(dn)) / (2 * h)
            assert abs(fd - gj[k][idx]) <= 1e-6 * max(1.0, abs(fd)), (k, idx, fd, gj[k][idx])


def test_config_and_factory_validation():
    with pytest.raises(ValueError, match="`d_model` must be a positive integer"):
        TransformerConfig(vocab=5, context=6, d_model=0, n_heads=1, d_head=2, n_layers=1)
    with pytest.raises(ValueError, match="`activation` must be one of"):
        TransformerConfig(vocab=5, context=6, d_model=4, n_heads=1, d_head=2, n_layers=1, mlp=True, activation="tanh")
    with pytest.raises(ValueError, match="`vocab` must be at least 2"):
        TransformerConfig(vocab=1, context=6, d_model=4, n_heads=1, d_head=2, n_layers=1)
    with pytest.raises(ValueError, match="missing"):
        transformer_model(TINY, {"embed": np.zeros((5, 8))})
    with pytest.raises(ValueError, match="`task.vocab`"):
        transformer_model(TINY, task=InductionTask(vocab=6, seq_len=7, span=(2, 2)))
    assert TransformerConfig.from_dict(CONFIGS["mlp-gelu-ln"].to_dict()) == CONFIGS["mlp-gelu-ln"]
    shapes = param_shapes(CONFIGS["mlp-gelu-ln"])
    assert shapes["layer1.attn.W_Q"] == (2, 8, 4) and shapes["layer1.attn.W_O"] == (2, 4, 8)
    assert shapes["layer0.mlp.W_in"] == (8, 12) and shapes["unembed"] == (8, 5)
    assert list(shapes)[0] == "embed" and list(shapes)[-1] == "unembed"
    default = TransformerConfig(vocab=32, context=32, d_model=64, n_heads=4, d_head=16, n_layers=2)
    assert default.n_params == 38912 <= 100_000
    model = transformer_model(TINY, seed=3)
    assert model.name == "transformer" and model.tokens == "mean" and model.dim == TINY.n_params
    np.testing.assert_array_equal(model.centre["embed"], init_params(TINY, 3)["embed"])
    assert all(v.dtype == np.float64 for v in model.consts.values())


# --------------------------------------------------------------------------- the task


def test_task_labels_hand_checked_case():
    """seed 1, vocab 8, 14 tokens, spans of 3..4: row 0 has the span (7, 5, 4) at 2..4 and
    its repeat at 8..10; the copies at 9 and 10 come from 3 and 4."""
    data = InductionTask(vocab=8, seq_len=14, span=(3, 4)).sample(3, 1)
    assert data.tokens.dtype == data.labels.dtype == data.source.dtype == np.int64
    np.testing.assert_array_equal(data.tokens[0], [2, 5, 7, 5, 4, 7, 6, 0, 7, 5, 4, 7, 6, 0])
    S, B, F, R, I = (LABEL_CODES[k] for k in ("start", "bigram", "first_occurrence", "repeat_start", "induction"))
    np.testing.assert_array_equal(data.labels[0], [S, B, F, F, F, B, B, B, R, I, I, B, B, B])
    np.testing.assert_array_equal(data.source[0], [-1] * 9 + [3, 4] + [-1] * 3)


def test_task_structure_and_bigram_statistics():
    task = InductionTask(vocab=6, seq_len=25, span=(3, 6), min_gap=2, sharpness=2.0, task_seed=4)
    data = task.sample(4000, 7)
    tok, lab, src = data
    assert tok.min() >= 0 and tok.max() < 6
    assert np.all(lab[:, 0] == LABEL_CODES["start"]) and np.all((lab == LABEL_CODES["repeat_start"]).sum(1) == 1)
    n_first = (lab == LABEL_CODES["first_occurrence"]).sum(1)
    n_ind = (lab == LABEL_CODES["induction"]).sum(1)
    np.testing.assert_array_equal(n_ind, n_first - 1)
    assert set(np.unique(n_first)) == {3, 4, 5, 6}
    rows, cols = np.nonzero(lab == LABEL_CODES["induction"])
    np.testing.assert_array_equal(tok[rows, cols], tok[rows, src[rows, cols]])  # the copy
    np.testing.assert_array_equal(tok[rows, cols - 1], tok[rows, src[rows, cols] - 1])  # its cue
    assert np.all(src[lab != LABEL_CODES["induction"]] == -1)
    # repeat starts at least min_gap after the first span ends
    first_end = np.array([np.nonzero(r == LABEL_CODES["first_occurrence"])[0].max() for r in lab])
    assert np.all(np.argmax(lab == LABEL_CODES["repeat_start"], axis=1) >= first_end + 1 + 2)
    # bigram positions follow P from their predecessor: frequencies within 4 standard errors
    rows, cols = np.nonzero(lab == LABEL_CODES["bigram"])
    prev, nxt = tok[rows, cols - 1], tok[rows, cols]
    for v in range(6):
        sel = prev == v
        freq = np.bincount(nxt[sel], minlength=6) / sel.sum()
        se = np.sqrt(task.transition[v] * (1 - task.transition[v]) / sel.sum())
        assert np.all(np.abs(freq - task.transition[v]) <= 4 * se + 1e-12), v
    # seeded
    np.testing.assert_array_equal(task.sample(10, 3).tokens, task.sample(10, 3).tokens)
    with pytest.raises(ValueError, match="`seq_len` = 10 is too short"):
        InductionTask(vocab=6, seq_len=10, span=(3, 5))


# --------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_writes_deterministic_checkpoints(tmp_path, one_thread):
    pytest.importorskip("torch")
    from pplpatterning.models.transformer.train import log_spaced_steps, loss_by_label, train

    config = TransformerConfig(vocab=8, context=12, d_model=16, n_heads=2, d_head=8, n_layers=2)
    data = InductionTask(vocab=8, seq_len=13, span=(3, 5)).sample(256, 0)
    steps = log_spaced_steps(40, 6)
    assert steps[0] == 0 and steps[-1] == 40 and len(steps) >= 5
    for count in (2, 3, 7):  # the last step is always kept (count=2 once gave [0, 1])
        got = log_spaced_steps(3000, count)
        assert got[0] == 0 and got[-1] == 3000 and len(got) == count and got == sorted(set(got))
    a = train(config, data.tokens, steps=40, lr=1e-2, batch_size=32, seed=5, checkpoint_every=steps,
              out_dir=tmp_path / "a")
    b = train(config, data.tokens, steps=40, lr=1e-2, batch_size=32, seed=5, checkpoint_every=steps)
    c = train(config, data.tokens, steps=5, lr=1e-2, batch_size=32, seed=6, checkpoint_every=5)
    assert [k.step for k in a] == steps
    loaded = load_checkpoints(tmp_path / "a")
    assert [k.step for k in loaded] == steps
    for x, y, z in zip(a, b, loaded):
        for name in param_shapes(config):
            np.testing.assert_array_equal(x.params[name], y.params[name])
            np.testing.assert_array_equal(x.params[name], z.params[name])
    np.testing.assert_array_equal(a[0].params["embed"], init_params(config, 5)["embed"].astype(np.float32))
    assert not np.array_equal(c[0].params["embed"], a[0].params["embed"])
    first = loss_by_label(config, a[0].params, data.tokens, data.labels)
    last = loss_by_label(config, a[-1].params, data.tokens, data.labels)
    assert last["all"] < first["all"] - 0.3 and last["bigram"] < first["bigram"]
    with pytest.raises(TypeError, match="`tokens` must be an integer array"):
        train(config, data.tokens.astype(float), steps=1)
    with pytest.raises(ValueError, match="`checkpoint_every` lists step 99"):
        train(config, data.tokens, steps=3, checkpoint_every=[0, 99])


def test_command_line_trains_and_saves_a_run(tmp_path, capsys, one_thread):
    pytest.importorskip("torch")
    from pplpatterning.models.transformer.train import load_run, main

    out = tmp_path / "run"
    assert main(["--out", str(out), "--vocab", "6", "--context", "10", "--d-model", "8", "--n-heads", "2",
                 "--d-head", "4", "--span-min", "2", "--span-max", "4", "--n-train", "64", "--n-eval", "16",
                 "--steps", "30", "--checkpoints", "12", "--batch-size", "8"]) == 0
    config, ckpts, meta = load_run(out)
    assert config.vocab == 6 and len(ckpts) == 12 and ckpts[0].step == 0 and ckpts[-1].step == 30
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["checkpoints"]) == len(ckpts) and "induction" in metrics["checkpoints"][-1]["loss"]
    assert meta["n_params"] == config.n_params
    assert "trained in" in capsys.readouterr().out


def test_import_needs_neither_torch_nor_jax():
    code = ("import sys, pplpatterning.models.transformer as t; "
            "print(int('torch' in sys.modules), int('jax' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "0"]


# --------------------------------------------------------------------------- components and head scores


def test_component_masks_select_exactly_the_head_slices():
    config = CONFIGS["mlp-gelu-ln"]
    comps = transformer_components(config)
    assert list(comps) == ["embed", "layer 0 head 0", "layer 0 head 1", "layer 0 mlp", "layer 1 head 0",
                           "layer 1 head 1", "layer 1 mlp", "unembed"]
    shapes = param_shapes(config)
    for layer in range(2):
        for h in range(2):
            masks = comps[f"layer {layer} head {h}"]
            assert set(masks) == {f"layer{layer}.attn.W_{w}" for w in "QKVO"}
            for name, m in masks.items():
                assert m.dtype == np.bool_ and m.shape == shapes[name]
                expected = np.zeros(shapes[name], dtype=bool)
                expected[h] = True
                np.testing.assert_array_equal(m, expected)
        np.testing.assert_array_equal(comps[f"layer {layer} head 0"][f"layer{layer}.attn.W_O"]
                                      | comps[f"layer {layer} head 1"][f"layer{layer}.attn.W_O"], True)
    assert set(comps["layer 0 mlp"]) == {"layer0.mlp.W_in", "layer0.mlp.b_in", "layer0.mlp.W_out", "layer0.mlp.b_out"}
    assert set(comps["embed"]) == {"embed", "pos_embed"}
    only = transformer_components(TINY, heads=False, embed=False)
    assert list(only) == ["unembed"]  # attention-only: no MLP components
    # the masks are the core's component format
    from pplpatterning.spec.masks import resolve_component

    whole, partial = resolve_component(shapes, comps["layer 1 head 0"])
    assert whole == () and set(partial) == {f"layer1.attn.W_{w}" for w in "QKVO"}
    model = transformer_model(config, _params(config))
    post = pp.GibbsPosterior(model, model.generate(8), sampled=comps["layer 1 head 0"])
    assert post.sampled_dim == 4 * config.d_model * config.d_head


def test_head_scores_on_constructed_patterns():
    """A previous-token head scores 1 / ~0, a head attending to the copy source ~0 / 1,
    and end to end a model with W_Q = 0 (uniform causal attention) gives exactly
    mean_{q≥1} 1/(q+1) and mean over induction targets t of 1/t."""
    data = InductionTask(vocab=8, seq_len=14, span=(3, 4)).sample(50, 2)
    n, L = data.tokens.shape
    T = L - 1
    prev_head = np.zeros((n, T, T))
    prev_head[:, 0, 0] = 1.0
    prev_head[:, np.arange(1, T), np.arange(T - 1)] = 1.0
    ind_head = np.zeros((n, T, T))
    ind_head[:, :, 0] = 1.0
    rows, t = np.nonzero(data.labels == LABEL_CODES["induction"])
    ind_head[rows, t - 1, 0] = 0.0
    ind_head[rows, t - 1, data.source[rows, t]] = 1.0
    pats = [np.stack([prev_head, ind_head], axis=1)]
    s = scores_from_patterns(pats, data.labels, data.source)
    np.testing.assert_allclose(s["previous_token"][0], [1.0, np.mean(ind_head[:, np.arange(1, T), np.arange(T - 1)])])
    assert s["induction"][0, 1] == 1.0 and s["induction"][0, 0] == np.mean(data.source[rows, t] == t - 1)
    assert s["n_induction"] == rows.size > 0

    params = init_params(TINY, 0)
    params = {k: (np.zeros_like(v) if k.endswith("W_Q") else v) for k, v in params.items()}
    data = InductionTask(vocab=5, seq_len=7, span=(2, 2)).sample(40, 3)
    got = head_scores(TINY, params, data.tokens, data.labels, data.source, batch_size=16)
    rows, t = np.nonzero(data.labels == LABEL_CODES["induction"])
    np.testing.assert_allclose(got["previous_token"], np.mean(1.0 / np.arange(2, 7)), rtol=1e-12)
    np.testing.assert_allclose(got["induction"], np.mean(1.0 / t), rtol=1e-12)
    assert got["names"][1][0] == "layer 1 head 0"
    # without the task's sources: the most recent earlier occurrence of the current token
    generic = head_scores(TINY, params, data.tokens, data.labels)
    assert generic["n_induction"] == rows.size


# --------------------------------------------------------------------------- torch module


def test_torch_module_runs_the_same_forward():
    torch = pytest.importorskip("torch")
    pytest.importorskip("pyro")
    from pplpatterning.models.transformer.architecture import logits
    from pplpatterning.models.transformer.torch_module import (
        TransformerModule, module_model, next_token_data, sequence_loss,
    )

    config = CONFIGS["mlp-gelu-ln"]
    params, tokens = _params(config), _tokens(config, n=6)
    net = TransformerModule(config, params)
    # the same dotted names (nn.Module lists a module's own parameters before its children's)
    assert sorted(k for k, _ in net.named_parameters()) == sorted(param_shapes(config))
    ref = logits(params, tokens[:, :-1], transformer_consts(config), np)
    np.testing.assert_allclose(net(torch.tensor(tokens[:, :-1])).detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    ref_loss = transformer_token_loss(params, {"tokens": tokens}, transformer_consts(config), np)
    with torch.no_grad():
        assert abs(float(sequence_loss(net, torch.tensor(tokens))) - ref_loss.mean()) < 1e-12
    for k, v in net.state_params().items():
        np.testing.assert_array_equal(v, params[k])
    # model_from_module on it: the same per-sample loss as the xp Model
    post = pp.GibbsPosterior(module_model(net), next_token_data(tokens), n_beta=6.0)
    np.testing.assert_allclose(post.loss_at_centre_per_sample, ref_loss.mean(axis=1), rtol=1e-12)
    with pytest.raises(TypeError, match="integer tensor"):
        net(torch.zeros((2, 3)))


# --------------------------------------------------------------------------- sampling

SEEN: list[str] = []


def spy_loss(params, batch, consts, xp):
    """transformer_token_loss, recording the dtype its token data arrive in."""
    SEEN.append(str(batch["tokens"].dtype))
    return transformer_token_loss(params, batch, consts, xp)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_short_sgld_run_on_both_backends_keeps_tokens_integer(backend):
    """One layer and no burn-in: the NumPyro run then compiles one sampling program (~10 s
    cold on the CI machine, ~3 s from the persistent cache)."""
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    config = CONFIGS["mlp-relu"]
    base = transformer_model(config, _params(config))
    model = pp.Model("transformer_spy", spy_loss, base.param_shapes, base.centre, consts=base.consts, tokens="mean")
    data = base.generate(32, seed=1)
    assert data["tokens"].dtype == np.int64
    SEEN.clear()
    post = pp.GibbsPosterior(model, data, gamma=100.0)
    assert post.data["tokens"].dtype == np.int64
    tr = pp.sample(post, backend=backend, sampler="sgld", num_chains=2, num_draws=30, num_burnin=0,
                   step_size=1e-4, batch_size=16, seed=0, progress_bar=False, keep_params=False)
    est = pp.llc(tr)
    assert np.isfinite(est.llc) and np.isfinite(est.mcse)
    assert SEEN and all("int" in d for d in SEEN), SEEN
    assert any(("torch" in d) if backend == "pyro" else (d == "int64") for d in SEEN)
