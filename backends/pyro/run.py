"""The Pyro/PyTorch backend object: run the chains, every kept draw evaluated as it is made.

A run stopped early (every chain NaN/inf, ``KeyboardInterrupt``, or an error after some
draws) returns the draws completed so far with its ``stop_reason``; the Trace, the warning
and the incomplete-run attrs are built by ``pplpatterning.sampling.core`` for every backend.

Each kept draw's record (full-batch loss, observables, probes, per-sample losses) is
evaluated in the loop by .recording; an exception there stops the run like any other
failure mid-run, keeping the draws completed before it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import torch
from torch.func import vmap

from pplpatterning.sampling.backend import FunctionBackend, RunResult
from pplpatterning.sampling.record import DrawRecord
from pplpatterning.spec.forward import forward_losses
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.spec.probes import ProbePlan
from pplpatterning.samplers.registry import rule_for
from pplpatterning.samplers.settings import SamplerSettings

from .chains import ChainRun, run_chains, torch_seed
from .hmc import run_hmc
from .recording import Recorder
from .spec import DTYPE, ChainEnergy, TorchPosterior, potential_and_grad, torch_posterior, xp

__all__ = ["BACKEND", "sample_chains", "evaluate_at_centre", "run_device", "device_memory"]


def _as_output(value) -> torch.Tensor:
    t = torch.as_tensor(value)
    return t.to(DTYPE) if t.is_floating_point() else t


def evaluate_at_centre(post: GibbsPosterior, fn) -> np.ndarray:
    """``fn(params, consts, xp)`` once at the centre w*, as a float64 NumPy array (contract C1).

    ``params`` holds every parameter (sampled and frozen) at the centre as float64 tensors,
    ``consts`` the model's constants as tensors, ``xp`` array-api-compat's torch. The call
    goes through the same path as the evaluation of the kept draws while sampling (``vmap``
    over a batch of one draw, no gradients), so what fails there fails here, before any
    sampling; nothing is compiled, torch's settings are untouched, exceptions propagate.
    """
    tp = torch_posterior(post)

    def one(zi):
        return (_as_output(fn(tp.full_params(tp.unflatten(zi)), tp.consts, xp)),)

    with torch.no_grad():
        (out,) = vmap(one)(tp.centre_flat()[None])
    return np.asarray(out[0].numpy(), dtype=np.float64)


#: Below this many multiply-adds per step (≈ chains × batch × parameters) one intra-op thread
#: is faster: torch's thread pool costs more than it saves on small tensors, and on a busy
#: 2-core machine its spin-waiting made a 2-parameter potential 40× slower (0.4 → 15 ms per
#: gradient, measured). Larger problems keep torch's setting.
SINGLE_THREAD_WORK = 50_000_000


@contextmanager
def _torch_threads(work: float):
    """Use one torch thread for small per-step work; restore the setting afterwards."""
    before = torch.get_num_threads()
    if work < SINGLE_THREAD_WORK and before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _run(tp: TorchPosterior, post: GibbsPosterior, settings: SamplerSettings, keep_draws: int,
         recorder: Recorder | None) -> ChainRun:
    if settings.sampler in ("nuts", "hmc"):
        return run_hmc(tp, settings, keep_draws=keep_draws, recorder=recorder)
    energy = ChainEnergy(tp, settings.resolved_batch_size(post.n))
    gen = torch.Generator(device=tp.device).manual_seed(torch_seed(settings.seed))
    z0 = tp.centre_flat().expand(settings.num_chains, tp.dim).clone()
    return run_chains(rule_for(settings), energy, z0, num_burnin=settings.num_burnin, num_draws=settings.num_draws,
                      thinning=settings.thinning, gen=gen, progress_bar=settings.progress_bar,
                      desc=f"{settings.sampler} ({settings.num_chains} chains)", keep_draws=keep_draws,
                      recorder=recorder)


def sample_chains(post: GibbsPosterior, settings: SamplerSettings, *, record: DrawRecord | None = None,
                  plan: ProbePlan | None = None, keep_params: int = 1) -> RunResult:
    """Run the chains (NUTS/HMC: Pyro's kernels; the others: the update rules, all chains at
    once), every kept draw's ``record`` evaluated as it is made (.recording); the statistics
    sorted by name, the draws' parameters only with ``keep_params``."""
    t_start = time.perf_counter()
    tp = torch_posterior(post, settings.dtype, settings.forward_dtype)
    if settings.device is not None:
        tp = tp.to(run_device(settings))
    with _torch_threads(settings.num_chains * settings.resolved_batch_size(post.n) * max(tp.dim, 1)):
        recorder = Recorder(record, tp, plan, settings.num_chains, forward_losses(post.model, settings.forward_dtype)[1]) \
            if record is not None and record.evaluates_anything else None
        chains = _run(tp, post, settings, keep_params, recorder)
    D = chains.num_done
    stats = {name: chains.stats[name][:, :D].cpu().numpy() for name in sorted(chains.stats)}
    z = chains.z[:, :-(-D // int(keep_params))].cpu() if chains.z is not None else None
    draws = {name: a.numpy() for name, a in tp.unflatten(z).items()} if z is not None else {}
    kept = chains.extra.get("chains", slice(None))  # NUTS/HMC stopped early keeps whole chains
    values = recorder.evaluation(kept, D) if recorder is not None else None
    return RunResult(draws=draws, stats=stats, stop_reason=chains.stop_reason, dtype=settings.dtype,
                     seconds=time.perf_counter() - t_start, values=values)


def run_device(settings: SamplerSettings) -> torch.device:
    """The torch device of ``settings.device`` ("gpu" means "cuda"); ValueError, before any
    sampling, when torch cannot use it or the sampler cannot run there (Pyro's NUTS/HMC
    run on the CPU)."""
    name = "cuda" + settings.device[3:] if settings.device.startswith("gpu") else settings.device
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"`device={settings.device!r}` is not a torch device ({exc}); use 'cpu' or 'cuda'.") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"`device={settings.device!r}`: torch sees {torch.cuda.device_count()} CUDA device(s) here; "
                         "use device='cpu' (or None).")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"`device={settings.device!r}`: the Pyro backend runs on 'cpu' or 'cuda' devices.")
    if dev.type != "cpu" and settings.sampler in ("nuts", "hmc"):
        raise ValueError(f"`device={settings.device!r}`: Pyro's {settings.sampler.upper()} runs on the CPU here; "
                         "use sampler='mala' or an SG sampler on the GPU, or device='cpu'.")
    return dev


def device_memory(settings: SamplerSettings) -> tuple[str, int] | None:
    """(name, free bytes) of the run's CUDA device (``torch.cuda.mem_get_info``); None on the CPU."""
    if settings.device is None:
        return None
    dev = run_device(settings)
    if dev.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(dev)
    return f"cuda:{dev.index or 0}", int(free)


#: The Pyro (PyTorch) backend (the protocol of pplpatterning.sampling.backend).
BACKEND = FunctionBackend("pyro", ("torch", "pyro-ppl"), evaluate_at_centre, sample_chains, potential_and_grad,
                          device_memory)
