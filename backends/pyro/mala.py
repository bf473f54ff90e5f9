"""Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996), full batch, all chains at once.

Proposal  w' = w - ε ∇U(w) + √(2ε) ξ,  accepted with probability
    min(1, exp(U(w) - U(w') + log q(w | w') - log q(w' | w))),
    log q(b | a) = -||b - a + ε ∇U(a)||² / (4ε).
During burn-in each chain's ε is adapted by dual averaging (Hoffman & Gelman 2014, with
NumPyro's constants t0 = 10, κ = 0.75, γ = 0.05 and prox centre log(10 ε₀)) toward
``target_accept``; at the last burn-in step it is set to the averaged value and then frozen.
Same conventions as the NumPyro kernel (backends/numpyro/kernels/mala.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .chains import Kernel
from .spec import DTYPE

_T0, _KAPPA, _GAMMA = 10.0, 0.75, 0.05


class MALAState(NamedTuple):
    z: torch.Tensor          # (C, d)
    potential: torch.Tensor  # (C,)
    grad: torch.Tensor       # (C, d)
    step_size: torch.Tensor  # (C,)
    # dual-averaging state, per chain: x_t, x_avg, g_avg (the count t is the step index)
    x_t: torch.Tensor
    x_avg: torch.Tensor
    g_avg: torch.Tensor
    prox_center: torch.Tensor


class MALA(Kernel):
    stat_names = ("accept_prob", "step_size", "grad_norm")

    def __init__(self, energy, step_size, batch_size, num_burnin, target_accept=0.574):
        super().__init__(energy, step_size if step_size is not None else 1e-3, batch_size, num_burnin)
        if not 0.0 < target_accept < 1.0:
            raise ValueError(f"`target_accept` must lie in (0, 1), got {target_accept!r}.")
        self.target_accept = float(target_accept)

    def randomness(self, gen, steps, chains, dim):
        out = super().randomness(gen, steps, chains, dim)
        out["uniform"] = torch.rand((steps, chains), generator=gen, dtype=DTYPE)
        return out

    def init(self, z0, gen):
        U, grad, _, _ = self.energy(z0)
        C = z0.shape[0]
        eps = torch.full((C,), self.step_size, dtype=DTYPE)
        zeros = torch.zeros(C, dtype=DTYPE)
        return MALAState(z0, U, grad, eps, zeros, zeros, zeros, torch.log(10.0 * eps))

    def step(self, state, rnd, t):
        eps = state.step_size
        e = eps[:, None]
        prop = state.z - e * state.grad + torch.sqrt(2.0 * e) * rnd["noise"]
        U_new, grad_new, _, _ = self.energy(prop)
        fwd = ((prop - state.z + e * state.grad) ** 2).sum(-1)   # for log q(prop | z)
        bwd = ((state.z - prop + e * grad_new) ** 2).sum(-1)     # for log q(z | prop)
        log_ratio = state.potential - U_new + (fwd - bwd) / (4.0 * eps)
        log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio, torch.full_like(log_ratio, -math.inf))
        accept_prob = torch.clamp(torch.exp(log_ratio), max=1.0)
        accept = rnd["uniform"] < accept_prob
        a = accept[:, None]
        z = torch.where(a, prop, state.z)
        grad = torch.where(a, grad_new, state.grad)
        U = torch.where(accept, U_new, state.potential)

        x_t, x_avg, g_avg = state.x_t, state.x_avg, state.g_avg
        if t < self.num_burnin:  # dual averaging of log ε, burn-in only
            it = t + 1
            g_avg = (1.0 - 1.0 / (it + _T0)) * g_avg + (self.target_accept - accept_prob) / (it + _T0)
            x_t = state.prox_center - math.sqrt(it) / _GAMMA * g_avg
            w = it ** (-_KAPPA)
            x_avg = (1.0 - w) * x_avg + w * x_t
            eps = torch.exp(x_avg if t == self.num_burnin - 1 else x_t)
        new = MALAState(z, U, grad, eps, x_t, x_avg, g_avg, state.prox_center)
        return new, {"accept_prob": accept_prob, "step_size": eps,
                     "grad_norm": torch.linalg.vector_norm(grad, dim=-1)}
