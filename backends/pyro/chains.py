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
when EVERY chain's position is NaN/inf (checked after the block that passes each
:data:`CHECK_EVERY` steps, and at the end; a single diverged chain
keeps its NaN draws in the trace, where ``diagnose()`` flags them), on ``KeyboardInterrupt``,
or on an exception after some draws were kept; :class:`ChainRun` then holds the draws
completed so far and says why it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from pplpatterning.samplers.rule import Energy

from .spec import DTYPE, ChainEnergy, xp

__all__ = ["ChainRun", "run_chains", "run_block", "DrawBuffer", "block_size", "torch_seed", "draw_block",
           "draw_stream"]


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


def draw_stream(name: str, gen: torch.Generator, steps: int, chains: int, dim: int,
                dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """``steps`` steps' worth of the random stream ``name`` (leading dim ``steps``) in ``dtype``
    (the run's: float64, or float32)."""
    if name == "noise":
        return torch.randn((steps, chains, dim), generator=gen, dtype=dtype, device=gen.device)
    if name == "uniform":
        return torch.rand((steps, chains), generator=gen, dtype=dtype, device=gen.device)
    raise ValueError(f"Unknown random stream {name!r} requested by the sampler's rule.")


def draw_block(rule, energy: ChainEnergy, gen: torch.Generator, steps: int, chains: int, dim: int):
    """The random numbers of ``steps`` consecutive steps: minibatch indices (``"idx"``), then
    the rule's streams."""
    out = {}
    if rule.minibatch and not energy.full_batch:
        out["idx"] = torch.randint(0, energy.tp.n, (steps, chains, energy.batch_size), generator=gen,
                                   device=gen.device)
    for name in rule.streams:
        out[name] = draw_stream(name, gen, steps, chains, dim, energy.tp.dtype)
    return out


@dataclass
class ChainRun:
    """Kept draws ``z: (C, D, d)`` (None when they were not kept) and per-draw ``stats``;
    ``num_done`` ≤ D are complete.

    ``extra["state"]`` is the rule's final state (e.g. RMSProp's frozen V), for checks.
    """

    z: torch.Tensor | None
    stats: dict[str, torch.Tensor]
    num_done: int
    steps_done: int
    stop_reason: str | None = None
    extra: dict = field(default_factory=dict)


#: Steps between the checks that every chain's parameters became NaN/inf (and at the end).
CHECK_EVERY = 32


def block_size(chains: int, dim: int, batch_size: int, total: int) -> int:
    """Steps per block of pre-drawn randomness: at most 256 steps and ~8 MB of noise and indices."""
    per_step = chains * (dim + batch_size)
    return int(max(1, min(total, 256, 1_000_000 // max(per_step, 1))))


class DrawBuffer:
    """The kept draws ``z: (C, ⌈D / keep_draws⌉, d)``, every ``keep_draws``-th (None when
    ``keep_draws`` is 0/False: only the statistics are stored) and per-draw statistics (C, D), filled as draws complete; ``done`` counts the
    completed draws. A ``recorder`` (.recording.Recorder) evaluates each kept draw first."""

    def __init__(self, C: int, D: int, d: int, names: tuple[str, ...], keep_draws: int = 1, recorder=None,
                 dtype: torch.dtype = DTYPE, device: torch.device | str = "cpu"):
        self.shape = (C, D)
        self.stride = int(keep_draws)
        self.z = torch.empty((C, -(-D // self.stride), d), dtype=dtype, device=device) if self.stride else None
        self.device = device
        self.names = names
        self.recorder = recorder
        self._stats: dict[str, torch.Tensor] = {}
        self.done = 0

    def keep(self, i: int, z: torch.Tensor, info, state=None) -> None:
        if self.recorder is not None:  # first: a draw whose evaluation raises is not completed
            self.recorder.keep(slice(None), i, z, state)
        if self.z is not None and i % self.stride == 0:
            self.z[:, i // self.stride] = z
        for name, value in info._asdict().items():
            if name not in self._stats:  # statistics: float64 whatever the run's dtype
                self._stats[name] = torch.empty(self.shape, dtype=DTYPE if value.is_floating_point() else value.dtype,
                                                device=self.device)
            self._stats[name][:, i] = value
        self.done = i + 1

    def stats(self) -> dict[str, torch.Tensor]:
        """Every statistic (NaN where none was ever recorded)."""
        return {name: self._stats.get(name, torch.full(self.shape, math.nan, dtype=DTYPE, device=self.device))
                for name in self.names}


def run_block(rule, energy: ChainEnergy, state, rnd: dict[str, torch.Tensor], t: int, *, num_burnin: int,
              thinning: int, buffer: DrawBuffer):
    """The steps t, t+1, ... of one block of pre-drawn randomness ``rnd``; keeps every
    ``thinning``-th post-burn-in state in ``buffer``. Returns (state, next t)."""
    k = next(iter(rnd.values())).shape[0]
    steps = torch.arange(t, t + k)
    for j in range(k):
        idx = rnd["idx"][j] if "idx" in rnd else None
        state, info = rule.step(state, lambda z, idx=idx: Energy(*energy(z, idx)),
                                {name: rnd[name][j] for name in rule.streams}, steps[j], xp)
        t += 1
        s = t - num_burnin
        if s > 0 and s % thinning == 0:
            buffer.keep(s // thinning - 1, state.z, info, state)
    return state, t


def run_chains(rule, energy: ChainEnergy, z0: torch.Tensor, *, num_burnin: int, num_draws: int, thinning: int,
               gen: torch.Generator, progress_bar: bool = True, desc: str = "", keep_draws: int = 1,
               recorder=None) -> ChainRun:
    """Run all chains of the update rule ``rule`` from ``z0: (C, d)``; see the module docstring.
    With ``keep_draws=False`` only the statistics are stored (``ChainRun.z`` is None);
    ``recorder`` evaluates every kept draw as it is made."""
    C, d = z0.shape
    T = num_burnin + num_draws * thinning
    buffer = DrawBuffer(C, num_draws, d, rule.Info._fields, keep_draws, recorder, z0.dtype, z0.device)
    K = block_size(C, d, energy.batch_size if not energy.full_batch else 0, T)
    bar = tqdm(total=T, desc=desc or "sampling", unit="step", leave=True, dynamic_ncols=True,
               disable=not progress_bar)
    with torch.no_grad():
        init_noise = {name: draw_stream(name, gen, 1, C, d, z0.dtype)[0] for name in rule.init_streams}
        state = rule.init(z0.clone(), lambda z: Energy(*energy(z)), init_noise, xp)
    t, reason, checked = 0, None, 0
    try:
        with torch.no_grad():
            while t < T:
                rnd = draw_block(rule, energy, gen, min(K, T - t), C, d)
                t_before = t
                state, t = run_block(rule, energy, state, rnd, t, num_burnin=num_burnin, thinning=thinning,
                                     buffer=buffer)
                bar.update(t - t_before)
                if t - checked < CHECK_EVERY and t < T:  # the check reads every parameter and syncs a GPU
                    continue
                checked = t
                if not bool(torch.isfinite(state.z).all(dim=-1).any()):
                    phase = "burn-in" if t <= num_burnin else "sampling"
                    reason = (f"every chain's parameters became NaN or infinite by step {t} of {T} ({phase}); "
                              "reduce the step size or localize more strongly (larger γ)")
                    break
    except KeyboardInterrupt:
        if buffer.done == 0:
            raise
        reason = f"interrupted (KeyboardInterrupt) at step {t} of {T}"
    except Exception as exc:  # keep the completed draws and say what happened
        if buffer.done == 0:
            raise
        reason = f"{type(exc).__name__} at step {t} of {T}: {exc}"
    finally:
        bar.close()
    return ChainRun(z=buffer.z, stats=buffer.stats(), num_done=buffer.done, steps_done=t, stop_reason=reason,
                    extra={"state": state})
