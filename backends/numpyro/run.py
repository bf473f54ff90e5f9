"""The NumPyro backend object: run a GibbsPosterior with NumPyro kernels (NUTS/HMC, or an
update rule of pplpatterning.samplers through .rule_kernel), all in float64 (see
.precision); evaluate the kept draws afterwards in chunks that keep what was evaluated. The
Trace is built by ``pplpatterning.sampling.core``, once for every backend."""

from __future__ import annotations

import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import NUTS

from pplpatterning.sampling.backend import FunctionBackend, RunResult
from pplpatterning.sampling.evaluation import Evaluation, evaluation_failure, join_draw_blocks
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.spec.probes import ProbePlan, dataset_losses, sample_losses
from pplpatterning.samplers.registry import rule_for
from pplpatterning.samplers.settings import SamplerSettings

from .driver import run_segmented
from .hmc_jitter import JitteredHMC
from .rule_kernel import RuleKernel
from .precision import as_data, in_float64
from .spec import PosteriorArgs, full_batch_loss, model_for, posterior_args, potential_and_grad

__all__ = ["BACKEND", "sample_chains", "evaluate_run", "make_kernel", "stat_fields", "evaluate_draws", "evaluate_at_centre", "Evaluation", "draws_per_chunk",
           "MAX_EVAL_CHUNKS"]

# The framework kernels' state fields recorded in sample_stats, and their names there.
_HMC_FIELDS = {"diverging": "diverging", "accept_prob": "accept_prob", "adapt_state.step_size": "step_size",
               "num_steps": "num_steps"}


def stat_fields(settings: SamplerSettings) -> dict[str, str]:
    """Kernel-state paths recorded per kept draw → their sample_stats names: NumPyro's
    NUTS/HMC fields, or every field of the update rule's Info."""
    if settings.sampler in ("nuts", "hmc"):
        return dict(_HMC_FIELDS)
    return {f"info.{name}": name for name in rule_for(settings).Info._fields}


def make_kernel(post: GibbsPosterior, settings: SamplerSettings):
    """The NumPyro MCMCKernel for ``settings.sampler`` on ``post``."""
    opts = dict(settings.options)
    name = settings.sampler
    if name in ("nuts", "hmc"):
        common = dict(target_accept_prob=opts.pop("target_accept"), adapt_step_size=settings.num_burnin > 0,
                      adapt_mass_matrix=settings.num_burnin > 0, dense_mass=False)
        if settings.step_size is not None:
            common["step_size"] = settings.step_size
        if name == "nuts":
            return NUTS(model_for(post), max_tree_depth=opts.pop("max_tree_depth"), **common)
        return JitteredHMC(model_for(post), num_steps=opts.pop("num_steps"), trajectory_length=None,
                           step_jitter=opts.pop("step_jitter"), **common)
    return RuleKernel(rule_for(settings), post.model.loss, settings.resolved_batch_size(post.n))


