"""Hugging Face causal language models as pplpatterning Models (Pyro backend), and their
components (attention heads, MLPs, embeddings) as boolean masks.

    model = model_from_hf(hf_model)                        # e.g. a GPT2LMHeadModel
    post = GibbsPosterior(model, {"input_ids": ids}, n_beta=..., gamma=...)   # ids int64 (n, T)
    trace = pplpatterning.sample(post, backend="pyro", sampler="sgld", step_size=1e-5)
    heads = hf_components(hf_model)                        # {"layer 0 head 1": {param: bool mask}, ...}
    restricted = post.with_(sampled=heads["layer 0 head 1"])            # a head's refined LLC

The loss is the next-token negative log-likelihood, per token:

    l_{i,t}(w) = -log softmax(logits_w(ids_i)[t])[ids_{i,t+1}],   t = 0, ..., T-2,

a ``(batch, T-1)`` array; the Model has ``tokens="mean"`` (default), so the per-sample loss
is the mean over the T-1 predicted tokens and ``Model.token_loss`` gives the per-token
losses (per-token susceptibilities, ``Probes(per_token=True)``). The token ids stay
``int64`` end to end (the GibbsPosterior keeps integer data integer, the backend hands
them to the network as ``torch.int64``).

The network is handled as :func:`~.user.model_from_module` handles any module (it is the
same :class:`~.user.ModuleLoss` machinery): a private float64 deep copy in eval mode
(dropout off), gradients off, the user's model never modified; its ``named_parameters()``
are the parameters and their values the centre w*. In the copy the attention runs
``"eager"`` (a plain softmax(QKᵀ/√d)V in torch ops, which ``torch.func.vmap`` over chains
batches natively; SDPA would fall back to a slow per-chain loop) and the KV cache is off
(``use_cache=False``).

Tied weights (GPT-2 ties ``lm_head.weight`` to ``transformer.wte.weight``):
``named_parameters()`` lists the shared tensor once, under ``transformer.wte.weight``, so
it is one sampled parameter, and ``torch.func.functional_call`` (``tie_weights=True``)
substitutes the sampled value for every use of it: the embedding and the unembedding move
together, as in the network.

Padding: with ``attention_mask_key="attention_mask"`` the data entry of that name (0/1,
``(n, T)``) is passed to the network and the loss of predicting a padded position is 0, so
``tokens="mean"`` gives Σ_t m_{i,t+1} l_{i,t} / (T-1): every real token counts equally in
L_n (a token-level likelihood), whatever the length of its sequence.

Precision note: transformers computes rotary position embeddings (GPT-NeoX, Llama) in
float32 whatever the model's dtype; they are a fixed function of the positions (no
parameters), so the potential is still a deterministic float64 function of the weights.

This module imports nothing from ``transformers``: the model is recognised by its
structure (``config``, ``get_output_embeddings()``, the attention modules' projections).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from pplpatterning.spec.model import Model

from .user import ModuleLoss, private_copy

__all__ = ["HFCausalLMLoss", "model_from_hf", "hf_components", "token_nll"]


def token_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """l_{i,t} = -log softmax(logits[i, t])[ids[i, t+1]] for t < T-1, shape (batch, T-1);
    times ``mask[i, t+1]`` when a 0/1 padding mask is given (a padded target costs 0)."""
    logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
    nll = -torch.gather(logp, -1, ids[:, 1:, None])[..., 0]
    if mask is not None:
        nll = nll * mask[:, 1:].to(nll.dtype)
    return nll


class HFCausalLMLoss(ModuleLoss):
    """Per-token next-token NLL ``(batch, T-1)`` of a Hugging Face causal LM (see the module
    docstring): ``loss(params, batch, consts, xp)``, identity-hashed like every
    :class:`~.user.ModuleLoss`. ``module`` is the private float64 eval-mode copy."""

    def __init__(self, module: torch.nn.Module, name: str, input_key: str, attention_mask_key: str | None,
                 vocab_size: int):
        super().__init__(module, self._nll, input_key, None, name)
        self.attention_mask_key = attention_mask_key
        self.vocab_size = int(vocab_size)

    def _mask(self, batch):
        if self.attention_mask_key is None:
            return None
        if self.attention_mask_key not in batch:
            raise KeyError(f"Model {self.name!r}: the data have no entry {self.attention_mask_key!r} "
                           f"(attention_mask_key); they have {sorted(batch)}.")
        return batch[self.attention_mask_key]

    def _nll(self, logits, batch):
        return token_nll(logits, self._input(batch), self._mask(batch))

    def _outputs(self, params, batch):
        ids = self._input(batch)
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"Model {self.name!r}: the token ids `{self.input_key}` must be integers (int64), "
                            f"got {ids.dtype}; pass the ids as an integer array, never cast to float.")
        kwargs: dict[str, Any] = {"input_ids": ids, "use_cache": False}
        mask = self._mask(batch)
        if mask is not None:
            kwargs["attention_mask"] = mask
        return torch.func.functional_call(self.module, dict(params), (), kwargs).logits

    def _expected_shape(self, batch):
        ids = self._input(batch)
        return (ids.shape[0], ids.shape[1] - 1)

    def _shape_hint(self, shape):
        return ""

    def _check_batch(self, batch):
        ids = np.asarray(self._input(batch))
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Model {self.name!r}: the token ids `{self.input_key}` must be integers (int64), "
                            f"got dtype {ids.dtype}; pass the ids as an integer array, never cast to float.")
        if ids.ndim != 2 or ids.shape[1] < 2:
            raise ValueError(f"Model {self.name!r}: `{self.input_key}` must have shape (n, T) with T >= 2 "
                             f"(a sequence predicts its next tokens); got shape {ids.shape}.")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"Model {self.name!r}: token ids must lie in [0, {self.vocab_size}) (the vocabulary); "
                             f"got ids from {ids.min()} to {ids.max()}.")
        mask = self._mask(batch)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != ids.shape or not np.isin(mask, (0, 1)).all():
                raise ValueError(f"Model {self.name!r}: `{self.attention_mask_key}` must be a 0/1 array of the "
                                 f"ids' shape {ids.shape}; got shape {mask.shape}.")


def _check_causal_lm(hf_model: Any, what: str = "hf_model") -> None:
    if not isinstance(hf_model, torch.nn.Module) or not hasattr(hf_model, "config"):
        raise TypeError(f"`{what}` must be a Hugging Face transformers model (a torch.nn.Module with a `config`, "
                        f"e.g. GPT2LMHeadModel), got {type(hf_model).__name__}. For other torch networks use "
                        "model_from_module.")
    getter = getattr(hf_model, "get_output_embeddings", None)
    if getter is None or getter() is None:
        raise TypeError(f"`{what}` ({type(hf_model).__name__}) has no language-model head: pass the causal LM "
                        "class (…ForCausalLM / …LMHeadModel, e.g. GPT2LMHeadModel), not the bare base model.")


def model_from_hf(hf_model: torch.nn.Module, *, name: str | None = None, input_key: str = "input_ids",
                  attention_mask_key: str | None = None, tokens: str = "mean",
                  example_data: Mapping[str, Any] | None = None, description: str = "") -> Model:
    """A :class:`~pplpatterning.Model` of a Hugging Face causal LM's next-token loss.

    The per-token loss is l_{i,t}(w) = -log softmax(logits_w(ids_i)[t])[ids_{i,t+1}],
    shape (batch, T-1); the model's per-sample loss is its mean (``tokens="mean"``) or sum
    (``"sum"``) over t. Parameters: ``hf_model.named_parameters()`` (tied weights once),
    centre = their current values. Pyro backend only.

    Parameters
    ----------
    hf_model
        A transformers causal LM (``GPT2LMHeadModel``, ``GPTNeoXForCausalLM``,
        ``LlamaForCausalLM``, ...), float32/float64 on the CPU. Not modified: a private
        float64 eval-mode copy with eager attention is used.
    name
        Model name for traces. Default: the model's class name.
    input_key
        The data entry holding the token ids, an integer array (n, T), T >= 2.
    attention_mask_key
        Optional data entry with a 0/1 padding mask (n, T) passed as ``attention_mask``;
        padded targets cost 0 (see the module docstring).
    tokens
        ``"mean"`` (default) or ``"sum"`` over the T-1 predicted tokens.
    example_data
        Optional data: the loss is checked on its first rows now.
    """
    _check_causal_lm(hf_model)
    if not isinstance(input_key, str):
        raise TypeError(f"`input_key` must be a string, got {type(input_key).__name__}.")
    if attention_mask_key is not None and not isinstance(attention_mask_key, str):
        raise TypeError(f"`attention_mask_key` must be a string or None, got {type(attention_mask_key).__name__}.")
    if tokens not in ("mean", "sum"):
        raise ValueError(f"`tokens` must be 'mean' or 'sum', got {tokens!r}.")
    name = str(name) if name is not None else type(hf_model).__name__
    net, centre, shapes = private_copy(hf_model, name)
    if hasattr(net, "set_attn_implementation"):
        net.set_attn_implementation("eager")  # on the copy's own config (deep-copied)
    vocab = int(net.get_output_embeddings().weight.shape[0])
    model = Model(
        name=name, loss=HFCausalLMLoss(net, name, input_key, attention_mask_key, vocab), param_shapes=shapes,
        centre=centre, tokens=tokens,
        description=description or f"Hugging Face causal LM {name} with "
                                   f"{sum(p.numel() for p in net.parameters())} parameters (pyro backend only)",
    )
    if example_data is not None:
        model.check_example(example_data)
    return model


# ------------------------------------------------------------------ components
def _layer_index(name: str, module: torch.nn.Module) -> int:
    idx = getattr(module, "layer_idx", None)
    if isinstance(idx, int):
        return idx
    numbers = re.findall(r"\.(\d+)(?=\.|$)", name)
    if not numbers:
        raise ValueError(f"hf_components: cannot tell the layer of attention module {name!r}.")
    return int(numbers[-1])


def _blocks(start: int, width: int, count: int, stride: int) -> np.ndarray:
    """Indices start + k*stride + [0, width) for k < count."""
    return np.concatenate([np.arange(start + k * stride, start + k * stride + width) for k in range(count)])


def hf_components(hf_model: torch.nn.Module, *, kv_heads: str = "shared") -> dict[str, dict[str, np.ndarray]]:
    """Named components of a Hugging Face causal LM as boolean masks ``{param name: bool
    array of that parameter's shape}`` (the component format of GibbsPosterior(sampled=),
    refine(component=) and observables.component_loss).

    Names (parameter names as ``hf_model.named_parameters()`` lists them, tied weights once):

    - ``"layer L head h"``: the weights through which attention head h of layer L reads
      and writes: its query, key and value projections (rows/columns of the weights and
      biases) and its block of the output projection's input dimension (the output
      projection's bias belongs to no head). Layouts, from transformers' modeling code:
      GPT-2's fused ``c_attn`` Conv1D (weight (d, 3d), y = x W + b) has columns
      [q | k | v], each d wide and split into heads of d/H, and ``c_proj`` (d, d) reads
      head h from rows h·hd … (h+1)·hd; GPT-NeoX's fused ``query_key_value`` Linear
      (weight (3d, d)) is reshaped to (H, 3·hd), so head h owns the contiguous rows
      3h·hd … 3(h+1)·hd ([q_h, k_h, v_h]), and ``dense`` reads it from columns
      h·hd … (h+1)·hd; Llama has separate ``q_proj`` / ``k_proj`` / ``v_proj`` (rows per
      head) and ``o_proj`` (columns per head).
    - Grouped-query attention (Llama with ``num_key_value_heads`` K < H): query head h
      uses key/value head g = h // (H/K) (transformers' ``repeat_kv``). With
      ``kv_heads="shared"`` (default) "layer L head h" includes k/v head g's rows, so the
      H/K heads of a group overlap there; with ``kv_heads="separate"`` a head is its query
      rows and output columns only, and the key/value rows are their own components
      ``"layer L kv head g"`` (then all head components are disjoint and together cover
      the attention's projection weights). With K = H both give the same heads.
    - ``"layer L mlp"``: every parameter of layer L's MLP (whole parameters).
    - ``"embed"``: the token embedding and any other embedding table (GPT-2's position
      embedding ``wpe``). ``"unembed"``: the output head's weight (and bias). With tied
      weights (GPT-2) both contain ``transformer.wte.weight``.

    Layer norms are in no component. Supported: GPT-2 (``c_attn``/``c_proj``), GPT-NeoX /
    Pythia (``query_key_value``/``dense``) and Llama-style models (``q_proj``/``k_proj``/
    ``v_proj``/``o_proj``); others raise a ``ValueError``.
    """
    _check_causal_lm(hf_model)
    if kv_heads not in ("shared", "separate"):
        raise ValueError(f"`kv_heads` must be 'shared' or 'separate', got {kv_heads!r}.")
    cfg = hf_model.config
    by_id = {id(p): n for n, p in hf_model.named_parameters()}
    shapes = {n: tuple(p.shape) for n, p in hf_model.named_parameters()}
    modules = dict(hf_model.named_modules())

    def mask_of(param: torch.Tensor, index=None) -> tuple[str, np.ndarray]:
        name = by_id[id(param)]
        m = np.zeros(shapes[name], dtype=bool)
        if index is None:
            m[...] = True
        else:
            m[index] = True
        return name, m

    def add(comp: dict, param, index=None):
        if param is None:
            return
        name, m = mask_of(param, index)
        comp[name] = comp[name] | m if name in comp else m

    out: dict[str, dict[str, np.ndarray]] = {}
    found = False
    for mname, mod in modules.items():
        kind = ("gpt2" if hasattr(mod, "c_attn") and hasattr(mod, "c_proj") else
                "neox" if hasattr(mod, "query_key_value") and hasattr(mod, "dense") else
                "llama" if all(hasattr(mod, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj")) else None)
        if kind is None:
            continue
        found = True
        layer = _layer_index(mname, mod)
        H = int(cfg.num_attention_heads)
        if kind == "gpt2":
            if getattr(mod, "is_cross_attention", False):
                continue
            d = mod.c_attn.weight.shape[0]
            hd = d // H
            if mod.c_attn.weight.shape != (d, 3 * d) or hd * H != d:
                raise ValueError(f"hf_components: {mname}.c_attn has shape {tuple(mod.c_attn.weight.shape)}, "
                                 f"expected the fused Conv1D (d, 3d) of GPT-2 with {H} heads.")
            for h in range(H):
                cols = _blocks(h * hd, hd, 3, d)  # q, k, v blocks of head h
                comp: dict[str, np.ndarray] = {}
                add(comp, mod.c_attn.weight, (slice(None), cols))
                add(comp, mod.c_attn.bias, cols)
                add(comp, mod.c_proj.weight, slice(h * hd, (h + 1) * hd))
                out[f"layer {layer} head {h}"] = comp
        elif kind == "neox":
            w = mod.query_key_value.weight
            d = w.shape[1]
            hd = int(getattr(mod, "head_size", d // H))
            if tuple(w.shape) != (3 * H * hd, d):
                raise ValueError(f"hf_components: {mname}.query_key_value has shape {tuple(w.shape)}, "
                                 f"expected (3·{H}·{hd}, {d}).")
            for h in range(H):
                rows = slice(3 * h * hd, 3 * (h + 1) * hd)
                comp = {}
                add(comp, w, rows)
                add(comp, mod.query_key_value.bias, rows)
                add(comp, mod.dense.weight, (slice(None), slice(h * hd, (h + 1) * hd)))
                out[f"layer {layer} head {h}"] = comp
        else:
            hd = int(getattr(mod, "head_dim", mod.q_proj.weight.shape[0] // H))
            K = int(getattr(cfg, "num_key_value_heads", None) or H)
            if mod.q_proj.weight.shape[0] != H * hd or mod.k_proj.weight.shape[0] != K * hd or H % K:
                raise ValueError(f"hf_components: {mname} projections q {tuple(mod.q_proj.weight.shape)}, "
                                 f"k {tuple(mod.k_proj.weight.shape)} do not fit {H} heads, {K} key/value heads "
                                 f"of size {hd}.")
            group = H // K
            for h in range(H):
                q_rows = slice(h * hd, (h + 1) * hd)
                comp = {}
                add(comp, mod.q_proj.weight, q_rows)
                add(comp, getattr(mod.q_proj, "bias", None), q_rows)
                add(comp, mod.o_proj.weight, (slice(None), q_rows))
                if kv_heads == "shared" or group == 1:
                    g = h // group
                    kv_rows = slice(g * hd, (g + 1) * hd)
                    for proj in (mod.k_proj, mod.v_proj):
                        add(comp, proj.weight, kv_rows)
                        add(comp, getattr(proj, "bias", None), kv_rows)
                out[f"layer {layer} head {h}"] = comp
            if kv_heads == "separate" and group > 1:
                for g in range(K):
                    kv_rows = slice(g * hd, (g + 1) * hd)
                    comp = {}
                    for proj in (mod.k_proj, mod.v_proj):
                        add(comp, proj.weight, kv_rows)
                        add(comp, getattr(proj, "bias", None), kv_rows)
                    out[f"layer {layer} kv head {g}"] = comp
        parent = modules.get(mname.rsplit(".", 1)[0]) if "." in mname else None
        mlp = getattr(parent, "mlp", None)
        if mlp is not None:
            comp = {}
            for p in mlp.parameters():
                add(comp, p)
            if comp:
                out[f"layer {layer} mlp"] = comp
    if not found:
        raise ValueError(f"hf_components: {type(hf_model).__name__} has no attention module of a supported layout "
                         "(GPT-2 c_attn/c_proj, GPT-NeoX query_key_value/dense, Llama q/k/v/o_proj).")
    embed: dict[str, np.ndarray] = {}
    head = hf_model.get_output_embeddings()
    for mod in modules.values():
        if isinstance(mod, torch.nn.Embedding) and mod is not head:
            add(embed, mod.weight)
    if embed:
        out["embed"] = embed
    unembed: dict[str, np.ndarray] = {}
    add(unembed, head.weight)
    add(unembed, getattr(head, "bias", None))
    out["unembed"] = unembed
    return out
