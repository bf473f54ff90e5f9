"""Stochastic-gradient Nosé–Hoover thermostat (Ding, Fang, Babbush, Chen, Skeel & Neven 2014;
docs/math.md §8):

    p ← p - ε ξ p - ε ∇U_batch(w) + √(2 A ε) η,   η ~ N(0, I)
    w ← w + ε p
    ξ ← ξ + ε (pᵀp / d - 1)

The thermostat ξ (one per chain) adapts to the unknown minibatch-gradient noise so that the
kinetic energy per dimension stays at 1/2; it starts at the diffusion A and p at N(0, I)
(the ``init_streams`` noise). devinterp's SGNHT never updates ξ or p; this one does. The
thermostat is recorded as ``thermostat``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from pplpatterning.samplers.rule import Rule, grad_norm, scalar_sqrt

__all__ = ["SGNHT", "SGNHTState", "SGNHTInfo"]


class SGNHTState(NamedTuple):
    z: Any
    p: Any
    thermostat: Any


class SGNHTInfo(NamedTuple):
    minibatch_loss: Any
    minibatch_loss_delta: Any
    grad_norm: Any
    thermostat: Any


@dataclass(frozen=True)
class SGNHT(Rule):
    step_size: float
    diffusion: float = 0.01

    init_streams = ("noise",)
    Info = SGNHTInfo

    def init(self, z, energy, noise, xp) -> SGNHTState:
        return SGNHTState(z, noise["noise"], xp.full(z.shape[:-1], self.diffusion, dtype=z.dtype))

    def step(self, state: SGNHTState, energy, noise, t, xp):
        e = energy(state.z)
        eps, xi = self.step_size, state.thermostat
        kick = scalar_sqrt(2 * self.diffusion * eps, xp)
        p = state.p - eps * xi[..., None] * state.p - eps * e.grad + kick * noise["noise"]
        z = state.z + eps * p
        xi = xi + eps * (xp.sum(p * p, axis=-1) / p.shape[-1] - 1.0)
        return SGNHTState(z, p, xi), SGNHTInfo(e.loss, e.loss_delta, grad_norm(e.grad, xp), xi)
