"""NUTS and HMC: Pyro's own kernels under ``pyro.infer.mcmc.api.MCMC`` on :func:`~.spec.gibbs_model`.

Chains run one after another (with 2 cores Pyro's multi-chain falls back to sequential
anyway), each from the centre w*, with its own seed derived from ``settings.seed``
(``numpy.random.SeedSequence(seed).spawn(num_chains)``, each child through
:func:`.chains.torch_seed`); the global torch RNG is saved and restored around the run
(``torch.random.fork_rng``). Step size and a diagonal mass matrix
adapt during burn-in toward ``target_accept`` (as the NumPyro backend does). HMC takes a
fixed number of leapfrog steps (``num_steps``), whatever the adapted step size, with the
step size jittered after burn-in (``step_jitter``; as the NumPyro backend's HMC).

Per-draw statistics (``diverging``, ``accept_prob``, ``step_size``, ``num_steps``) are read
off the kernels by thin subclasses: Pyro only keeps running means of them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pyro.infer.autoguide.initialization import init_to_value
from pyro.infer.mcmc import HMC, NUTS
from pyro.infer.mcmc.api import MCMC

from pplpatterning.samplers.settings import SamplerSettings
from pplpatterning.samplers.step_jitter import jittered_step_size

from .chains import ChainRun, torch_seed
from .spec import DTYPE, TorchPosterior, gibbs_model

__all__ = ["RecordingNUTS", "RecordingHMC", "run_hmc", "chain_seeds"]


def chain_seeds(seed: int, num_chains: int) -> list[int]:
    """Independent per-chain torch seeds, a deterministic function of all bits of ``seed``."""
    return [torch_seed(s) for s in np.random.SeedSequence(int(seed)).spawn(num_chains)]


class _Recording:
    """Mixin: after each transition ``self.last_stats`` holds that transition's statistics."""

    def _running_accept_prob(self, before: float) -> float:
        # Pyro keeps mean += (a - mean)/n with n = t (burn-in) or t - warmup (sampling).
        n = self._t - self._warmup_steps if self._t > self._warmup_steps else self._t
        return before + n * (self._mean_accept_prob - before)


class RecordingNUTS(_Recording, NUTS):
    """Pyro's NUTS, recording per transition: diverging, accept_prob, step_size, num_steps."""

    def _build_basetree(self, z, r, z_grads, log_slice, direction, energy_current):
        tree = super()._build_basetree(z, r, z_grads, log_slice, direction, energy_current)
        self._leaves += 1
        self._accept_sum += float(tree.sum_accept_probs)
        self._diverged = self._diverged or bool(tree.diverging)
        return tree

    def sample(self, params):
        self._leaves, self._accept_sum, self._diverged = 0, 0.0, False
        step_size = self.step_size  # the step size this transition integrates with
        out = super().sample(params)
        accept = self._accept_sum / self._leaves if self._leaves else 1.0
        self.last_stats = (self._diverged, accept, step_size, self._leaves)
        return out


class RecordingHMC(_Recording, HMC):
    """Pyro's HMC with a FIXED number of leapfrog steps, recording per-transition statistics.

    After burn-in each transition integrates with ε scaled by U(1 - j, 1 + j) (``step_jitter``
    j), the rule of :mod:`pplpatterning.samplers.step_jitter`, against resonance. The
    recorded ``step_size`` is the adapted (un-jittered) ε, as in the NumPyro backend.
    """

    def __init__(self, *args, num_steps: int, step_jitter: float = 0.0, **kwargs):
        super().__init__(*args, num_steps=num_steps, **kwargs)
        if not 0.0 <= step_jitter < 1.0:
            raise ValueError(f"`step_jitter` must lie in [0, 1), got {step_jitter!r}.")
        self._fixed_num_steps = int(num_steps)
        self.step_jitter = float(step_jitter)

    @property
    def num_steps(self):  # Pyro derives it from trajectory_length / step_size otherwise
        return self._fixed_num_steps

    def sample(self, params):
        before_mean, before_div = self._mean_accept_prob, len(self._divergences)
        base = self._adapter.step_size
        jitter = self.step_jitter > 0 and self._t >= self._warmup_steps
        if jitter:
            u = float(torch.rand(()))
            self._adapter.step_size = jittered_step_size(base, u, self.step_jitter)
        try:
            out = super().sample(params)
        finally:
            if jitter:
                self._adapter.step_size = base
        accept = self._running_accept_prob(before_mean)
        self.last_stats = (len(self._divergences) > before_div, accept, base, self._fixed_num_steps)
        return out


