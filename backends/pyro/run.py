"""The Pyro/PyTorch backend object: run the chains, evaluate the kept draws.

A run stopped early (every chain NaN/inf, ``KeyboardInterrupt``, or an error after some
draws) returns the draws completed so far with its ``stop_reason``; the Trace, the warning
and the incomplete-run attrs are built by ``pplpatterning.sampling.core`` for every backend.

The kept draws are evaluated (full-batch loss, observables, probes) in blocks of draws, all
chains at once, never raising: a failing block keeps the evaluated prefix and says why
(contract C3 of issue 9; see :func:`evaluate_in_blocks`).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import torch
from torch.func import vmap

from pplpatterning.sampling.backend import FunctionBackend, RunResult
from pplpatterning.sampling.evaluation import Evaluation, evaluation_failure, join_draw_blocks
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.spec.probes import ProbePlan, dataset_losses, sample_losses
from pplpatterning.samplers.registry import rule_for
from pplpatterning.samplers.settings import SamplerSettings

from .chains import ChainRun, run_chains, torch_seed
from .hmc import run_hmc
from .spec import (
    DTYPE, ChainEnergy, TorchPosterior, as_data_tensor, full_batch_loss, potential_and_grad, torch_posterior, xp,
)

__all__ = ["BACKEND", "sample_chains", "evaluate_run", "evaluate_draws", "evaluate_in_blocks", "evaluate_at_centre"]


def _chunk_size(n: int) -> int:
    return int(max(1, min(256, 2_000_000 // max(n, 1))))


def _as_output(value) -> torch.Tensor:
    t = torch.as_tensor(value)
    return t.to(DTYPE) if t.is_floating_point() else t


def _map_chunks(fn, flat: torch.Tensor, step: int) -> list[np.ndarray]:
    """``vmap(fn)`` over the rows of ``flat`` in chunks of ``step``, without gradients; one
    float64/bool numpy array per output of ``fn``."""
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


def evaluate_at_centre(post: GibbsPosterior, fn) -> np.ndarray:
    """``fn(params, consts, xp)`` once at the centre w*, as a float64 NumPy array (contract C1).

    ``params`` holds every parameter (sampled and frozen) at the centre as float64 tensors,
    ``consts`` the model's constants as tensors, ``xp`` array-api-compat's torch. The call
    goes through the same path as the evaluation of the kept draws after sampling (``vmap``
    over a batch of one draw, no gradients), so what fails there fails here, before any
    sampling; nothing is compiled, torch's settings are untouched, exceptions propagate.
    """
    tp = torch_posterior(post)

    def one(zi):
        return (_as_output(fn(tp.full_params(tp.unflatten(zi)), tp.consts, xp)),)

    (out,) = _map_chunks(one, tp.centre_flat()[None], 1)
    return np.asarray(out[0], dtype=np.float64)


def evaluate_in_blocks(tp: TorchPosterior, z: torch.Tensor, observables: dict, *, with_loss: bool = True,
                       datasets: dict[str, dict[str, torch.Tensor]] | None = None,
                       per_sample_batch: dict[str, torch.Tensor] | None = None,
                       per_sample_draws: np.ndarray | None = None) -> Evaluation:
    """:func:`evaluate_draws` (and :func:`evaluate_per_sample` at ``per_sample_draws``) over
    blocks of draws of ``z: (C, D, d)``, all chains at once, never raising: an exception
    (``KeyboardInterrupt`` included) in the block starting at draw K keeps draws 0..K-1 and
    leaves the rest NaN (see :class:`Evaluation`)."""
    C, D, _ = z.shape
    datasets = datasets or {}
    rows = tp.n + sum(next(iter(v.values())).shape[0] for v in datasets.values())
    step = max(1, _chunk_size(rows) // max(C, 1))  # draws per block: ≈ one vmapped chunk
    thin = np.asarray(per_sample_draws if per_sample_batch is not None else [], dtype=np.int64)
    ps_rows = next(iter(per_sample_batch.values())).shape[0] if per_sample_batch is not None else 0
    parts, ps_parts, failed_at, failure = [], [], None, None
    for a in range(0, D, step):
        b = min(D, a + step)
        try:
            part = evaluate_draws(tp, z[:, a:b], observables, with_loss=with_loss, datasets=datasets)
            sel = thin[(thin >= a) & (thin < b)]
            ps = evaluate_per_sample(tp, z[:, sel], per_sample_batch) if sel.size else None
        except (Exception, KeyboardInterrupt) as exc:  # keep the evaluated prefix, say why
            failed_at, failure = a, evaluation_failure(a, exc)
            break
        parts.append(part)
        if ps is not None:
            ps_parts.append(ps)
    loss = delta = None
    if with_loss:
        loss = join_draw_blocks([p[0] for p in parts], C, D)
        delta = join_draw_blocks([p[1] for p in parts], C, D)
    obs = {k: join_draw_blocks([p[2][k] for p in parts], C, D) for k in sorted(observables)}
    means = {k: join_draw_blocks([p[3][k] for p in parts], C, D) for k in sorted(datasets)}
    per_sample = join_draw_blocks(ps_parts, C, thin.size, (ps_rows,)) if per_sample_batch is not None else None
    return Evaluation(loss, delta, obs, means, per_sample, failed_at, failure)


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


def _run(tp: TorchPosterior, post: GibbsPosterior, settings: SamplerSettings, keep_draws: bool) -> ChainRun:
    if settings.sampler in ("nuts", "hmc"):
        return run_hmc(tp, settings)  # the full loss is evaluated afterwards: the draws are needed
    energy = ChainEnergy(tp, settings.resolved_batch_size(post.n))
    gen = torch.Generator().manual_seed(torch_seed(settings.seed))
    z0 = tp.centre_flat().expand(settings.num_chains, tp.dim).clone()
    return run_chains(rule_for(settings), energy, z0, num_burnin=settings.num_burnin, num_draws=settings.num_draws,
                      thinning=settings.thinning, gen=gen, progress_bar=settings.progress_bar,
                      desc=f"{settings.sampler} ({settings.num_chains} chains)", keep_draws=keep_draws)


def sample_chains(post: GibbsPosterior, settings: SamplerSettings, *, keep_draws: bool = True) -> RunResult:
    """Run the chains (NUTS/HMC: Pyro's kernels; the others: the update rules, all chains at
    once); the completed draws as NumPy views and the sampler's statistics sorted by name."""
    t_start = time.perf_counter()
    tp = torch_posterior(post)
    with _torch_threads(settings.num_chains * settings.resolved_batch_size(post.n) * max(tp.dim, 1)):
        chains = _run(tp, post, settings, keep_draws)
    D = chains.num_done
    stats = {name: chains.stats[name][:, :D].numpy() for name in sorted(chains.stats)}
    z = chains.z[:, :D] if chains.z is not None else None
    draws = {name: a.numpy() for name, a in tp.unflatten(z).items()} if z is not None else {}
    return RunResult(draws=draws, stats=stats, stop_reason=chains.stop_reason, dtype=str(DTYPE).removeprefix("torch."),
                     seconds=time.perf_counter() - t_start, context=(tp, z))


