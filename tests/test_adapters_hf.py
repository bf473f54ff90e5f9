"""Hugging Face causal LMs on the Pyro backend (backends/pyro/hf.py, issue 12 items 2-3).

Tiny models built from configs (never downloaded): the potential equals the next-token NLL
computed from the network's own logits; the tied GPT-2 embedding moves the unembedding
too; the head masks of GPT-2, GPT-NeoX and Llama (grouped-query) select exactly the
weights through which that head reads and writes, checked on the model's own forward
pass; and λ̂ of the same GPT-2 weights agrees between the HF model (Pyro) and a plain JAX
forward (NumPyro) within 4 combined MCSE."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("pplpatterning.backends.pyro")

import pplpatterning as pp  # noqa: E402
from pplpatterning.backends.pyro import hf_components, model_from_hf  # noqa: E402

transformers.logging.set_verbosity_error()  # tiny vocabularies: the default bos/eos ids are out of range

V, T, N = 16, 8, 64  # vocabulary, sequence length, sequences (the λ̂ comparison)


def _gpt2(d=16, layers=1, vocab=32, positions=T, init=0.02, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=d, n_layer=layers, n_head=2,
                                  n_inner=2 * d, initializer_range=init)
    return transformers.GPT2LMHeadModel(cfg)


def _ids(n, t, vocab, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=(n, t))


def _direct_token_nll(hf_model, params, ids, **kw):
    """-log softmax(logits)[next id] from a float64 copy of the network loaded with ``params``."""
    net = _float64_copy(hf_model, params)
    with torch.no_grad():
        logits = net(input_ids=torch.as_tensor(ids), use_cache=False, **kw).logits
        logp = torch.log_softmax(logits[:, :-1], -1)
        return -torch.gather(logp, -1, torch.as_tensor(ids)[:, 1:, None])[..., 0].numpy()


def _float64_copy(hf_model, params):
    import copy

    net = copy.deepcopy(hf_model).double().eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.as_tensor(np.array(params[name])))
    return net


def _perturbed(centre, scale=0.05, seed=1):
    rng = np.random.default_rng(seed)
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in centre.items()}


# ------------------------------------------------------------------ the loss
def test_gpt2_potential_is_the_next_token_nll_and_the_model_is_untouched():
    net = _gpt2()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    impl = net.config._attn_implementation
    ids = _ids(12, T, 32)
    model = model_from_hf(net, example_data={"input_ids": ids})
    assert model.tokens == "mean" and list(model.param_shapes) == [n for n, _ in net.named_parameters()]
    assert "lm_head.weight" not in model.param_shapes  # tied to transformer.wte.weight: listed once
    post = pp.GibbsPosterior(model, {"input_ids": ids}, n_beta=30.0, gamma=7.0)
    assert post.data["input_ids"].dtype == np.int64
    w = _perturbed(post.centre)
    nll = _direct_token_nll(net, w, ids)
    per_token = model.token_loss(w, {"input_ids": ids}, {}, np)
    assert per_token.shape == (12, T - 1) and per_token.dtype == np.float64
    np.testing.assert_allclose(per_token, nll, rtol=1e-11, atol=1e-12)
    sq = sum(float(((w[k] - post.centre[k]) ** 2).sum()) for k in w)
    expected = 30.0 * nll.mean() + 0.5 * 7.0 * sq
    assert post.potential(w) == pytest.approx(expected, rel=1e-10)
    # the Pyro backend's own potential (vmapped functional_call over chains) and its gradient
    from pplpatterning.backends.pyro import potential_and_grad

    value, grad = potential_and_grad(post, w, route="direct")
    assert value == pytest.approx(expected, rel=1e-10)
    assert grad["transformer.wte.weight"].shape == (32, 16)
    # the user's model is unchanged: float32, same values, same attention implementation
    assert next(net.parameters()).dtype == torch.float32 and net.config._attn_implementation == impl
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert net.lm_head.weight is net.transformer.wte.weight


def test_tied_unembedding_moves_with_the_sampled_embedding():
    net = _gpt2()
    model = model_from_hf(net)
    ids = _ids(6, T, 32)
    w = dict(model.centre)
    w["transformer.wte.weight"] = w["transformer.wte.weight"] + 0.3 * np.random.default_rng(2).standard_normal((32, 16))
    got = model.token_loss(w, {"input_ids": ids}, {}, np)
    np.testing.assert_allclose(got, _direct_token_nll(net, w, ids), rtol=1e-11, atol=1e-12)
    # ... and the difference is the unembedding's: the same forward with the old lm_head differs
    untied = _float64_copy(net, w)
    untied.lm_head.weight = torch.nn.Parameter(torch.as_tensor(np.array(model.centre["transformer.wte.weight"])))
    with torch.no_grad():
        logits = untied(input_ids=torch.as_tensor(ids), use_cache=False).logits
    nll_untied = -torch.gather(torch.log_softmax(logits[:, :-1], -1), -1, torch.as_tensor(ids)[:, 1:, None])[..., 0]
    assert np.abs(got - nll_untied.numpy()).max() > 1e-3
    # the gradient of the tied parameter is the sum of both uses: check against autograd on the network
    post = pp.GibbsPosterior(model, {"input_ids": ids}, n_beta=10.0, gamma=0.0)
    from pplpatterning.backends.pyro import potential_and_grad

    _, grad = potential_and_grad(post, w, route="direct")
    ref = _float64_copy(net, w)
    out = ref(input_ids=torch.as_tensor(ids), use_cache=False).logits
    loss = -torch.gather(torch.log_softmax(out[:, :-1], -1), -1, torch.as_tensor(ids)[:, 1:, None])[..., 0].mean()
    (10.0 * loss).backward()
    np.testing.assert_allclose(grad["transformer.wte.weight"], ref.transformer.wte.weight.grad.numpy(),
                               rtol=1e-9, atol=1e-12)


def test_padding_mask_zeroes_padded_targets():
    net = _gpt2()
    ids = _ids(5, T, 32)
    mask = np.ones_like(ids)
    mask[:2, 5:] = 0  # right padding
    model = model_from_hf(net, attention_mask_key="attention_mask")
    got = model.token_loss(dict(model.centre), {"input_ids": ids, "attention_mask": mask}, {}, np)
    ref = _direct_token_nll(net, dict(model.centre), ids, attention_mask=torch.as_tensor(mask)) * mask[:, 1:]
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-13)
    assert (got[:2, 4:] == 0).all() and (got[2:] > 0).all()


def test_bad_input_is_named():
    net = _gpt2()
    with pytest.raises(TypeError, match="Hugging Face transformers model"):
        model_from_hf(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="no language-model head"):
        model_from_hf(net.transformer)  # the bare GPT2Model
    with pytest.raises(ValueError, match="`tokens` must be 'mean' or 'sum'"):
        model_from_hf(net, tokens="max")
    model = model_from_hf(net)
    ids = _ids(8, T, 32)
    with pytest.raises(ValueError, match=r"must be integers \(int64\).*never cast to float"):
        pp.GibbsPosterior(model, {"input_ids": ids.astype(np.float64)})
    with pytest.raises(ValueError, match=r"must lie in \[0, 32\)"):
        model_from_hf(net, example_data={"input_ids": ids + 32})
    with pytest.raises(ValueError, match=r"T >= 2"):
        model_from_hf(net, example_data={"input_ids": ids[:, :1]})
    with pytest.raises(ValueError, match="no entry 'input_ids'"):
        pp.GibbsPosterior(model, {"tokens": ids})
    with pytest.raises(ValueError, match=r"hf_components: .*no attention module"):
        hf_components(_NoAttention())


class _NoAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.config = object()
        self.head = torch.nn.Linear(2, 2)

    def get_output_embeddings(self):
        return self.head


# ------------------------------------------------------------------ components
ARCHS = {  # name: (tiny model, attention module path, its output projection)
    "gpt2": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=32, n_positions=8, n_embd=16, n_layer=2, n_head=2, n_inner=32)),
        "transformer.h.{}.attn", "c_proj"),
    "neox": (lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=8)), "gpt_neox.layers.{}.attention", "dense"),
    "llama": (lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=32, max_position_embeddings=8)), "model.layers.{}.self_attn", "o_proj"),
}


def _run(net, out_proj, ids, params=None, zero=None):
    """(z, logits): z = the output projection's input (B, T, H·hd), where every architecture's
    modeling code puts head h at z[..., h·hd:(h+1)·hd]; ``zero`` = a slice of z set to 0."""
    store = {}

    def pre(module, args):
        store["z"] = args[0].detach().clone()
        if zero is not None:
            z = args[0].clone()
            z[..., zero] = 0
            return (z,)
        return None

    handle = out_proj.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            logits = torch.func.functional_call(net, params or {}, (), {"input_ids": ids, "use_cache": False}).logits
    finally:
        handle.remove()
    return store["z"], logits


def _moved(params, comp, inside, seed):
    """``params`` with noise on the entries ``comp`` selects (``inside``) or on all the other
    entries of the same parameters (not ``inside``)."""
    rng = np.random.default_rng(seed)
    out = dict(params)
    for name, m in comp.items():
        out[name] = params[name] + torch.as_tensor(rng.standard_normal(m.shape) * (m if inside else ~m))
    return out


def _union(comps):
    """The union of masks, asserting they are pairwise disjoint."""
    union: dict[str, np.ndarray] = {}
    for comp in comps:
        for name, m in comp.items():
            seen = union.get(name, np.zeros_like(m))
            assert not (seen & m).any(), f"{name}: entries in two components"
            union[name] = seen | m
    return union


@pytest.mark.parametrize("kind", list(ARCHS))
def test_head_masks_select_exactly_that_heads_weights(kind):
    torch.manual_seed(0)
    build, attn_path, out_attr = ARCHS[kind]
    net = build().double().eval()
    net.set_attn_implementation("eager")
    H, d = net.config.num_attention_heads, net.config.hidden_size
    hd = d // H
    K = getattr(net.config, "num_key_value_heads", None) or H
    sep = hf_components(net, kv_heads="separate")
    shared = hf_components(net)  # default: a head includes its (shared) key/value head
    params = dict(net.named_parameters())
    modules = dict(net.named_modules())
    ids = torch.as_tensor(_ids(3, 8, 32))
    assert sorted({int(c.split()[1]) for c in sep if c.startswith("layer")}) == list(range(net.config.num_hidden_layers))
    for layer in range(net.config.num_hidden_layers):
        prefix = attn_path.format(layer) + "."
        out_proj = modules[prefix + out_attr]
        heads = [sep[f"layer {layer} head {h}"] for h in range(H)]
        kvs = [sep[f"layer {layer} kv head {g}"] for g in range(K)] if K < H else []
        # disjoint, and together every Q/K/V/output weight and Q/K/V bias (the output bias is no head's)
        union = _union(heads + kvs)
        assert set(union) == {n for n in params if n.startswith(prefix)} - {prefix + out_attr + ".bias"}
        assert all(m.all() for m in union.values())
        z0, logits0 = _run(net, out_proj, ids)
        for h in range(H):
            block = slice(h * hd, (h + 1) * hd)
            rest = np.repeat(np.arange(H) != h, hd)
            reads = {n: m for n, m in heads[h].items() if not n.startswith(prefix + out_attr)}
            writes = {n: m for n, m in heads[h].items() if n.startswith(prefix + out_attr)}
            # the Q/K/V entries of head h move head h's output and no other head's ...
            z, _ = _run(net, out_proj, ids, _moved(params, reads, True, seed=h))
            assert (z[..., block] - z0[..., block]).abs().max() > 1e-3
            assert torch.equal(z[..., rest], z0[..., rest])
            # ... and the other entries of those parameters never move head h
            z, _ = _run(net, out_proj, ids, _moved(params, reads, False, seed=h))
            assert torch.equal(z[..., block], z0[..., block])
            # the output-projection entries read head h only: with its block zeroed they do nothing
            moved = _moved(params, writes, True, seed=10 + h)
            _, a = _run(net, out_proj, ids, zero=block)
            _, b = _run(net, out_proj, ids, moved, zero=block)
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
            _, c = _run(net, out_proj, ids, moved)
            assert (c - logits0).abs().max() > 1e-3
            # the default head h = its own entries plus its key/value head g = h // (H/K)
            expect = _union([heads[h], kvs[h // (H // K)]]) if kvs else heads[h]
            got = shared[f"layer {layer} head {h}"]
            assert set(got) == set(expect) and all(np.array_equal(got[n], expect[n]) for n in got)
        for g, kv in enumerate(kvs):  # a key/value head moves exactly the query heads of its group
            z, _ = _run(net, out_proj, ids, _moved(params, kv, True, seed=20 + g))
            moved_heads = [h for h in range(H) if not torch.equal(z[..., h * hd:(h + 1) * hd],
                                                                  z0[..., h * hd:(h + 1) * hd])]
            assert moved_heads == [h for h in range(H) if h // (H // K) == g]
            z, _ = _run(net, out_proj, ids, _moved(params, kv, False, seed=20 + g))
            assert all(torch.equal(z[..., h * hd:(h + 1) * hd], z0[..., h * hd:(h + 1) * hd])
                       for h in range(H) if h // (H // K) == g)
        block_prefix = prefix.rsplit(".", 2)[0] + ".mlp."
        assert set(sep[f"layer {layer} mlp"]) == {n for n in params if n.startswith(block_prefix)}
    assert set(sep["unembed"]) == {n for n, p in params.items() if p is net.get_output_embeddings().weight}


def test_gpt2_embed_and_unembed_share_the_tied_weight():
    comps = hf_components(_gpt2(layers=2))
    assert set(comps["embed"]) == {"transformer.wte.weight", "transformer.wpe.weight"}
    assert set(comps["unembed"]) == {"transformer.wte.weight"}
    assert list(comps)[:3] == ["layer 0 head 0", "layer 0 head 1", "layer 0 mlp"]
    # the masks are the component format of GibbsPosterior(sampled=) / component_loss
    model = model_from_hf(_gpt2(layers=2))
    from pplpatterning.spec.masks import resolve_component

    for c in comps.values():
        resolve_component(model.param_shapes, c)



def test_a_head_masked_gpt2_posterior_moves_only_that_heads_weights():
    """GibbsPosterior(sampled=hf_components(...)["layer 0 head 1"]) on the Pyro backend: the
    head's entries move in every chain and every other entry is bit-identical to w* in every
    draw (Σ|w - w*| over the frozen entries, recorded as an observable, is exactly 0)."""
    from test_masks import _FrozenDrift

    net = _gpt2()
    model = model_from_hf(net)
    head = hf_components(net)["layer 0 head 1"]
    post = pp.GibbsPosterior(model, {"input_ids": _ids(16, T, 32)}, gamma=100.0, n_beta=10.0, sampled=head)
    trace = pp.sample(post, backend="pyro", sampler="sgld", step_size=1e-4, batch_size=8, num_chains=2,
                      num_draws=5, num_burnin=0, seed=0, progress_bar=False,
                      observables={"drift": _FrozenDrift(post)})
    assert np.all(trace["observables"]["drift"].values == 0.0)
    for name, mask in head.items():
        sampled = trace["posterior"][name].values  # (chain, draw, k): the head's entries only
        assert sampled.shape == (2, 5, int(mask.sum()))
        assert np.all(np.std(sampled, axis=1) > 0)


# ------------------------------------------------------------------ λ̂ across frameworks
def _gpt2_jax_nll(p, batch):
    """Per-sequence mean next-token NLL of a 1-layer GPT-2, written in JAX from the paper's
    recipe (Radford et al. 2019): pre-LN attention + GELU(tanh) MLP, tied unembedding."""
    import jax
    import jax.numpy as jnp

    ids = batch["input_ids"]
    B, L = ids.shape
    d = p["transformer.wte.weight"].shape[1]
    H, hd = 2, d // 2

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + 1e-5) * p[name + ".weight"] + p[name + ".bias"]

    h = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][:L]
    pre = "transformer.h.0."
    qkv = ln(h, pre + "ln_1") @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]
    q, k, v = (x.reshape(B, L, H, hd).transpose(0, 2, 1, 3) for x in jnp.split(qkv, 3, axis=-1))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
    s = jnp.where(jnp.tril(jnp.ones((L, L), dtype=bool)), s, -jnp.inf)
    z = (jax.nn.softmax(s, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(B, L, d)
    h = h + z @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
    m = jax.nn.gelu(ln(h, pre + "ln_2") @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"], approximate=True)
    h = h + m @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
    logits = ln(h, "transformer.ln_f") @ p["transformer.wte.weight"].T
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0].mean(-1)


def _teacher_sequences(net, n, seed=0):
    """n sequences of length T drawn from the network itself (its w* is the true parameter):
    next token = argmax(log p + Gumbel noise), a draw from softmax(logits)."""
    rng = np.random.default_rng(seed)
    ids = torch.as_tensor(rng.integers(0, V, size=(n, 1)))
    with torch.no_grad():
        for _ in range(T - 1):
            logp = torch.log_softmax(net(input_ids=ids, use_cache=False).logits[:, -1].double(), -1)
            gumbel = torch.as_tensor(-np.log(-np.log(rng.uniform(size=(n, V)))))
            ids = torch.cat([ids, torch.argmax(logp + gumbel, -1, keepdim=True)], dim=1)
    return ids.numpy()


def test_llc_of_the_same_gpt2_agrees_between_hf_on_pyro_and_jax_on_numpyro():
    pytest.importorskip("jax")
    from pplpatterning.backends.numpyro import model_from_jax

    net = _gpt2(d=8, vocab=V, init=0.2, seed=3).eval()  # eval: the teacher samples without dropout
    ids = _teacher_sequences(net, N)
    hf_model = model_from_hf(net, name="gpt2-hf")
    jax_model = model_from_jax(_gpt2_jax_nll, dict(hf_model.centre), name="gpt2-jax")
    assert dict(jax_model.param_shapes) == dict(hf_model.param_shapes)
    kw = dict(n_beta=float(N * (T - 1)) / math.log(N * (T - 1)), gamma=100.0)
    post_hf = pp.GibbsPosterior(hf_model, {"input_ids": ids}, **kw)
    post_jax = pp.GibbsPosterior(jax_model, {"input_ids": ids}, **kw)
    # the two are the same posterior: equal potentials away from the centre
    w = _perturbed(post_hf.centre, scale=0.02)
    assert post_jax.potential(w) == pytest.approx(post_hf.potential(w), rel=1e-10)
    np.testing.assert_allclose(post_jax.loss_at_centre_per_sample, post_hf.loss_at_centre_per_sample, rtol=1e-11)
    run = dict(sampler="mala", num_chains=4, num_draws=300, num_burnin=100, seed=0, progress_bar=False)
    a = pp.llc(pp.sample(post_hf, backend="pyro", **run))
    b = pp.llc(pp.sample(post_jax, backend="numpyro", **run))
    se = math.hypot(a.mcse, b.mcse)
    assert a.mcse < 0.05 * a.llc and b.mcse < 0.05 * b.llc, (a, b)  # a real test: λ̂ resolved to a few per cent
    assert abs(a.llc - b.llc) < 4 * se, (a, b)
