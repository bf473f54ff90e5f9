"""Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996), full batch
(docs/math.md §8).

Proposal  w' = w - ε ∇U(w) + √(2ε) ξ  (the Langevin step with h = 2ε), accepted with
probability min(1, exp(U(w) - U(w') + log q(w | w') - log q(w' | w))),
    log q(b | a) = -||b - a + ε ∇U(a)||² / (4ε).
During burn-in each chain's ε is adapted by dual averaging toward ``target_accept``
(:mod:`.dual_averaging`); at the last burn-in step it is set to the averaged value and then
frozen. The state keeps the full-batch L^ρ and ΔL^ρ at the current position (MALA computes
them for the acceptance test), so a kept draw's record reuses them instead of a second
forward pass (:data:`MALAState.loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from pplpatterning.samplers import dual_averaging
from pplpatterning.samplers.langevin import langevin_step
from pplpatterning.samplers.rule import Rule, grad_norm

__all__ = ["MALA", "MALAState", "MALAInfo", "DEFAULT_STEP_SIZE"]

#: The initial ε when none is given (dual averaging moves it during burn-in).
DEFAULT_STEP_SIZE = 1e-3


class MALAState(NamedTuple):
    z: Any
    potential: Any   # U at z (chains,)
    grad: Any        # ∇U at z
    step_size: Any   # ε per chain
    adaptation: dual_averaging.DualAveraging
    loss: Any        # full-batch L^ρ at z (chains,): reused by the kept draw's record
    loss_delta: Any  # full-batch L^ρ(z) - L^ρ(w*)


class MALAInfo(NamedTuple):
    accept_prob: Any
    step_size: Any
    grad_norm: Any


@dataclass(frozen=True)
class MALA(Rule):
    step_size: float
    num_burnin: int
    target_accept: float = 0.574

    minibatch = False
    streams = ("noise", "uniform")
    Info = MALAInfo

    @classmethod
    def from_settings(cls, settings) -> MALA:
        eps = settings.step_size if settings.step_size is not None else DEFAULT_STEP_SIZE
        return cls(eps, settings.num_burnin, **dict(settings.options))

    def init(self, z, energy, noise, xp) -> MALAState:
        e = energy(z)
        eps = xp.full(z.shape[:-1], self.step_size, dtype=z.dtype)
        return MALAState(z, e.potential, e.grad, eps, dual_averaging.init(eps, xp), e.loss, e.loss_delta)

    def step(self, state: MALAState, energy, noise, t, xp):
        eps = state.step_size
        e = eps[..., None]
        prop = langevin_step(state.z, state.grad, noise["noise"], 2.0 * e, xp)
        new = energy(prop)
        fwd = xp.sum((prop - state.z + e * state.grad) ** 2, axis=-1)  # -4ε log q(prop | z)
        bwd = xp.sum((state.z - prop + e * new.grad) ** 2, axis=-1)    # -4ε log q(z | prop)
        log_ratio = state.potential - new.potential - bwd / (4 * eps) + fwd / (4 * eps)
        log_ratio = xp.where(xp.isfinite(log_ratio), log_ratio, -math.inf)
        accept_prob = xp.minimum(xp.exp(log_ratio), xp.ones_like(log_ratio))
        accept = noise["uniform"] < accept_prob
        z = xp.where(accept[..., None], prop, state.z)
        grad = xp.where(accept[..., None], new.grad, state.grad)
        potential = xp.where(accept, new.potential, state.potential)
        loss = xp.where(accept, new.loss, state.loss)
        loss_delta = xp.where(accept, new.loss_delta, state.loss_delta)

        in_burnin = t < self.num_burnin
        count = xp.astype(t, eps.dtype) + 1.0  # the adaptation's 1-based count, exact in float64
        adapted = dual_averaging.update(state.adaptation, self.target_accept - accept_prob, count)
        log_eps = xp.where(t == self.num_burnin - 1, adapted.x_avg, adapted.x)
        # ε and its adaptation keep the positions' dtype (a float32 run stays float32; the
        # acceptance ratio itself is float64 whenever the potential is)
        eps = xp.where(in_burnin, xp.astype(xp.exp(log_eps), eps.dtype), eps)
        adaptation = dual_averaging.DualAveraging(
            *(xp.where(in_burnin, xp.astype(a, b.dtype), b) for a, b in zip(adapted, state.adaptation)))
        return (MALAState(z, potential, grad, eps, adaptation, loss, loss_delta),
                MALAInfo(accept_prob, eps, grad_norm(grad, xp)))
