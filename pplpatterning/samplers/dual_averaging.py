"""Dual averaging of log ε toward a target acceptance rate (Nesterov 2009; Hoffman & Gelman
2014, "The No-U-Turn Sampler", §3.2.1; docs/math.md §8).

With g_t = δ - a_t (target minus this step's acceptance probability), t = 1, 2, ...:

    ḡ_t  = (1 - 1/(t + t₀)) ḡ_{t-1} + g_t / (t + t₀)
    x_t  = μ - (√t / γ) ḡ_t,                       μ = log(10 ε₀)
    x̄_t  = (1 - t^(-κ)) x̄_{t-1} + t^(-κ) x_t

with t₀ = 10, κ = 0.75, γ = 0.05 (NumPyro's and Stan's constants). During adaptation the
step size is exp(x_t); at the end of adaptation it is frozen at exp(x̄_t). Written once
against the array API: every quantity is an array of shape (chains,) and ``t`` an integer
array, so the same code runs in NumPy, JAX (traced) and torch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["DualAveraging", "T0", "KAPPA", "GAMMA", "init", "update"]

T0, KAPPA, GAMMA = 10, 0.75, 0.05


class DualAveraging(NamedTuple):
    """Per-chain dual-averaging state: the iterate x_t, its average x̄_t, the averaged
    gradient ḡ_t and the prox centre μ = log(10 ε₀)."""

    x: Any
    x_avg: Any
    g_avg: Any
    prox_center: Any


def init(step_size, xp) -> DualAveraging:
    """The state before the first update, for initial step sizes ``step_size`` (chains,)."""
    zeros = xp.zeros_like(step_size)
    return DualAveraging(zeros, zeros, zeros, xp.log(10.0 * step_size))


def update(state: DualAveraging, g, t) -> DualAveraging:
    """One update with g = target - accept_prob (chains,) at count ``t`` ≥ 1, an array in
    g's floating dtype (torch would divide integers in float32)."""
    g_avg = (1 - 1 / (t + T0)) * state.g_avg + g / (t + T0)
    x = state.prox_center - (t ** 0.5) / GAMMA * g_avg
    weight = t ** (-KAPPA)
    x_avg = (1 - weight) * state.x_avg + weight * x
    return DualAveraging(x, x_avg, g_avg, state.prox_center)
