"""Stochastic-gradient Nosé–Hoover thermostat (Ding et al. 2014), all chains at once.

    p ← p - ε ξ p - ε ∇U_batch(w) + √(2 A ε) η,   η ~ N(0, I)
    w ← w + ε p
    ξ ← ξ + ε (pᵀp / d - 1)

The thermostat ξ (one per chain) starts at the diffusion A and p at N(0, I) (drawn from
the run's generator before the first step); it is recorded as ``thermostat``. Same
conventions as the NumPyro kernel (backends/numpyro/kernels/sgnht.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .chains import Kernel
from .spec import DTYPE


class SGNHTState(NamedTuple):
    z: torch.Tensor           # (C, d)
    p: torch.Tensor           # (C, d)
    thermostat: torch.Tensor  # (C,)


class SGNHT(Kernel):
    stat_names = ("minibatch_loss", "minibatch_loss_delta", "grad_norm", "thermostat")

    def __init__(self, energy, step_size, batch_size, num_burnin, diffusion=0.01):
        super().__init__(energy, step_size, batch_size, num_burnin)
        if not diffusion > 0:
            raise ValueError(f"`diffusion` must be positive, got {diffusion!r}.")
        self.diffusion = float(diffusion)

    def init(self, z0, gen):
        p = torch.randn(z0.shape, generator=gen, dtype=DTYPE)
        xi = torch.full(z0.shape[:1], self.diffusion, dtype=DTYPE)
        return SGNHTState(z0, p, xi)

    def step(self, state, rnd, t):
        _, grad, loss, delta = self.energy(state.z, rnd.get("idx"))
        eps, A, xi = self.step_size, self.diffusion, state.thermostat
        p = state.p - eps * xi[:, None] * state.p - eps * grad + math.sqrt(2.0 * A * eps) * rnd["noise"]
        z = state.z + eps * p
        d = p.shape[-1]
        xi = xi + eps * ((p * p).sum(dim=-1) / d - 1.0)
        return SGNHTState(z, p, xi), {"minibatch_loss": loss, "minibatch_loss_delta": delta,
                                      "grad_norm": torch.linalg.vector_norm(grad, dim=-1), "thermostat": xi}
