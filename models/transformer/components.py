"""Components of the transformer (heads, MLPs, embeddings) and attention-head scores.

:func:`transformer_components` gives each component as a mask mapping
``{param name: bool array of the parameter's shape}``, the format of
:func:`pplpatterning.spec.observables.component_loss`, ``GibbsPosterior(sampled=...)`` and
``refine(post, component=...)`` (pplpatterning/spec/masks.py): a head is its slice ``[h]``
of W_Q, W_K, W_V and W_O, as in the refined LLCs of Wang et al. 2024 (arXiv:2410.02984).

:func:`head_scores` measures the two attention motifs of the induction circuit (Olsson
et al. 2022, arXiv:2209.11895) from the patterns of the one forward pass
(:func:`.architecture.attention_patterns`, evaluated with NumPy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .architecture import TransformerConfig, attention_patterns, param_shapes, transformer_consts
from .task import LABEL_CODES

__all__ = ["transformer_components", "head_name", "head_scores", "copy_sources"]


def head_name(layer: int, head: int) -> str:
    """The component name of head ``head`` of layer ``layer``: "layer L head H"."""
    return f"layer {int(layer)} head {int(head)}"


def transformer_components(config: TransformerConfig, *, heads: bool = True, mlps: bool = True,
                           embed: bool = True, unembed: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """``{component name: {param name: bool mask}}`` in network order: "embed" (``embed``
    and ``pos_embed`` whole), "layer L head H" (slice ``[H]`` of ``layerL.attn.W_Q``,
    ``W_K``, ``W_V``, ``W_O``), "layer L mlp" (``W_in``, ``b_in``, ``W_out``, ``b_out``
    whole; only with ``config.mlp``), "unembed". Layer-norm parameters belong to no
    component. Masks are fresh writable arrays."""
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"`config` must be a TransformerConfig, got {type(config).__name__}.")
    shapes = param_shapes(config)
    out: dict[str, dict[str, np.ndarray]] = {}
    if embed:
        out["embed"] = {k: np.ones(shapes[k], dtype=bool) for k in ("embed", "pos_embed")}
    for layer in range(config.n_layers):
        if heads:
            for h in range(config.n_heads):
                masks = {}
                for w in ("W_Q", "W_K", "W_V", "W_O"):
                    name = f"layer{layer}.attn.{w}"
                    m = np.zeros(shapes[name], dtype=bool)
                    m[h] = True
                    masks[name] = m
                out[head_name(layer, h)] = masks
        if mlps and config.mlp:
            out[f"layer {layer} mlp"] = {f"layer{layer}.mlp.{w}": np.ones(shapes[f"layer{layer}.mlp.{w}"], dtype=bool)
                                         for w in ("W_in", "b_in", "W_out", "b_out")}
    if unembed:
        out["unembed"] = {"unembed": np.ones(shapes["unembed"], dtype=bool)}
    return out


def copy_sources(tokens: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For data without the task's ``source``: at every induction-labelled position t the
    position j + 1 after the most recent earlier occurrence j < t - 1 of token x_{t-1}
    (-1 where there is none, and at other positions)."""
    tokens = np.asarray(tokens)
    labels = np.asarray(labels)
    source = np.full(tokens.shape, -1, dtype=np.int64)
    for i, t in zip(*np.nonzero(labels == LABEL_CODES["induction"])):
        if t < 2:
            continue
        hits = np.nonzero(tokens[i, : t - 1] == tokens[i, t - 1])[0]
        if hits.size:
            source[i, t] = hits[-1] + 1
    return source


def _check_int_array(value: Any, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"`{name}` must be an integer array, got dtype {arr.dtype}.")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"`{name}` has shape {arr.shape}, expected {shape} (the shape of `tokens`).")
    return arr.astype(np.int64, copy=False)


