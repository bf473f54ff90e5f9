"""The vectorised chain driver for the update rules of pplpatterning.samplers (MALA and the
stochastic-gradient samplers).

All chains advance together: one step is the rule's update of a ``(C, d)`` float64 tensor,
with the energy and its gradient from :class:`~.spec.ChainEnergy`; the Python loop runs
over steps only. Randomness comes from ONE ``torch.Generator`` seeded with
:func:`torch_seed` of ``settings.seed``: first the rule's ``init_streams`` (e.g. SGNHT's
momentum), then a block of steps at a time, in this order: minibatch indices (SG rules, when
the batch is smaller than n), then each of the rule's ``streams`` (``"noise"`` standard
normals (steps, C, d), ``"uniform"`` U(0, 1) (steps, C)). The same seed reproduces the
same trace exactly.

Step ``t`` (0-based) is burn-in while ``t < num_burnin``; after it, every ``thinning``-th
step is kept (post-burn-in steps ``thinning, 2·thinning, ...``, counted from 1 — NumPyro's
``MCMC(thinning=...)`` convention). A kept draw carries the position after its step and the
statistics the kernel reports for that step.

Failure mid-run (the NumPyro backend's policy, backends/numpyro/driver.py): the loop stops
when EVERY chain's position is NaN/inf (checked once per block; a single diverged chain
keeps its NaN draws in the trace, where ``diagnose()`` flags them), on ``KeyboardInterrupt``,
or on an exception after some draws were kept; :class:`ChainRun` then holds the draws
completed so far and says why it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pplpatterning.samplers.rule import Energy

from .spec import DTYPE, ChainEnergy, xp

__all__ = ["ChainRun", "run_chains", "block_size", "torch_seed", "draw_block", "draw_stream"]


def torch_seed(seed: int | np.random.SeedSequence) -> int:
    """The seed for a torch generator, derived from ALL bits of ``seed``.

    torch's CPU generator (mt19937) keeps only the low 32 bits of the integer it is seeded
    with, so seeding it with ``seed`` itself makes s and s + 2**32 give identical draws. The
    seed is therefore hashed first: the first 64-bit word of
    ``numpy.random.SeedSequence(seed).generate_state`` (SeedSequence mixes every bit of an
    arbitrary non-negative integer). Two different seeds then collide only by chance
    (probability 2**-32), never systematically. A ``SeedSequence`` (e.g. one of
    ``SeedSequence(seed).spawn(n)``, one per chain) is used as it is.
    """
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    return int(seq.generate_state(1, np.uint64)[0])


def draw_stream(name: str, gen: torch.Generator, steps: int, chains: int, dim: int) -> torch.Tensor:
    """``steps`` steps' worth of the random stream ``name`` (leading dim ``steps``)."""
    if name == "noise":
        return torch.randn((steps, chains, dim), generator=gen, dtype=DTYPE)
    if name == "uniform":
        return torch.rand((steps, chains), generator=gen, dtype=DTYPE)
    raise ValueError(f"Unknown random stream {name!r} requested by the sampler's rule.")


def draw_block(rule, energy: ChainEnergy, gen: torch.Generator, steps: int, chains: int, dim: int):
    """The random numbers of ``steps`` consecutive steps: minibatch indices (``"idx"``), then
    the rule's streams."""
    out = {}
    if rule.minibatch and not energy.full_batch:
        out["idx"] = torch.randint(0, energy.tp.n, (steps, chains, energy.batch_size), generator=gen)
    for name in rule.streams:
        out[name] = draw_stream(name, gen, steps, chains, dim)
    return out


@dataclass
class ChainRun:
    """Kept draws ``z: (C, D, d)`` and per-draw ``stats``; ``num_done`` ≤ D are complete.

    ``extra["state"]`` is the rule's final state (e.g. RMSProp's frozen V), for checks.
    """

    z: torch.Tensor
    stats: dict[str, torch.Tensor]
    num_done: int
    steps_done: int
    stop_reason: str | None = None
    extra: dict = field(default_factory=dict)


def block_size(chains: int, dim: int, batch_size: int, total: int) -> int:
    """Steps per block of pre-drawn randomness: at most 256 steps and ~8 MB of noise and indices."""
    per_step = chains * (dim + batch_size)
    return int(max(1, min(total, 256, 1_000_000 // max(per_step, 1))))


def run_chains(rule, energy: ChainEnergy, z0: torch.Tensor, *, num_burnin: int, num_draws: int, thinning: int,
               gen: torch.Generator, progress_bar: bool = True, desc: str = "") -> ChainRun:
    """Run all chains of the update rule ``rule`` from ``z0: (C, d)``; see the module docstring."""
    C, d = z0.shape
    D = num_draws
    T = num_burnin + num_draws * thinning
    z_buf = torch.empty((C, D, d), dtype=DTYPE)
    stat_buf = {name: None for name in rule.Info._fields}
    K = block_size(C, d, energy.batch_size if not energy.full_batch else 0, T)
    bar = None
    if progress_bar:
        bar = tqdm(total=T, desc=desc or "sampling", unit="step", leave=True, dynamic_ncols=True)

    with torch.no_grad():
        init_noise = {name: draw_stream(name, gen, 1, C, d)[0] for name in rule.init_streams}
        state = rule.init(z0.clone(), lambda z: Energy(*energy(z)), init_noise, xp)
    t = 0
    done = 0
    reason = None
    try:
        with torch.no_grad():
            while t < T:
                k = min(K, T - t)
                rnd = draw_block(rule, energy, gen, k, C, d)
                for j in range(k):
                    idx = rnd["idx"][j] if "idx" in rnd else None
                    state, info = rule.step(state, lambda z, idx=idx: Energy(*energy(z, idx)),
                                            {name: rnd[name][j] for name in rule.streams}, torch.tensor(t), xp)
                    t += 1
                    s = t - num_burnin
                    if s > 0 and s % thinning == 0:
                        i = s // thinning - 1
                        z_buf[:, i] = state.z
                        for name, value in info._asdict().items():
                            buf = stat_buf[name]
                            if buf is None:
                                buf = stat_buf[name] = torch.empty((C, D), dtype=value.dtype)
                            buf[:, i] = value
                        done = i + 1
                if bar is not None:
                    bar.update(k)
                finite = torch.isfinite(state.z).all(dim=-1)
                if not bool(finite.any()):
                    phase = "burn-in" if t <= num_burnin else "sampling"
                    reason = (f"every chain's parameters became NaN or infinite by step {t} of {T} ({phase}); "
                              "reduce the step size or localize more strongly (larger γ)")
                    break
    except KeyboardInterrupt:
        if done == 0:
            raise
        reason = f"interrupted (KeyboardInterrupt) at step {t} of {T}"
    except Exception as exc:  # keep the completed draws and say what happened
        if done == 0:
            raise
        reason = f"{type(exc).__name__} at step {t} of {T}: {exc}"
    finally:
        if bar is not None:
            bar.close()
    stats_out = {}
    for name in rule.Info._fields:
        buf = stat_buf[name]
        stats_out[name] = buf if buf is not None else torch.full((C, D), math.nan, dtype=DTYPE)
    return ChainRun(z=z_buf, stats=stats_out, num_done=done, steps_done=t, stop_reason=reason,
                    extra={"state": state})
