"""Compile a GibbsPosterior to float64 torch tensors, a Pyro model and a vectorised potential.

Two routes to the same potential U(v) = nβ L^ρ(u*, v) + (γ/2)||v - v*||² (the functions
of :mod:`pplpatterning.spec.posterior`, never rewritten here):

- :func:`gibbs_model`: a Pyro model (improper-flat sample sites plus two ``pyro.factor``
  terms) for Pyro's own NUTS and HMC;
- :class:`ChainEnergy`: U, ∇U and the batch's (L^ρ, L^ρ - L^ρ(w*)) evaluated straight from
  the spec for all chains at once (``torch.func.vmap`` of the per-chain energy, one
  backward pass for the whole batch of chains), for MALA and the stochastic-gradient
  samplers, which would pay ~0.5 ms per gradient for Pyro's tracing otherwise.

Parameters travel as one flat float64 vector per chain (``(chains, d)``), unflattened into
``{name: view}`` only inside the energy; the layout is the order of ``post.sampled``.
Everything is float64 (``torch.float64`` tensors) except integer data and constants, which
stay integer (``torch.int64``; token ids index embeddings); torch's global default dtype is
left alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import array_api_compat.torch as xp_torch
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide.initialization import init_to_value
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import potential_grad
from torch.func import vmap

from pplpatterning.spec.forward import forward_losses
from pplpatterning.spec.masks import MaskedParam, assemble
from pplpatterning.spec.posterior import (
    GibbsPosterior,
    localization_energy,
    per_sample_loss_delta,
    tempered_loss_energy,
)

__all__ = [
    "DTYPE", "xp", "TorchPosterior", "torch_posterior", "gibbs_model", "model_potential_fn",
    "ChainEnergy", "full_batch_loss", "potential_and_grad",
]

DTYPE = torch.float64
#: The array namespace handed to model losses and observables (array-api-compat's torch).
xp = xp_torch


def as_tensor(value: Any, dtype: torch.dtype = DTYPE) -> Any:
    """A float64 (or ``dtype``) tensor (parameters, weights, l_i(w*)); non-numeric values pass through."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":  # non-numeric constants pass through untouched
        return value
    return torch.tensor(np.array(arr, dtype=np.float64), dtype=dtype)


def as_data_tensor(value: Any, float_dtype: torch.dtype = DTYPE) -> Any:
    """A data or constant array as a tensor that keeps its kind (contract C2 of issue 9).

    Integer arrays (token ids, indices) become ``torch.int64``, so that they index exactly
    (float64 holds integers exactly only up to 2**53) and stay valid indices; floating and
    boolean arrays become ``torch.float64`` as before; non-numeric values pass through.
    """
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        return as_tensor(value, float_dtype)
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"integer data of dtype uint64 holds values above 2**63 - 1 ({int(arr.max())}), "
                         "which torch.int64 cannot represent; store them as int64.")
    return torch.tensor(np.array(arr, dtype=np.int64), dtype=torch.int64)


