"""The (preconditioned) Langevin integrator: one Euler–Maruyama step of the overdamped
Langevin diffusion dw = -½ G ∇U dt + √G dW (docs/math.md §8):

    w ← w - (h/2) G ∇U(w) + √(h G) ξ,   ξ ~ N(0, I).

SGLD is this step with h = ε, G = I on a minibatch gradient (Welling & Teh 2011); RMSProp-
SGLD with G = 1/(√V + eps) (Li et al. 2016); MALA proposes with h = 2ε, G = I (Roberts &
Tweedie 1996). ``h`` is a Python number or an array broadcasting against ``z``.
"""

from __future__ import annotations

from pplpatterning.samplers.rule import scalar_sqrt

__all__ = ["langevin_step"]


def langevin_step(z, grad, noise, h, xp, precond=None):
    """w - (h/2) G ∇U + √(h G) ξ; ``precond`` G (like z) or None for G = I."""
    if precond is None:
        return z - (0.5 * h) * grad + scalar_sqrt(h, xp) * noise
    return z - (0.5 * h) * precond * grad + xp.sqrt(h * precond) * noise
