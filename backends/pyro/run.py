"""Run a GibbsPosterior on the Pyro/PyTorch backend and assemble the Trace.

The Trace has exactly the NumPyro backend's structure (groups, variable names and order,
dims, attrs keys; see backends/numpyro/run.py), with ``backend="pyro"``. A run stopped
early (every chain NaN/inf, ``KeyboardInterrupt``, or an error after some draws) returns
the draws completed so far with attrs ``incomplete=1`` and ``incomplete_reason`` (0 and ""
for a complete run), and warns; stopped before any kept draw, it raises.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch

from pplpatterning.posterior import GibbsPosterior
from pplpatterning.probes import ProbePlan, dataset_losses, sample_losses
from pplpatterning.samplers import SamplerSettings
from pplpatterning.trace import build_trace, run_attrs

from .chains import ChainRun, Kernel, run_chains
from .mala import MALA
from .rmsprop_sgld import RMSPropSGLD
from .sgld import SGLD
from .sgnht import SGNHT
from .spec import DTYPE, ChainEnergy, _as_tensor, TorchPosterior, full_batch_loss, torch_posterior, xp

__all__ = ["sample", "make_kernel", "evaluate_draws", "KERNELS"]

KERNELS = {"mala": MALA, "sgld": SGLD, "rmsprop_sgld": RMSPropSGLD, "sgnht": SGNHT}


def make_kernel(tp: TorchPosterior, settings: SamplerSettings, batch_size: int) -> Kernel:
    """The vectorised kernel for ``settings.sampler`` (MALA or an SG sampler)."""
    energy = ChainEnergy(tp, batch_size)
    return KERNELS[settings.sampler](energy, settings.step_size, batch_size, settings.num_burnin,
                                     **dict(settings.options))


def _chunk_size(n: int) -> int:
    return int(max(1, min(256, 2_000_000 // max(n, 1))))


def _as_output(value) -> torch.Tensor:
    t = torch.as_tensor(value)
    return t.to(DTYPE) if t.is_floating_point() else t


def _map_chunks(fn, flat: torch.Tensor, step: int) -> list[np.ndarray]:
    """``vmap(fn)`` over the rows of ``flat`` in chunks of ``step``, without gradients; one
    float64/bool numpy array per output of ``fn``."""
    from torch.func import vmap

    f = vmap(fn)
    columns: list[list[torch.Tensor]] | None = None
    with torch.no_grad():
        for start in range(0, flat.shape[0], step):
            res = f(flat[start:start + step])
            columns = [[r] for r in res] if columns is None else [c + [r] for c, r in zip(columns, res)]
    return [torch.cat(c).numpy() for c in columns or []]


def evaluate_draws(tp: TorchPosterior, z: torch.Tensor, observables: dict, *, with_loss: bool = True,
                   datasets: dict[str, dict[str, torch.Tensor]] | None = None):
    """Full-batch L_n^ρ, L_n^ρ - L_n^ρ(w*) (per sample), observables and probe data-set losses
    L_{q'}(w) at every draw. ``z: (C, D, d)``; returns (loss, delta, obs, dataset_losses)."""
    C, D, d = z.shape
    names = sorted(observables)
    datasets = datasets or {}
    probe_names = sorted(datasets)

    def one(zi):
        sampled = tp.unflatten(zi)
        params = tp.full_params(sampled)
        out = list(full_batch_loss(tp, sampled)) if with_loss else []
        out += [_as_output(observables[k](params, xp)) for k in names]
        means = dataset_losses(tp.loss_fn, params, datasets, tp.consts, xp)
        out += [means[k] for k in probe_names]
        return tuple(out)

    rows = tp.n + sum(next(iter(v.values())).shape[0] for v in datasets.values())
    cols = _map_chunks(one, z.reshape(C * D, d), _chunk_size(rows))
    shape = lambda x: x.reshape((C, D) + x.shape[1:])  # noqa: E731
    loss = delta = None
    if with_loss:
        loss, delta = shape(cols[0]), shape(cols[1])
        cols = cols[2:]
    obs = {k: shape(col) for k, col in zip(names, cols[:len(names)])}
    probe_means = {k: shape(col) for k, col in zip(probe_names, cols[len(names):])}
    return loss, delta, obs, probe_means


def evaluate_per_sample(tp: TorchPosterior, z: torch.Tensor, batch: dict[str, torch.Tensor]) -> np.ndarray:
    """l_z(w) for every row of ``batch`` at every draw of ``z: (C, D', d)`` → (C, D', rows)."""
    C, D, d = z.shape
    rows = next(iter(batch.values())).shape[0]

    def one(zi):
        return (sample_losses(tp.loss_fn, tp.full_params(tp.unflatten(zi)), batch, tp.consts, xp),)

    (col,) = _map_chunks(one, z.reshape(C * D, d), _chunk_size(rows))
    return col.reshape(C, D, rows)


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


def _run(tp: TorchPosterior, post: GibbsPosterior, settings: SamplerSettings) -> ChainRun:
    if settings.sampler in ("nuts", "hmc"):
        from .hmc import run_hmc

        return run_hmc(tp, settings)
    batch = settings.resolved_batch_size(post.n)
    kernel = make_kernel(tp, settings, batch)
    gen = torch.Generator().manual_seed(int(settings.seed))
    z0 = tp.centre_flat().expand(settings.num_chains, tp.dim).clone()
    return run_chains(kernel, z0, num_burnin=settings.num_burnin, num_draws=settings.num_draws,
                      thinning=settings.thinning, gen=gen, progress_bar=settings.progress_bar,
                      desc=f"{settings.sampler} ({settings.num_chains} chains)")


def sample(post: GibbsPosterior, settings: SamplerSettings, *, observables: dict, keep_params: bool = True,
           probes: ProbePlan | None = None):
    """Sample ``post`` with Pyro/PyTorch and return a Trace (see pplpatterning.trace).

    ``probes`` (validated by ``pplpatterning.sample``) adds the ``probe_losses`` and
    ``per_sample_losses`` groups (see pplpatterning.probes)."""
    t_start = time.perf_counter()
    observables = dict(observables or {})
    tp = torch_posterior(post)
    with _torch_threads(settings.num_chains * settings.resolved_batch_size(post.n) * max(tp.dim, 1)):
        run = _run(tp, post, settings)
    D = run.num_done
    if run.stop_reason is not None and D == 0:
        raise FloatingPointError(f"Sampling stopped before any draw was kept: {run.stop_reason}.")
    if run.stop_reason is not None:
        warnings.warn(f"Sampling stopped early: {run.stop_reason}. The trace keeps the {D} of "
                      f"{settings.num_draws} draws per chain completed before that.", RuntimeWarning, stacklevel=3)
    z = run.z[:, :D]
    # sample_stats in NumPyro's order: loss, loss_delta, then the sampler's fields sorted by name
    extra = {name: run.stats[name][:, :D].numpy() for name in sorted(run.stats)}
    t_sampled = time.perf_counter()

    minibatch = settings.is_stochastic_gradient and settings.loss_estimate == "minibatch"
    with _torch_threads(_chunk_size(tp.n) * tp.n * max(tp.dim, 1)):
        groups = {}
        if minibatch:  # probes need the full loss; sample() refuses them with "minibatch"
            loss, delta = extra["minibatch_loss"], extra["minibatch_loss_delta"]
            _, _, obs, _ = evaluate_draws(tp, z, observables, with_loss=False) if observables else (0, 0, {}, 0)
        elif probes is None:
            loss, delta, obs, _ = evaluate_draws(tp, z, observables)
        else:
            as_t = lambda d: {k: _as_tensor(v) for k, v in d.items()}  # noqa: E731
            loss, delta, obs, means = evaluate_draws(
                tp, z, observables, datasets={name: as_t(d) for name, d in probes.datasets.items()})
            per_sample = None
            if probes.num_per_sample:
                per_sample = evaluate_per_sample(tp, z[:, probes.thinned_draws(D)], as_t(probes.per_sample_batch))
            groups = probes.assemble(dataset_losses=means, per_sample=per_sample, num_draws=D)
    t_done = time.perf_counter()

    samples = {name: a.numpy() for name, a in tp.unflatten(z).items()} if keep_params else {}
    stats = {"loss": loss, "loss_delta": delta, **extra}
    attrs = run_attrs(post, settings, backend="pyro", dtype=str(DTYPE).removeprefix("torch."),
                      packages=("torch", "pyro-ppl"), incomplete_reason=run.stop_reason,
                      sampling_seconds=t_sampled - t_start, evaluation_seconds=t_done - t_sampled)
    return build_trace(posterior=samples, sample_stats=stats, observables=obs, attrs=attrs, extra_groups=groups)