def scores_from_patterns(patterns: list[np.ndarray], labels: np.ndarray, source: np.ndarray) -> dict[str, np.ndarray]:
    """The scores of :func:`head_scores` from given patterns (a list over layers of
    (n, H, T, T) arrays over the inputs ``tokens[:, :-1]``, T = seq_len - 1)."""
    prev, ind = [], []
    n, L = labels.shape
    T = L - 1
    is_ind = (labels == LABEL_CODES["induction"]) & (source >= 0)
    rows, targets = np.nonzero(is_ind)
    queries = targets - 1  # input position q predicts token q + 1
    keys = source[rows, targets]
    for p in patterns:
        p = np.asarray(p, dtype=np.float64)
        if p.ndim != 4 or p.shape[0] != n or p.shape[2:] != (T, T):
            raise ValueError(f"patterns must have shape (n, heads, {T}, {T}), got {p.shape}.")
        q = np.arange(1, T)
        prev.append(p[:, :, q, q - 1].mean(axis=(0, 2)) if T > 1 else np.full(p.shape[1], np.nan))
        if rows.size:
            ind.append(p[rows, :, queries, keys].mean(axis=0))
        else:
            ind.append(np.full(p.shape[1], np.nan))
    return {"previous_token": np.array(prev), "induction": np.array(ind), "n_induction": int(rows.size)}


def head_scores(config: TransformerConfig, params: Mapping[str, Any], tokens: Any, labels: Any,
                source: Any = None, *, batch_size: int = 512) -> dict[str, Any]:
    """Previous-token and induction scores of every head, arrays (n_layers, n_heads).

    With A^{l,h}[q, s] the attention of input position q to key s on the inputs
    ``tokens[:, :-1]`` (input q predicts token q + 1):

    - ``previous_token[l, h]`` = mean over sequences and q ≥ 1 of A^{l,h}[q, q - 1];
    - ``induction[l, h]`` = mean over the induction-labelled targets t of
      A^{l,h}[t - 1, source_t]: attention from the current token x_{t-1} to the token
      after its earlier occurrence (``source`` from :meth:`.task.InductionTask.sample`, or
      :func:`copy_sources` when not given); NaN when there is no induction position.

    Also ``n_induction`` (how many targets entered) and ``names`` ("layer L head H").
    Evaluated in float64 NumPy in batches of ``batch_size`` sequences.
    """
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"`config` must be a TransformerConfig, got {type(config).__name__}.")
    tokens = _check_int_array(tokens, "tokens")
    if tokens.ndim != 2 or tokens.shape[1] < 2 or tokens.shape[1] > config.context + 1:
        raise ValueError(f"`tokens` must have shape (n, seq_len) with 2 ≤ seq_len ≤ context + 1 = "
                         f"{config.context + 1}, got {tokens.shape}.")
    labels = _check_int_array(labels, "labels", tokens.shape)
    source = copy_sources(tokens, labels) if source is None else _check_int_array(source, "source", tokens.shape)
    shapes = param_shapes(config)
    missing = [k for k in shapes if k not in params]
    if missing:
        raise ValueError(f"`params` lacks {missing} for this config.")
    p = {k: np.asarray(params[k], dtype=np.float64) for k in shapes}
    consts = transformer_consts(config)
    n = tokens.shape[0]
    prev = np.zeros((config.n_layers, config.n_heads))
    ind = np.zeros((config.n_layers, config.n_heads))
    n_ind = 0
    for lo in range(0, n, int(batch_size)):
        sl = slice(lo, min(n, lo + int(batch_size)))
        pats = attention_patterns(p, tokens[sl, :-1], consts, np)
        part = scores_from_patterns(pats, labels[sl], source[sl])
        w = sl.stop - sl.start
        prev += part["previous_token"] * w
        if part["n_induction"]:
            ind += part["induction"] * part["n_induction"]
            n_ind += part["n_induction"]
    names = [[head_name(l, h) for h in range(config.n_heads)] for l in range(config.n_layers)]
    return {"previous_token": prev / n, "induction": ind / n_ind if n_ind else np.full_like(ind, np.nan),
            "n_induction": n_ind, "names": names}