def _make_kernel(tp: TorchPosterior, settings: SamplerSettings):
    opts = dict(settings.options)
    adapt = settings.num_burnin > 0
    common = dict(
        model=gibbs_model, adapt_step_size=adapt, adapt_mass_matrix=adapt, full_mass=False,
        target_accept_prob=float(opts.pop("target_accept")), jit_compile=False, max_plate_nesting=0,
        init_strategy=init_to_value(values={k: v.clone() for k, v in tp.centre.items()}),
    )
    if settings.step_size is not None:
        common["step_size"] = settings.step_size
    if settings.sampler == "nuts":
        return RecordingNUTS(max_tree_depth=int(opts.pop("max_tree_depth")), **common)
    return RecordingHMC(num_steps=int(opts.pop("num_steps")), step_jitter=float(opts.pop("step_jitter", 0.0)),
                        **common)


def run_hmc(tp: TorchPosterior, settings: SamplerSettings, *, keep_draws: int = 1, recorder=None) -> ChainRun:
    """Run ``settings.num_chains`` NUTS/HMC chains sequentially; see the module docstring.
    ``recorder`` evaluates each kept draw as it is made; the draws are stored only with
    ``keep_draws`` (``ChainRun.z`` is None otherwise)."""
    C, D, thin = settings.num_chains, settings.num_draws, settings.thinning
    stride = int(keep_draws)  # parameters of every stride-th kept draw (none when 0)
    z_buf = torch.full((C, -(-D // stride), tp.dim), math.nan, dtype=DTYPE) if stride else None
    stats = {
        "diverging": torch.zeros((C, D), dtype=torch.bool),
        "accept_prob": torch.full((C, D), math.nan, dtype=DTYPE),
        "step_size": torch.full((C, D), math.nan, dtype=DTYPE),
        "num_steps": torch.zeros((C, D), dtype=torch.int64),
    }
    done = [0] * C
    reason = None
    init = {name: v.clone() for name, v in tp.centre.items()}
    seeds = chain_seeds(settings.seed, C)

    def hook(kernel, params, stage, i):
        if not stage.startswith("Sample") or (i + 1) % thin:
            return
        j = (i + 1) // thin - 1
        z = torch.cat([params[name].detach().reshape(-1).to(DTYPE) for name, _, _, _ in tp.layout])
        if recorder is not None:
            recorder.keep(slice(c, c + 1), j, z[None])
        if z_buf is not None and j % stride == 0:
            z_buf[c, j // stride] = z
        div, acc, eps, steps = kernel.last_stats
        stats["diverging"][c, j] = bool(div)
        stats["accept_prob"][c, j] = float(acc)
        stats["step_size"][c, j] = float(eps)
        stats["num_steps"][c, j] = int(steps)
        done[c] = j + 1

    with torch.random.fork_rng(devices=[]):
        for c in range(C):
            torch.manual_seed(seeds[c])
            kernel = _make_kernel(tp, settings)
            mcmc = MCMC(kernel, num_samples=D * thin, warmup_steps=settings.num_burnin,
                        initial_params=init, num_chains=1, hook_fn=hook,
                        disable_progbar=not settings.progress_bar)
            try:
                mcmc.run(tp)
            except KeyboardInterrupt:
                if not any(done):
                    raise
                reason = f"interrupted (KeyboardInterrupt) in chain {c} of {C}"
                break
            except Exception as exc:  # keep the completed draws and say what happened
                if not any(done):
                    raise
                reason = f"{type(exc).__name__} in chain {c} of {C}: {exc}"
                break

    if reason is None:
        return ChainRun(z=z_buf, stats=stats, num_done=D, steps_done=C)
    complete = [c for c in range(C) if done[c] == D]
    if complete:  # keep the finished chains, all draws
        keep = torch.tensor(complete)
        reason += f"; kept the {len(complete)} completed chain(s)"
        return ChainRun(z=None if z_buf is None else z_buf[keep], stats={k: v[keep] for k, v in stats.items()},
                        num_done=D, steps_done=len(complete), stop_reason=reason, extra={"chains": keep})
    # the first chain was interrupted: keep its completed draws
    n0 = done[0]
    reason += f"; kept the {n0} completed draw(s) of chain 0"
    return ChainRun(z=None if z_buf is None else z_buf[:1], stats={k: v[:1] for k, v in stats.items()}, num_done=n0,
                    steps_done=0, stop_reason=reason, extra={"chains": torch.tensor([0])})