def _chunk_size(n: int) -> int:
    return int(max(1, min(256, 4_000_000 // max(n, 1))))


class ProbeArgs(NamedTuple):
    """Probe arrays as traced arguments (shapes fixed: one compilation per shape)."""

    datasets: dict[str, dict[str, jax.Array]]
    per_sample: dict[str, jax.Array]  # empty when no per-sample losses are recorded


def probe_args(plan: ProbePlan | None) -> ProbeArgs:
    """The probe data as JAX arrays that keep their kind (floats float64, integers int64)."""
    if plan is None:
        return ProbeArgs({}, {})
    batch = plan.per_sample_batch or {}
    return ProbeArgs({name: {k: as_data(v) for k, v in d.items()} for name, d in plan.datasets.items()},
                     {k: as_data(v) for k, v in batch.items()})


@in_float64
def evaluate_at_centre(post: GibbsPosterior, fn) -> np.ndarray:
    """``fn(params, consts, jax.numpy)`` once, eagerly, at the centre w* (contract C1).

    ``params`` holds every parameter (sampled and frozen) at the centre as float64 JAX
    arrays, ``consts`` the model's constants (kinds kept, see .precision.as_data). Nothing
    is jitted or compiled for the sampler; exceptions propagate (``pplpatterning.sample``
    names the observable or probe). A numeric result is returned as float64 NumPy.
    """
    params = {k: jnp.asarray(post.centre[k], dtype=jnp.float64) for k in post.model.param_shapes}
    consts = {k: as_data(v) for k, v in post.model.consts.items()}
    out = np.asarray(fn(params, consts, jnp))
    return out.astype(np.float64) if out.dtype.kind in "biuf" else out


#: The after-sampling evaluation runs in at most this many chunks of draws (all chains at
#: once). Every chunk has the same shape, so one compiled program serves them all; when a
#: chunk fails, the chunks before it are kept (contract C3).
MAX_EVAL_CHUNKS = 10


def draws_per_chunk(num_draws: int, thinning: int = 1) -> int:
    """Draws per evaluation chunk: ⌈num_draws / MAX_EVAL_CHUNKS⌉ rounded up to a multiple of
    ``thinning`` (the stride of the per-sample probe draws, so that every chunk starts on a
    thinned draw and holds the same number of them)."""
    thinned = -(-int(num_draws) // thinning)
    return thinning * -(-thinned // min(thinned, MAX_EVAL_CHUNKS))


@partial(jax.jit, static_argnames=("loss_fn", "observables", "with_loss", "chunk", "sample_chunk"))
def _evaluate_chunk(flat_z, thin_z, args: PosteriorArgs, pargs: ProbeArgs, *, loss_fn, observables, with_loss,
                    chunk, sample_chunk):
    """Per draw of ``flat_z``: (L_n^ρ, ΔL_n^ρ) if ``with_loss``, the observables and the probe
    data sets' losses; per draw of ``thin_z``: the per-sample probe losses (if any)."""
    def params_at(z):
        params = dict(args.frozen)
        params.update(z)
        return params

    def one(z):
        losses = full_batch_loss(loss_fn, z, args) if with_loss else ()
        params = params_at(z)
        obs = {name: jnp.asarray(fn(params, jnp)) for name, fn in observables}
        return losses, obs, dataset_losses(loss_fn, params, pargs.datasets, args.consts, jnp)

    per_draw = jax.lax.map(one, flat_z, batch_size=chunk)
    per_sample = None
    if pargs.per_sample:  # static: the pytree structure
        per_sample = jax.lax.map(
            lambda z: sample_losses(loss_fn, params_at(z), pargs.per_sample, args.consts, jnp),
            thin_z, batch_size=sample_chunk)
    return per_draw, per_sample


def _gather(samples: dict, idx: np.ndarray, C: int) -> dict:
    """The draws ``idx`` of every chain, flattened chain-major: {name: (C·len(idx), ...)}."""
    return {k: np.asarray(v)[:, idx].reshape((C * idx.size,) + v.shape[2:]) for k, v in samples.items()}


def _join(parts: list, C: int, total: int, step: int, tail: tuple[int, ...] = ()) -> np.ndarray:
    """Chunks of (C·step, ...) values → (C, total, ...): the padding of the last chunk
    dropped, NaN where no chunk was evaluated."""
    blocks = [np.asarray(p).reshape((C, step) + np.shape(p)[1:]) for p in parts]
    return join_draw_blocks(blocks, C, total, tail)


@in_float64
def evaluate_draws(post: GibbsPosterior, samples: dict, args: PosteriorArgs, observables: dict,
                   probes: ProbePlan | None = None, *, with_loss: bool = True) -> Evaluation:
    """Full-batch L_n^ρ, L_n^ρ - L_n^ρ(w*) (per sample; only if ``with_loss``), the
    observables and the probe losses at every draw of ``samples`` ({name: (C, D, ...)}).

    The draws are evaluated in chunks of :func:`draws_per_chunk` draws (all chains at once),
    each one call of the same jitted, vectorised program (the last chunk is padded with
    copies of the last draw, so no chunk compiles anew); the per-sample probe losses are
    evaluated at ``probes.thinned_draws(D)`` in the same calls. This never raises: an
    exception (KeyboardInterrupt included) in the chunk starting at draw K keeps the values
    of draws 0..K-1 and leaves the rest NaN (see :class:`Evaluation`).
    """
    pargs = probe_args(probes)
    if not (with_loss or observables or pargs.datasets or pargs.per_sample):
        return Evaluation(None, None, {}, {}, None)
    C, D = next(iter(samples.values())).shape[:2]
    per_sample = bool(pargs.per_sample)
    s = probes.thinning if per_sample else 1
    step = draws_per_chunk(D, s)
    rows = post.n + sum(next(iter(d.values())).shape[0] for d in pargs.datasets.values())
    statics = dict(loss_fn=post.model.loss, observables=tuple(sorted(observables.items())), with_loss=with_loss,
                   chunk=_chunk_size(rows),
                   sample_chunk=_chunk_size(probes.num_per_sample if per_sample else 1))
    parts, failed_at, failure = [], None, None
    for a in range(0, D, step):
        idx = np.minimum(np.arange(a, a + step), D - 1)  # the last chunk repeats draw D-1: same shapes
        try:
            thin = _gather(samples, idx[::s], C) if per_sample else {}
            parts.append(jax.device_get(_evaluate_chunk(_gather(samples, idx, C), thin, args, pargs, **statics)))
        except (Exception, KeyboardInterrupt) as exc:  # keep the evaluated prefix, say why
            failed_at, failure = a, evaluation_failure(a, exc)
            break
    join = partial(_join, C=C, total=D, step=step)
    loss = delta = None
    if with_loss:
        loss, delta = join([p[0][0][0] for p in parts]), join([p[0][0][1] for p in parts])
    obs = {k: join([p[0][1][k] for p in parts]) for k in observables}
    means = {k: join([p[0][2][k] for p in parts]) for k in pargs.datasets}
    ps = None
    if per_sample:
        num_thin = probes.thinned_draws(D).size
        ps = _join([p[1] for p in parts], C, num_thin, step // s, (probes.num_per_sample,)).astype(np.float64)
    return Evaluation(loss, delta, obs, means, ps, failed_at, failure)


@in_float64
def sample_chains(post: GibbsPosterior, settings: SamplerSettings, *, keep_draws: bool = True) -> RunResult:
    """Compile and run the chains in float64 (inside ``jax.enable_x64(True)``; the process's
    JAX configuration is left as it was): burn-in, then the draws in up to 20 equal compiled
    segments that keep what completed (see .driver)."""
    t_start = time.perf_counter()
    args = posterior_args(post)
    kernel = make_kernel(post, settings)
    C = settings.num_chains
    init = {k: (jnp.broadcast_to(v, (C,) + v.shape) if C > 1 else v) for k, v in args.centre.items()}
    samples, extra, reason = run_segmented(kernel, args, init, settings, stat_fields(settings),
                                           keep_draws=keep_draws)
    return RunResult(draws=samples, stats=extra, stop_reason=reason, dtype=str(args.n_beta.dtype),
                     seconds=time.perf_counter() - t_start, context=args)


def evaluate_run(post: GibbsPosterior, result: RunResult, observables: dict, probes: ProbePlan | None, *,
                 with_loss: bool) -> Evaluation:
    """:func:`evaluate_draws` on the draws of ``result``, reusing its compiled arrays."""
    return evaluate_draws(post, result.draws, result.context, observables, probes, with_loss=with_loss)


#: The NumPyro (JAX) backend (the protocol of pplpatterning.sampling.backend).
BACKEND = FunctionBackend("numpyro", ("jax", "jaxlib", "numpyro"), evaluate_at_centre, sample_chains, evaluate_run,
                          potential_and_grad)