@dataclass(frozen=True, eq=False)
class TorchPosterior:
    """The posterior's arrays as torch tensors, plus the flat layout: parameters and floating
    data in the run's ``dtype`` (float64 by default), integer data int64, and the weights and
    l_i(w*) float64 so that every loss difference is float64 (docs/math.md §2)."""

    loss_fn: Callable
    data: dict[str, torch.Tensor]
    weights: torch.Tensor            # effective weights c ρ_i, shape (n,)
    centre: dict[str, torch.Tensor]  # centre of the sampled coordinates (a masked parameter's: (k,))
    frozen: dict[str, torch.Tensor]  # frozen parameters at their centre values
    consts: dict[str, Any]
    loss_at_centre: torch.Tensor     # l_i(w*), shape (n,)
    n_beta: float
    gamma: float
    layout: tuple[tuple[str, int, int, tuple[int, ...]], ...]  # (name, start, stop, shape)
    n: int
    dim: int
    dtype: torch.dtype = DTYPE
    masked: dict[str, MaskedParam] = dataclasses.field(default_factory=dict)  # partly sampled parameters

    # ------------------------------------------------------------- flat layout
    def unflatten(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(..., d)`` → ``{name: (..., *shape)}`` views, in the order of ``post.sampled``."""
        lead = z.shape[:-1]
        return {name: z[..., a:b].reshape(lead + shape) for name, a, b, shape in self.layout}

    def flatten(self, params: Mapping[str, Any], lead: tuple[int, ...] = ()) -> torch.Tensor:
        """``{name: (*lead, *shape)}`` → ``(*lead, d)`` in the run's dtype (a copy)."""
        parts = []
        for name, a, b, _ in self.layout:
            v = params[name]
            t = v.detach().to(self.dtype) if torch.is_tensor(v) else torch.tensor(np.asarray(v, dtype=np.float64),
                                                                                 dtype=self.dtype)
            parts.append(t.reshape(lead + (b - a,)))
        return torch.cat(parts, dim=-1)

    @property
    def device(self) -> torch.device:
        return self.weights.device

    def to(self, device) -> "TorchPosterior":
        """The same posterior with every tensor on ``device`` (integer data stay integer)."""
        move = lambda d: {k: v.to(device) if torch.is_tensor(v) else v for k, v in d.items()}  # noqa: E731
        return dataclasses.replace(self, data=move(self.data), weights=self.weights.to(device),
                                   centre=move(self.centre), frozen=move(self.frozen), consts=move(self.consts),
                                   loss_at_centre=self.loss_at_centre.to(device),
                                   masked={k: MaskedParam(m.index.to(device), m.rest.to(device))
                                           for k, m in self.masked.items()})

    def centre_flat(self) -> torch.Tensor:
        return self.flatten(self.centre)

    def full_params(self, sampled: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every parameter from one chain's sampled coordinates (frozen ones and entries at w*)."""
        return assemble(sampled, self.frozen, self.masked, xp)


def torch_posterior(post: GibbsPosterior, dtype: str = "float64", forward_dtype: str | None = None) -> TorchPosterior:
    """``post`` as torch tensors in the precision ``dtype`` ("float64" or "float32"); the
    loss computes in ``forward_dtype`` when given (:mod:`pplpatterning.spec.forward`)."""
    tdtype = getattr(torch, dtype)
    layout, start = [], 0
    for name, shape in post.sampled_shapes.items():
        size = int(np.prod(shape, dtype=np.int64))
        layout.append((name, start, start + size, shape))
        start += size
    return TorchPosterior(
        loss_fn=forward_losses(post.model, forward_dtype)[0],
        data={k: as_data_tensor(v, tdtype) for k, v in post.data.items()},
        weights=as_tensor(post.effective_weights),
        centre={k: as_tensor(v, tdtype) for k, v in post.sampled_centre.items()},
        frozen={k: as_tensor(post.centre[k], tdtype) for k in post.frozen},
        consts={k: as_data_tensor(v, tdtype) for k, v in post.model.consts.items()},
        loss_at_centre=as_tensor(post.loss_at_centre_per_sample),
        n_beta=float(post.n_beta),
        gamma=float(post.gamma),
        layout=tuple(layout),
        n=int(post.n),
        dim=int(start),
        dtype=tdtype,
        masked={k: MaskedParam(torch.as_tensor(m.index), as_tensor(m.rest, tdtype)) for k, m in post.masked.items()},
    )


# ---------------------------------------------------------------- Pyro model
def gibbs_model(tp: TorchPosterior) -> None:
    """Pyro model of p(v) ∝ exp(-nβ L_n^ρ(u*, v) - γ/2 ||v - v*||²).

    Sample sites are improper-flat; the localizing prior and the tempered likelihood enter
    as two factors, so the potential is exactly U(v), with no normalising constant.
    """
    sampled = {
        name: pyro.sample(name, dist.ImproperUniform(constraints.real, torch.Size(), torch.Size(shape)))
        for name, _, _, shape in tp.layout
    }
    pyro.factor("localizing_prior", -localization_energy(sampled, tp.centre, tp.gamma, xp))
    pyro.factor(
        "tempered_loss",
        -tempered_loss_energy(tp.loss_fn, tp.full_params(sampled), tp.data, tp.weights, tp.consts, tp.n_beta, xp),
    )


def model_potential_fn(tp: TorchPosterior) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """U(v) as Pyro computes it from :func:`gibbs_model` (what its NUTS/HMC integrate)."""
    _, potential_fn, _, _ = initialize_model(
        gibbs_model, model_args=(tp,), max_plate_nesting=0, init_strategy=init_to_value(values=dict(tp.centre)),
    )
    return potential_fn


# ------------------------------------------------- vectorised direct potential
def _energy(tp: TorchPosterior, z: torch.Tensor, batch, weights, lstar):
    """U_batch(z) and the batch's (L^ρ, L^ρ - L^ρ(w*)) for ONE chain's flat z."""
    sampled = tp.unflatten(z)
    loss, delta = per_sample_loss_delta(tp.loss_fn, tp.full_params(sampled), batch, weights, lstar, tp.consts, xp)
    U = tp.n_beta * loss + localization_energy(sampled, tp.centre, tp.gamma, xp)
    return U, loss, delta


class ChainEnergy:
    """U, ∇U and the batch's (L^ρ, ΔL^ρ) for a batch of chains ``z: (C, d)`` in one call.

    ``batch_size >= n`` is the full batch (no indices); otherwise ``idx: (C, B)`` are the
    rows of each chain's minibatch (uniform with replacement, drawn by the caller). The
    forward pass is ``vmap`` of the per-chain energy and the gradient one backward pass of
    Σ_c U_c (chains are independent, so ∂/∂z_c of the sum is chain c's own gradient).
    """

    def __init__(self, tp: TorchPosterior, batch_size: int):
        self.tp = tp
        self.batch_size = int(batch_size)
        self.full_batch = self.batch_size >= tp.n
        if self.full_batch:
            data, w, ls = tp.data, tp.weights, tp.loss_at_centre
            self._forward = vmap(lambda z: _energy(tp, z, data, w, ls))
        else:
            def one(z, idx):
                batch = {k: v[idx] for k, v in tp.data.items()}
                return _energy(tp, z, batch, tp.weights[idx], tp.loss_at_centre[idx])

            self._forward = vmap(one)

    def __call__(self, z: torch.Tensor, idx: torch.Tensor | None = None):
        """(U (C,), ∇U (C, d), loss (C,), delta (C,)), all detached."""
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            U, loss, delta = self._forward(zz) if self.full_batch else self._forward(zz, idx)
            (grad,) = torch.autograd.grad(U.sum(), zz)
        return U.detach(), grad, loss.detach(), delta.detach()


def full_batch_loss(tp: TorchPosterior, sampled: Mapping[str, torch.Tensor]):
    """(L_n^ρ(w), L_n^ρ(w) - L_n^ρ(w*)) on the full data, the difference taken per sample."""
    return per_sample_loss_delta(tp.loss_fn, tp.full_params(sampled), tp.data, tp.weights, tp.loss_at_centre,
                                 tp.consts, xp)


def potential_and_grad(post: GibbsPosterior, params, *, route: str = "model"):
    """U(v) and ∇U(v) as float64 NumPy values.

    ``route="model"`` (default) evaluates the Pyro model that NUTS/HMC sample (Pyro's
    potential function of :func:`gibbs_model`); ``route="direct"`` evaluates the vectorised
    direct potential that MALA and the SG samplers use (:class:`ChainEnergy`, full batch).
    Both must equal ``post.potential(params)``.
    """
    tp = torch_posterior(post)
    if route == "model":
        U = model_potential_fn(tp)
        z = {k: torch.tensor(np.asarray(params[k], dtype=np.float64)) for k in post.sampled}
        grads, value = potential_grad(U, z)
        return float(value), {k: grads[k].detach().numpy().copy() for k in post.sampled}
    if route == "direct":
        energy = ChainEnergy(tp, post.n)
        z = tp.flatten({k: np.asarray(params[k], dtype=np.float64) for k in post.sampled})[None]
        value, grad, _, _ = energy(z)
        return float(value[0]), {k: v.numpy().copy() for k, v in tp.unflatten(grad[0]).items()}
    raise ValueError(f"`route` must be 'model' or 'direct', got {route!r}.")