def evaluate_run(post: GibbsPosterior, result: RunResult, observables: dict, probes: ProbePlan | None, *,
                 with_loss: bool) -> Evaluation:
    """The after-sampling evaluation of the draws of ``result`` (never raises)."""
    tp, z = result.context
    with _torch_threads(_chunk_size(tp.n) * tp.n * max(tp.dim, 1)):
        return _evaluate(tp, z, dict(observables), probes, minibatch=not with_loss)



def _evaluate(tp: TorchPosterior, z: torch.Tensor, observables: dict, probes: ProbePlan | None, *,
              minibatch: bool) -> Evaluation:
    """The after-sampling evaluation of the kept draws ``z`` (never raises; see evaluate_in_blocks).

    With ``loss_estimate="minibatch"`` the loss comes from the sampler and only observables
    are evaluated (``sample()`` refuses probes there)."""
    if minibatch:
        if not observables:
            return Evaluation(None, None, {}, {}, None)
        return evaluate_in_blocks(tp, z, observables, with_loss=False)
    if probes is None:
        return evaluate_in_blocks(tp, z, observables)
    as_t = lambda d: {k: as_data_tensor(v) for k, v in d.items()}  # noqa: E731
    per_sample = as_t(probes.per_sample_batch) if probes.num_per_sample else None
    return evaluate_in_blocks(tp, z, observables, datasets={name: as_t(d) for name, d in probes.datasets.items()},
                              per_sample_batch=per_sample,
                              per_sample_draws=probes.thinned_draws(z.shape[1]) if per_sample else None)


#: The Pyro (PyTorch) backend (the protocol of pplpatterning.sampling.backend).
BACKEND = FunctionBackend("pyro", ("torch", "pyro-ppl"), evaluate_at_centre, sample_chains, evaluate_run,
                          potential_and_grad)
