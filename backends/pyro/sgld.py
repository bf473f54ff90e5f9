"""Stochastic-gradient Langevin dynamics (Welling & Teh 2011; MATH.md §8), all chains at once.

    w ← w - (ε/2) [nβ ∇L_batch^ρ(w) + γ (w - w*)] + √ε ξ,   ξ ~ N(0, I)

The minibatch loss and loss difference recorded with each state are those of the batch
used for the step, evaluated at the pre-step position (as the NumPyro kernel does).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .chains import Kernel


class SGLDState(NamedTuple):
    z: torch.Tensor  # (C, d)


class SGLD(Kernel):
    stat_names = ("minibatch_loss", "minibatch_loss_delta", "grad_norm")

    def init(self, z0, gen):
        return SGLDState(z0)

    def step(self, state, rnd, t):
        _, grad, loss, delta = self.energy(state.z, rnd.get("idx"))
        eps = self.step_size
        z = state.z - (0.5 * eps) * grad + math.sqrt(eps) * rnd["noise"]
        return SGLDState(z), {"minibatch_loss": loss, "minibatch_loss_delta": delta,
                              "grad_norm": torch.linalg.vector_norm(grad, dim=-1)}
