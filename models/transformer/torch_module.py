"""The transformer as a ``torch.nn.Module`` running the one xp forward pass.

:class:`TransformerModule` holds the parameters as ``nn.Parameter`` in nested submodules,
so ``named_parameters()`` yields exactly the dotted names of
:func:`.architecture.param_shapes` (``"embed"``, ``"layer0.attn.W_Q"``, ...): mapping
between a checkpoint and the module is the identity on names. ``forward(ids)`` returns the
logits of :func:`.architecture.logits` evaluated with ``array_api_compat.torch``; there is
no second definition of the network. This is what devinterp (PyTorch) runs on, and it
wraps with :func:`pplpatterning.backends.pyro.user.model_from_module`::

    net = TransformerModule(config, checkpoint.params)
    model = module_model(net)                          # model_from_module(net, per_sample_loss, input_key="inputs")
    post = GibbsPosterior(model, next_token_data(tokens), n_beta=..., gamma=...)

The module reads the parameters by attribute access at call time, so
``torch.func.functional_call(net, params, (ids,))`` swaps them as usual. The causal mask
is a non-persistent buffer (``.double()`` / ``.to(device)`` move it with the module).
Only this module of the subpackage imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import array_api_compat.torch as xp_torch
import numpy as np
import torch
from torch import nn

from .architecture import TransformerConfig, init_params, logits, param_shapes, token_nll, transformer_consts

__all__ = ["TransformerModule", "next_token_data", "per_token_loss", "per_sample_loss", "sequence_loss",
           "module_model"]


class TransformerModule(nn.Module):
    """``nn.Module`` of :class:`~.architecture.TransformerConfig` ``config`` with parameters
    ``params`` (default :func:`~.architecture.init_params` ``(config, seed)``), stored in
    ``dtype`` (default float64). ``forward(ids)``: integer ids (B, T), T ≤ context ->
    logits (B, T, vocab), position t predicting token t + 1."""

    def __init__(self, config: TransformerConfig, params: Mapping[str, Any] | None = None, *, seed: int = 0,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"`config` must be a TransformerConfig, got {type(config).__name__}.")
        self.config = config
        shapes = param_shapes(config)
        values = init_params(config, seed) if params is None else params
        missing = [k for k in shapes if k not in values]
        extra = sorted(set(values) - set(shapes))
        if missing or extra:
            raise ValueError(f"`params` does not match the config: missing {missing}, unexpected {extra}.")
        self._names = tuple(shapes)
        for name, shape in shapes.items():
            arr = np.asarray(values[name], dtype=np.float64)
            if arr.shape != shape:
                raise ValueError(f"`params[{name!r}]` has shape {arr.shape}, the config needs {shape}.")
            *path, leaf = name.split(".")
            owner = self
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.register_parameter(leaf, nn.Parameter(torch.tensor(arr, dtype=dtype)))
        consts = transformer_consts(config)
        self.register_buffer("causal_bias", torch.tensor(consts["causal_bias"], dtype=dtype), persistent=False)
        self._gelu = "mlp_gelu" in consts

    def params(self) -> dict[str, torch.Tensor]:
        """``{dotted name: tensor}``, read by attribute access (so functional_call's
        substituted tensors are the ones used)."""
        out = {}
        for name in self._names:
            *path, leaf = name.split(".")
            owner = self
            for part in path:
                owner = getattr(owner, part)
            out[name] = getattr(owner, leaf)
        return out

    def consts(self) -> dict[str, torch.Tensor]:
        """The loss's constants as tensors of the module's dtype and device."""
        out = {"causal_bias": self.causal_bias}
        if self._gelu:
            out["mlp_gelu"] = torch.ones((), dtype=self.causal_bias.dtype, device=self.causal_bias.device)
        return out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab) of integer ids (B, T) by :func:`.architecture.logits`."""
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"`ids` must be an integer tensor of token ids, got {ids.dtype}.")
        if ids.ndim != 2 or not 1 <= ids.shape[1] <= self.config.context:
            raise ValueError(f"`ids` must have shape (B, T) with 1 ≤ T ≤ context = {self.config.context}, "
                             f"got {tuple(ids.shape)}.")
        return logits(self.params(), ids, self.consts(), xp_torch)

    def state_params(self) -> dict[str, np.ndarray]:
        """The current parameters as float64 NumPy arrays under their dotted names (a
        checkpoint's ``params``)."""
        return {k: v.detach().to(torch.float64).cpu().numpy().copy() for k, v in self.params().items()}


def next_token_data(tokens: Any) -> dict[str, np.ndarray]:
    """``{"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}`` (int64) from token sequences
    (n, T + 1): the data layout of :func:`module_model`."""
    arr = np.asarray(tokens)
    if arr.dtype.kind not in "iu" or arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"`tokens` must be an integer array (n, T + 1) with T ≥ 1, got {arr.dtype} {arr.shape}.")
    arr = arr.astype(np.int64, copy=False)
    return {"inputs": np.ascontiguousarray(arr[:, :-1]), "targets": np.ascontiguousarray(arr[:, 1:])}


def per_token_loss(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log softmax(out)[target] per position, (B, T), by :func:`.architecture.token_nll`."""
    return token_nll(out, targets, xp_torch)


def per_sample_loss(out: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean over positions of :func:`per_token_loss` against ``batch["targets"]``: the
    per-sample loss ``model_from_module`` wants (shape (B,)); equals the xp Model's."""
    return torch.mean(per_token_loss(out, batch["targets"]), dim=-1)


def sequence_loss(module: TransformerModule, tokens: torch.Tensor) -> torch.Tensor:
    """Scalar mean next-token loss of the module on sequences ``tokens`` (B, T + 1): inputs
    ``tokens[:, :-1]`` predict ``tokens[:, 1:]`` (e.g. devinterp's ``evaluate``)."""
    return torch.mean(per_token_loss(module(tokens[:, :-1]), tokens[:, 1:]))


def module_model(module: TransformerModule, *, name: str = "transformer_module"):
    """``model_from_module(module, per_sample_loss, input_key="inputs")`` (Pyro backend
    only): data from :func:`next_token_data`. Its loss equals
    :func:`~.architecture.transformer_model`'s at the same parameters."""
    from pplpatterning.backends.pyro.user import model_from_module

    if not isinstance(module, TransformerModule):
        raise TypeError(f"`module` must be a TransformerModule, got {type(module).__name__}.")
    return model_from_module(module, per_sample_loss, input_key="inputs", name=name,
                             description=f"TransformerModule ({module.config.n_params} parameters), torch.nn.Module")
