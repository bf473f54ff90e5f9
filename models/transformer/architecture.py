"""A small decoder-only transformer, written once against the array-API namespace ``xp``.

The same functions run on NumPy (the float64 reference), ``jax.numpy`` (NumPyro backend)
and ``array_api_compat.torch`` (Pyro backend, training, :mod:`.torch_module`): this is the
:class:`~pplpatterning.Model` contract (docs/architecture.md, "The model contract").

Architecture (the attention-only toy transformers of Elhage et al. 2021, "A Mathematical
Framework for Transformer Circuits", and Olsson et al. 2022, arXiv:2209.11895, with
optional MLPs and optional pre-layer-norm):

    x_0[t]   = embed[id_t] + pos_embed[t]                         (residual stream, d_model)
    x_{l+½}  = x_l + Σ_h  A^{l,h} (LN(x_l) W_V^{l,h}) W_O^{l,h}     (causal self-attention)
    A^{l,h}  = softmax_s( LN(x_l) W_Q^{l,h} (LN(x_l) W_K^{l,h})ᵀ / √d_head + causal mask )
    x_{l+1}  = x_{l+½} + act(LN(x_{l+½}) W_in + b_in) W_out + b_out  (only with ``mlp=True``)
    logits   = LN(x_L) unembed

LN is the identity unless ``layer_norm=True`` (then an affine layer norm, Ba et al. 2016,
arXiv:1607.06450). ``act`` is GELU (tanh form, Hendrycks & Gimpel 2016, arXiv:1606.08415)
or ReLU. There are no attention or unembedding biases.

Parameters are a flat dict with stable dotted names (:func:`param_shapes`): ``embed``
(vocab, d_model), ``pos_embed`` (context, d_model), ``layer{l}.attn.W_Q`` / ``W_K`` /
``W_V`` (n_heads, d_model, d_head) and ``layer{l}.attn.W_O`` (n_heads, d_head, d_model), so
head h is the slice ``[h]`` of all four; ``layer{l}.mlp.W_in`` (d_model, d_mlp),
``.b_in`` (d_mlp,), ``.W_out`` (d_mlp, d_model), ``.b_out`` (d_model,); with layer norm
``layer{l}.ln_attn.w``/``.b``, ``layer{l}.ln_mlp.w``/``.b``, ``ln_final.w``/``.b``
(d_model,); ``unembed`` (d_model, vocab).

The loss (:func:`transformer_token_loss`) is the per-token next-token cross-entropy: a
batch ``{"tokens": int (batch, T + 1)}`` with T ≤ context; inputs ``tokens[:, :-1]``
predict ``tokens[:, 1:]``, and the loss returns the (batch, T) per-token negative
log-likelihoods, so ``Model(..., tokens="mean")`` makes the per-sample loss their mean.
Token ids stay integers: the embedding is an ``xp.take`` of rows and the target's logit an
``xp.take_along_axis``; no id is ever cast to float. The forward pass reads the network's
structure from the parameter *names* and *shapes* and the activation from the *keys* of
``consts`` (all static under JAX tracing); ``consts`` holds the causal mask as an additive
float bias (0 allowed, ``MASK_BIAS`` above the diagonal), passed in, never closed over.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

__all__ = [
    "TransformerConfig", "param_shapes", "transformer_consts", "init_params", "forward", "logits",
    "attention_patterns", "token_nll", "transformer_token_loss", "transformer_model", "default_task",
    "MASK_BIAS", "ACTIVATIONS",
]

#: Added to the attention scores above the diagonal (a future position): exp underflows to
#: exactly 0 after the max is subtracted, in float32 and float64 alike.
MASK_BIAS = -1.0e9
#: MLP activations available.
ACTIVATIONS = ("gelu", "relu")
#: Layer-norm epsilon (added to the variance).
LN_EPS = 1.0e-5


def _pos_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of the transformer. Validated on construction.

    ``vocab`` tokens, ``context`` input positions (a training sequence holds
    ``context + 1`` tokens: every input position predicts its successor), ``n_layers``
    blocks of ``n_heads`` heads of width ``d_head`` over a ``d_model`` residual stream.
    ``mlp=True`` adds an MLP of width ``d_mlp`` (default 4·d_model) with ``activation``
    ("gelu" or "relu") to every block; ``layer_norm=True`` adds affine pre-layer-norms.
    """

    vocab: int
    context: int
    d_model: int
    n_heads: int
    d_head: int
    n_layers: int
    mlp: bool = False
    d_mlp: int | None = None
    activation: str = "gelu"
    layer_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab", "context", "d_model", "n_heads", "d_head", "n_layers"):
            object.__setattr__(self, name, _pos_int(getattr(self, name), name))
        if self.vocab < 2:
            raise ValueError(f"`vocab` must be at least 2 (a next-token task needs two tokens), got {self.vocab}.")
        for name in ("mlp", "layer_norm"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")
            object.__setattr__(self, name, bool(getattr(self, name)))
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {ACTIVATIONS}, got {self.activation!r}.")
        if self.d_mlp is None:
            object.__setattr__(self, "d_mlp", 4 * self.d_model)
        else:
            object.__setattr__(self, "d_mlp", _pos_int(self.d_mlp, "d_mlp"))

    @property
    def n_params(self) -> int:
        """Number of scalar parameters d."""
        return int(sum(math.prod(s) for s in param_shapes(self).values()))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``TransformerConfig(**d)`` rebuilds it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TransformerConfig":
        """Rebuild from :meth:`to_dict`'s output; unknown keys raise a ``ValueError``."""
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"Unknown TransformerConfig field(s) {unknown}; valid ones are {sorted(fields)}.")
        return cls(**dict(d))


