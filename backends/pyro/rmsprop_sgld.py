"""RMSProp-preconditioned SGLD (pSGLD; Li, Chen, Carlson & Carin 2016), all chains at once.

    V ← α V + (1 - α) g ⊙ g,      G = 1 / (√V + eps)
    w ← w - (ε/2) G ⊙ g + √(ε G) ⊙ ξ,   ξ ~ N(0, I)

with g = ∇U_batch(w) = nβ ∇L_batch^ρ + γ (w - w*); the Γ(w) correction term is dropped.
Same conventions as the NumPyro kernel (backends/numpyro/kernels/rmsprop_sgld.py): V starts
at 1 (the first steps are plain SGLD steps at the centre, where g vanishes), and
``adapt="burnin"`` (default) adapts V during burn-in only and then freezes it, so the kept
draws come from SGLD with a constant diagonal preconditioner; ``adapt="always"`` keeps
adapting (devinterp's convention).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .chains import Kernel


class RMSPropSGLDState(NamedTuple):
    z: torch.Tensor  # (C, d)
    v: torch.Tensor  # (C, d)


class RMSPropSGLD(Kernel):
    stat_names = ("minibatch_loss", "minibatch_loss_delta", "grad_norm")

    def __init__(self, energy, step_size, batch_size, num_burnin, alpha=0.99, eps=1e-5, adapt="burnin"):
        super().__init__(energy, step_size, batch_size, num_burnin)
        if adapt not in ("burnin", "always"):
            raise ValueError(f"`adapt` must be 'burnin' or 'always', got {adapt!r}.")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"`alpha` must lie in [0, 1), got {alpha!r}.")
        if not eps > 0:
            raise ValueError(f"`eps` must be positive, got {eps!r}.")
        self.adapt, self.alpha, self.eps = adapt, float(alpha), float(eps)

    def init(self, z0, gen):
        return RMSPropSGLDState(z0, torch.ones_like(z0))

    def step(self, state, rnd, t):
        _, grad, loss, delta = self.energy(state.z, rnd.get("idx"))
        v = state.v
        if self.adapt == "always" or t < self.num_burnin:
            a = self.alpha
            v = a * v + (1.0 - a) * grad * grad
        # (after burn-in with adapt="burnin", V is frozen: α = 1 leaves it unchanged)
        G = 1.0 / (torch.sqrt(v) + self.eps)
        eps = self.step_size
        z = state.z - (0.5 * eps) * G * grad + torch.sqrt(eps * G) * rnd["noise"]
        return RMSPropSGLDState(z, v), {"minibatch_loss": loss, "minibatch_loss_delta": delta,
                                        "grad_norm": torch.linalg.vector_norm(grad, dim=-1)}
