"""Mixed-precision forward passes: the model's loss in bfloat16, everything around it in the
run's precision (``sample(..., dtype="float32", forward_dtype="bfloat16")``).

The sampler's positions, gradients' updates and noise stay float32; only the loss function
(the network's forward pass, and so its backward pass under autodiff) computes in
``forward_dtype``: every floating parameter, data and constant array is cast to it on the way
in, and the per-sample (or per-token) losses are cast to float32 on the way out. The
per-sample differences l_i(w) − l_i(w*) are then taken in float64 against the float64
reference l_i(w*), as for every run (docs/math.md §2). This is the autocast recipe of
mixed-precision training (Micikevicius et al. 2018, arXiv:1710.03740: low-precision
arithmetic in the passes, master weights and accumulations in higher precision).

What it costs in accuracy: bfloat16 keeps 8 significand bits, so a per-sample loss carries a
rounding error of ~2⁻⁸ of its size. Measured on the built-in transformer (per-sequence loss
≈ 2.2): per-sample differences bfloat16 − float64 have sd 1.8e-3 and a mean over 1024
sequences within ±1e-4 of zero at w* and at perturbed points, i.e. nβ·1e-4 in λ̂ per draw,
averaging out over draws (validation/BENCHMARK.md). Integer data (token ids) stay integer.
Observables are evaluated in the positions' precision, not ``forward_dtype``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pplpatterning.spec.model import LossFn, Model, TokenReduced

__all__ = ["LowPrecisionLoss", "forward_losses"]


def _cast_floats(arrays, low, xp):
    return {k: xp.astype(v, low) if hasattr(v, "dtype") and xp.isdtype(v.dtype, "real floating") else v
            for k, v in arrays.items()}


@dataclass(frozen=True)
class LowPrecisionLoss:
    """``loss`` evaluated with every floating input cast to ``dtype`` (``xp.bfloat16``) and
    its output cast to float32. Equal (and hashing equal) for the same loss and dtype, so the
    backends' compiled programs are reused across runs like a module-level loss's."""

    loss: LossFn
    dtype: str = "bfloat16"

    def __call__(self, params, batch, consts, xp):
        low = getattr(xp, self.dtype)
        out = self.loss(_cast_floats(params, low, xp), _cast_floats(batch, low, xp), _cast_floats(consts, low, xp), xp)
        return xp.astype(out, xp.float32)


def forward_losses(model: Model, forward_dtype: str | None) -> tuple[Any, Any]:
    """(per-sample loss, per-token loss or None) the backend evaluates: the model's own with
    ``forward_dtype=None``; else the low-precision versions, a sequence model's reduction over
    tokens taken in float32 after the cast back."""
    if forward_dtype is None:
        return model.loss, model.token_loss
    token = model.token_loss
    if token is None:
        return LowPrecisionLoss(model.loss, forward_dtype), None
    low_token = LowPrecisionLoss(token, forward_dtype)
    return TokenReduced(low_token, model.loss.how), low_token