def _check_config(config: Any) -> TransformerConfig:
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"`config` must be a TransformerConfig, got {type(config).__name__}.")
    return config


def param_shapes(config: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """``{dotted name: shape}`` of every parameter, in a fixed order (module docstring)."""
    c = _check_config(config)
    D, H, E = c.d_model, c.n_heads, c.d_head
    shapes: dict[str, tuple[int, ...]] = {"embed": (c.vocab, D), "pos_embed": (c.context, D)}
    for layer in range(c.n_layers):
        p = f"layer{layer}"
        if c.layer_norm:
            shapes[f"{p}.ln_attn.w"] = (D,)
            shapes[f"{p}.ln_attn.b"] = (D,)
        shapes[f"{p}.attn.W_Q"] = (H, D, E)
        shapes[f"{p}.attn.W_K"] = (H, D, E)
        shapes[f"{p}.attn.W_V"] = (H, D, E)
        shapes[f"{p}.attn.W_O"] = (H, E, D)
        if c.mlp:
            if c.layer_norm:
                shapes[f"{p}.ln_mlp.w"] = (D,)
                shapes[f"{p}.ln_mlp.b"] = (D,)
            shapes[f"{p}.mlp.W_in"] = (D, c.d_mlp)
            shapes[f"{p}.mlp.b_in"] = (c.d_mlp,)
            shapes[f"{p}.mlp.W_out"] = (c.d_mlp, D)
            shapes[f"{p}.mlp.b_out"] = (D,)
    if c.layer_norm:
        shapes["ln_final.w"] = (D,)
        shapes["ln_final.b"] = (D,)
    shapes["unembed"] = (D, c.vocab)
    return shapes


def transformer_consts(config: TransformerConfig) -> dict[str, np.ndarray]:
    """The fixed arrays the loss reads: ``causal_bias`` (context, context), 0 where key
    position s ≤ query position t and ``MASK_BIAS`` above the diagonal; plus the key
    ``mlp_gelu`` (value 1.0) when the MLPs use GELU (its presence selects the activation,
    a static choice; ReLU otherwise). All float64 (Model stores consts as float64)."""
    c = _check_config(config)
    bias = np.where(np.tril(np.ones((c.context, c.context), dtype=bool)), 0.0, MASK_BIAS)
    consts = {"causal_bias": bias.astype(np.float64)}
    if c.mlp and c.activation == "gelu":
        consts["mlp_gelu"] = np.float64(1.0)
    return consts


def init_params(config: TransformerConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded float64 initial parameters: every weight matrix N(0, 1/fan_in) (LeCun
    scaling; fan_in = d_model for W_Q/W_K/W_V/W_in/unembed, n_heads·d_head for W_O, d_mlp
    for W_out), embeddings and positional embeddings N(0, ½) each (a one-hot input has
    fan-in 1; their sum has unit variance per coordinate), biases 0, layer-norm gains 1.
    Residual-stream entries and logits start with variance ≈ 1, the loss near log(vocab) + ½."""
    c = _check_config(config)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")
    rng = np.random.default_rng(int(seed))
    out = {}
    for name, shape in param_shapes(c).items():
        leaf = name.rsplit(".", 1)[-1]
        if name in ("embed", "pos_embed"):
            std = math.sqrt(0.5)
        elif leaf in ("W_Q", "W_K", "W_V", "W_in") or name == "unembed":
            std = 1.0 / math.sqrt(c.d_model)
        elif leaf == "W_O":
            std = 1.0 / math.sqrt(c.n_heads * c.d_head)
        elif leaf == "W_out":
            std = 1.0 / math.sqrt(c.d_mlp)
        elif leaf == "w":  # layer-norm gain
            out[name] = np.ones(shape)
            continue
        else:  # biases
            out[name] = np.zeros(shape)
            continue
        out[name] = std * rng.standard_normal(shape)
    return out


# ---------------------------------------------------------------------------------------
# the forward pass (xp only)


def _layer_norm(x, params, prefix, xp):
    """LN(x) = (x - mean) / sqrt(var + eps) · w + b over the last axis; identity when the
    model has no ``{prefix}.w`` parameter (``layer_norm=False``)."""
    if f"{prefix}.w" not in params:
        return x
    mu = xp.mean(x, axis=-1, keepdims=True)
    centred = x - mu
    var = xp.mean(centred * centred, axis=-1, keepdims=True)
    return centred / xp.sqrt(var + LN_EPS) * params[f"{prefix}.w"] + params[f"{prefix}.b"]


def _softmax_last(s, xp):
    """softmax over the last axis, computed stably: exp(s - max s) / Σ exp(s - max s)."""
    s = s - xp.max(s, axis=-1, keepdims=True)
    e = xp.exp(s)
    return e / xp.sum(e, axis=-1, keepdims=True)


def _gelu(x, xp):
    """GELU, tanh form: ½ x (1 + tanh(√(2/π) (x + 0.044715 x³))) (arXiv:1606.08415)."""
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _relu(x, xp):
    """ReLU max(x, 0)."""
    return xp.where(x > 0, x, 0.0 * x)


def _attention(x, params, prefix, bias, xp):
    """Causal multi-head self-attention of the residual stream x (B, T, D): returns
    (Σ_h A_h V_h W_O^h of shape (B, T, D), the patterns A of shape (B, H, T, T)).

    The per-head products x W_Q^h, x W_K^h, x W_V^h are computed as one 2-D matmul with the
    heads' matrices laid side by side, (D, 3·H·E), and Σ_h z_h W_O^h as one matmul with
    W_O flattened to (H·E, D): the same arithmetic, far fewer tiny batched matmuls."""
    W_Q, W_K, W_V, W_O = (params[f"{prefix}.W_{k}"] for k in "QKVO")
    H, D, E = W_Q.shape
    B, T = x.shape[0], x.shape[1]
    side = [xp.reshape(xp.permute_dims(W, (1, 0, 2)), (D, H * E)) for W in (W_Q, W_K, W_V)]
    qkv = xp.matmul(xp.reshape(x, (B * T, D)), xp.concat(side, axis=1))  # (B·T, 3·H·E)
    qkv = xp.permute_dims(xp.reshape(qkv, (B, T, 3, H, E)), (2, 0, 3, 1, 4))  # (3, B, H, T, E)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = xp.matmul(q, xp.matrix_transpose(k)) / math.sqrt(E) + bias[:T, :T]
    pattern = _softmax_last(scores, xp)  # (B, H, T_query, T_key)
    z = xp.permute_dims(xp.matmul(pattern, v), (0, 2, 1, 3))  # (B, T, H, E)
    out = xp.matmul(xp.reshape(z, (B * T, H * E)), xp.reshape(W_O, (H * E, D)))
    return xp.reshape(out, (B, T, D)), pattern


def forward(params: Mapping[str, Any], ids: Any, consts: Mapping[str, Any], xp, *, keep_patterns: bool = False):
    """Logits (B, T, vocab) of the integer inputs ``ids`` (B, T), T ≤ context, and, with
    ``keep_patterns``, the list of every layer's attention patterns (B, n_heads, T, T)
    (query position on axis 2, key position on axis 3; rows sum to 1). The one definition
    of the forward pass (module docstring); its structure comes from parameter names."""
    embed = params["embed"]
    B, T = ids.shape[0], ids.shape[1]
    D = embed.shape[-1]
    x = xp.reshape(xp.take(embed, xp.reshape(ids, (-1,)), axis=0), (B, T, D)) + params["pos_embed"][:T]
    bias = consts["causal_bias"]
    act = _gelu if "mlp_gelu" in consts else _relu
    patterns = []
    layer = 0
    while f"layer{layer}.attn.W_Q" in params:  # control flow on names only, never on values
        p = f"layer{layer}"
        out, pattern = _attention(_layer_norm(x, params, f"{p}.ln_attn", xp), params, f"{p}.attn", bias, xp)
        x = x + out
        if keep_patterns:
            patterns.append(pattern)
        if f"{p}.mlp.W_in" in params:
            h = _layer_norm(x, params, f"{p}.ln_mlp", xp)
            h = act(xp.matmul(h, params[f"{p}.mlp.W_in"]) + params[f"{p}.mlp.b_in"], xp)
            x = x + xp.matmul(h, params[f"{p}.mlp.W_out"]) + params[f"{p}.mlp.b_out"]
        layer += 1
    out = xp.matmul(_layer_norm(x, params, "ln_final", xp), params["unembed"])
    return (out, patterns) if keep_patterns else out


def logits(params: Mapping[str, Any], ids: Any, consts: Mapping[str, Any], xp):
    """The logits (B, T, vocab) of the inputs ``ids`` (B, T): :func:`forward` without patterns."""
    return forward(params, ids, consts, xp)


def attention_patterns(params: Mapping[str, Any], ids: Any, consts: Mapping[str, Any], xp) -> list:
    """Every layer's attention patterns A[b, h, t, s] (attention of query t to key s ≤ t)
    on the inputs ``ids`` (B, T), from the same :func:`forward`."""
    return forward(params, ids, consts, xp, keep_patterns=True)[1]


def token_nll(logit, targets, xp):
    """-log softmax(logit)[target] per position: logsumexp_v logit[..., v] - logit[..., target],
    the logsumexp computed stably (max subtracted); ``targets`` integer (never cast), same
    leading shape as ``logit`` (..., vocab)."""
    m = xp.max(logit, axis=-1, keepdims=True)
    lse = xp.log(xp.sum(xp.exp(logit - m), axis=-1)) + m[..., 0]
    target_logit = xp.take_along_axis(logit, xp.expand_dims(targets, axis=-1), axis=-1)[..., 0]
    return lse - target_logit


def transformer_token_loss(params, batch, consts, xp):
    """Per-token next-token cross-entropy l_{z,t} = -log p_w(x_{z,t+1} | x_{z,≤t}), shape
    (batch, T) for ``batch["tokens"]`` of integer shape (batch, T + 1), 1 ≤ T ≤ context:
    the inputs ``tokens[:, :-1]`` predict ``tokens[:, 1:]``."""
    tokens = batch["tokens"]
    if len(tokens.shape) != 2 or tokens.shape[1] < 2:
        raise ValueError(f"`tokens` must have shape (batch, T + 1) with T ≥ 1, got {tuple(tokens.shape)}.")
    context = consts["causal_bias"].shape[0]
    if tokens.shape[1] - 1 > context:
        raise ValueError(f"`tokens` has {tokens.shape[1]} positions per sequence; this transformer's context is "
                         f"{context}, so sequences may hold at most context + 1 = {context + 1} tokens.")
    return token_nll(logits(params, tokens[:, :-1], consts, xp), tokens[:, 1:], xp)


# ---------------------------------------------------------------------------------------
# the Model


def _task_data(n: int, rng: np.random.Generator, consts: Mapping[str, Any], *, task) -> dict[str, np.ndarray]:
    """Model.data_generator: ``{"tokens": int64 (n, seq_len)}`` drawn from ``task``."""
    return {"tokens": task.sample(n, rng).tokens}


def default_task(config: TransformerConfig):
    """The default :class:`~.task.InductionTask` for ``config``: its vocabulary, sequences
    of ``context + 1`` tokens (every input position is a prediction), spans of 4..8 tokens
    (shorter when the context is short); needs ``context ≥ 5``."""
    from .task import InductionTask

    c = _check_config(config)
    seq_len = c.context + 1
    k_max = min(8, (seq_len - 2) // 2)
    if k_max < 2:
        raise ValueError(f"`config.context` = {c.context} is too short for the default induction task (it needs "
                         "context ≥ 5); pass task=InductionTask(...) or a longer context.")
    return InductionTask(vocab=c.vocab, seq_len=seq_len, span=(min(4, k_max), k_max))


def transformer_model(config: TransformerConfig, params: Mapping[str, Any] | None = None, *, seed: int = 0,
                      task=None):
    """A :class:`~pplpatterning.Model` named "transformer": per-token next-token
    cross-entropy (:func:`transformer_token_loss`, ``tokens="mean"``), parameters
    :func:`param_shapes`, centre ``params`` (e.g. a training checkpoint's) or
    :func:`init_params` ``(config, seed)``, constants :func:`transformer_consts`, data
    ``{"tokens": int64 (n, seq_len)}`` from ``task`` (default :func:`default_task`; no
    generator when the context is too short for it). No exact λ is known."""
    from pplpatterning.spec.model import Model

    from .task import InductionTask

    c = _check_config(config)
    shapes = param_shapes(c)
    if params is None:
        centre = init_params(c, seed)
    else:
        if not isinstance(params, Mapping):
            raise TypeError(f"`params` must be a mapping {{name: array}} (e.g. Checkpoint.params), "
                            f"got {type(params).__name__}.")
        missing = [k for k in shapes if k not in params]
        extra = sorted(set(params) - set(shapes))
        if missing or extra:
            raise ValueError(f"`params` does not match the config: missing {missing}, unexpected {extra}.")
        centre = {k: np.asarray(params[k], dtype=np.float64) for k in shapes}
    if task is None:
        try:
            task = default_task(c)
        except ValueError:
            task = None
    elif not isinstance(task, InductionTask):
        raise TypeError(f"`task` must be an InductionTask, got {type(task).__name__}.")
    else:
        if task.vocab != c.vocab:
            raise ValueError(f"`task.vocab` = {task.vocab} differs from `config.vocab` = {c.vocab}.")
        if task.seq_len > c.context + 1:
            raise ValueError(f"`task.seq_len` = {task.seq_len} exceeds context + 1 = {c.context + 1}; shorten the "
                             "task's sequences or lengthen the context.")
    parts = [f"{c.n_layers}-layer", "attention-only" if not c.mlp else f"MLP ({c.activation}, {c.d_mlp})",
             f"transformer, {c.n_heads} heads × d_head {c.d_head}, d_model {c.d_model}, vocab {c.vocab}, "
             f"context {c.context}"]
    if c.layer_norm:
        parts.append("with layer norm")
    return Model(
        name="transformer",
        loss=transformer_token_loss,
        param_shapes=shapes,
        centre=centre,
        consts=transformer_consts(c),
        data_generator=None if task is None else partial(_task_data, task=task),
        description=" ".join(parts) + f"; d = {c.n_params}; next-token cross-entropy per token",
        tokens="mean",
    )
