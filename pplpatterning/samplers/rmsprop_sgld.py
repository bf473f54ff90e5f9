"""RMSProp-preconditioned SGLD (pSGLD; Li, Chen, Carlson & Carin 2016; docs/math.md §8):

    V ← α V + (1 - α) g ⊙ g,      G = 1 / (√V + eps)
    w ← w - (ε/2) G ⊙ g + √(ε G) ⊙ ξ,   ξ ~ N(0, I)

with g = ∇U_batch(w) = nβ ∇L_batch^ρ + γ (w - w*). The Γ(w) correction term of Li et al. is
dropped (as in their experiments and in devinterp); it vanishes as α → 1. RMSProp-SGLD was
the most faithful LLC sampler on deep linear networks in Hitchcock & Hoogland 2025
(arXiv 2507.21449).

V starts at 1, not 0: chains start at the centre w*, where the gradient vanishes, and V = 0
there would make the first preconditioned steps unboundedly large. With V₀ = 1 the first
steps are plain SGLD steps and V forgets V₀ with time constant 1/(1-α).

``adapt="burnin"`` (default) adapts V during burn-in only and then freezes it: the kept
draws come from SGLD with a constant diagonal preconditioner, whose stationary law is the
posterior up to O(ε). ``adapt="always"`` keeps adapting (devinterp's convention); when V's
memory 1/(1-α) is long compared with the chain's mixing time, V tracks the position and the
dropped Γ term biases the draws outward (measured: +10–30 % on a 2-d Gaussian).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from pplpatterning.samplers.langevin import langevin_step
from pplpatterning.samplers.rule import Rule, grad_norm
from pplpatterning.samplers.sgld import MinibatchInfo

__all__ = ["RMSPropSGLD", "RMSPropSGLDState"]


class RMSPropSGLDState(NamedTuple):
    z: Any
    v: Any


@dataclass(frozen=True)
class RMSPropSGLD(Rule):
    step_size: float
    num_burnin: int
    alpha: float = 0.99
    eps: float = 1e-5
    adapt: str = "burnin"

    Info = MinibatchInfo

    def init(self, z, energy, noise, xp) -> RMSPropSGLDState:
        return RMSPropSGLDState(z, xp.ones_like(z))

    def step(self, state: RMSPropSGLDState, energy, noise, t, xp):
        e = energy(state.z)
        g = e.grad
        adapting = (t < self.num_burnin) | (self.adapt == "always")
        v = xp.where(adapting, self.alpha * state.v + (1 - self.alpha) * g * g, state.v)
        G = 1.0 / (xp.sqrt(v) + self.eps)
        z = langevin_step(state.z, g, noise["noise"], self.step_size, xp, precond=G)
        return RMSPropSGLDState(z, v), MinibatchInfo(e.loss, e.loss_delta, grad_norm(g, xp))
