"""Stochastic-gradient Langevin dynamics (Welling & Teh 2011; docs/math.md §8):

    w ← w - (ε/2) [nβ ∇L_batch^ρ(w) + γ (w - w*)] + √ε ξ,   ξ ~ N(0, I).

The minibatch loss and its difference recorded with a step are those of the batch used for
that step, at the pre-step position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from pplpatterning.samplers.langevin import langevin_step
from pplpatterning.samplers.rule import Rule, grad_norm

__all__ = ["SGLD", "SGLDState", "MinibatchInfo"]


class SGLDState(NamedTuple):
    z: Any


class MinibatchInfo(NamedTuple):
    """What a stochastic-gradient step records: the minibatch loss L_batch^ρ, its difference
    from the centre's, and ||∇U_batch||."""

    minibatch_loss: Any
    minibatch_loss_delta: Any
    grad_norm: Any


@dataclass(frozen=True)
class SGLD(Rule):
    step_size: float

    Info = MinibatchInfo

    def init(self, z, energy, noise, xp) -> SGLDState:
        return SGLDState(z)

    def step(self, state: SGLDState, energy, noise, t, xp):
        e = energy(state.z)
        z = langevin_step(state.z, e.grad, noise["noise"], self.step_size, xp)
        return SGLDState(z), MinibatchInfo(e.loss, e.loss_delta, grad_norm(e.grad, xp))
