"""Step-size jitter for HMC with a fixed number of leapfrog steps (Neal 2011, "MCMC using
Hamiltonian dynamics", §5.4.2.2; docs/math.md §8.6).

With a fixed number of steps, a trajectory that happens to span about one period of some
direction of the target returns near its start, and the chain barely moves there
(resonance). After burn-in each transition therefore integrates with ε · (1 + j (2u - 1)),
u ~ U(0, 1), i.e. ε scaled by U(1 - j, 1 + j); burn-in adaptation is untouched. Detailed
balance holds for every fixed ε, so the mixture over ε leaves the target invariant. The
HMC kernels themselves are the frameworks' own; both backends scale ε with this one rule.
"""

from __future__ import annotations

__all__ = ["jittered_step_size"]


def jittered_step_size(step_size, u, jitter):
    """ε (1 + j (2u - 1)) for u in [0, 1): a Python number or an array (any namespace)."""
    return step_size * (1.0 + jitter * (2.0 * u - 1.0))
