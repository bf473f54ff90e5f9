"""What every update rule shares: the energy a backend hands it, and the rule contract.

An update rule is written once, against the array API (``xp`` is NumPy, ``jax.numpy`` or
array-api-compat's torch), over a flat layout: positions are arrays of shape (chains, d)
(or (d,) under ``jax.vmap``; every rule works over the last axis). Following BlackJAX's
State/Info split, a rule has

- ``init(z, energy, noise, xp) -> state``: the state before the first step (``noise`` holds
  the arrays named in ``init_streams``);
- ``step(state, energy, noise, t, xp) -> (state, info)``: one transition at step ``t``
  (0-based, an integer array; burn-in while t < num_burnin). ``info`` is a NamedTuple whose
  fields are exactly the sample_stats names recorded for a kept draw.

``energy(z) -> Energy`` evaluates U(w) = nβ L^ρ(w) + γ/2 ||w - w*||² and its gradient at
positions ``z`` (chains, d) (docs/math.md §1), on the minibatch the backend drew for this
step when the rule is a stochastic-gradient one (``minibatch = True``). ``noise`` maps each
name in ``streams`` to this step's random numbers: ``"noise"`` standard normals like z,
``"uniform"`` U(0, 1) per chain. The backends keep only autodiff (the energy), random
numbers, device placement and the loop.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

__all__ = ["Energy", "Rule", "grad_norm", "scalar_sqrt"]


class Energy(NamedTuple):
    """U(z) (chains,), ∇U(z) (chains, d), and the (mini)batch loss L^ρ(z) and its difference
    L^ρ(z) - L^ρ(w*) (chains,), as a backend's energy function returns them."""

    potential: Any
    grad: Any
    loss: Any
    loss_delta: Any


class Rule:
    """Defaults for a rule written as a frozen dataclass: a stochastic-gradient rule that
    needs one standard-normal array per step and nothing at init. Subclasses set ``Info``
    and write ``init``/``step``; :meth:`from_settings` fills the dataclass fields named
    ``step_size`` and ``num_burnin`` from the settings and the others from its options."""

    minibatch = True
    streams: tuple[str, ...] = ("noise",)
    init_streams: tuple[str, ...] = ()
    Info: type

    @classmethod
    def from_settings(cls, settings):
        names = {f.name for f in dataclasses.fields(cls)}
        common = {k: getattr(settings, k) for k in ("step_size", "num_burnin") if k in names}
        return cls(**common, **dict(settings.options))


def grad_norm(grad, xp):
    """||∇U|| per chain (the last axis), recorded as ``grad_norm``."""
    return xp.linalg.vector_norm(grad, axis=-1)


def scalar_sqrt(h, xp):
    """√h: ``math.sqrt`` for a Python number (a float64 constant; no array is made), else
    ``xp.sqrt``."""
    return math.sqrt(h) if isinstance(h, (int, float)) else xp.sqrt(h)
