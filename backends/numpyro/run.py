"""Run a GibbsPosterior under ``numpyro.infer.MCMC`` and assemble the Trace."""

from __future__ import annotations

import time
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import NUTS

from pplpatterning.posterior import GibbsPosterior
from pplpatterning.probes import ProbePlan, dataset_losses, sample_losses
from pplpatterning.samplers import SamplerSettings
from pplpatterning.trace import build_trace, run_attrs

from .driver import run_segmented
from .kernels import KERNELS
from .kernels.hmc_jitter import JitteredHMC
from .spec import PosteriorArgs, full_batch_loss, model_for, posterior_args

__all__ = ["sample", "make_kernel", "evaluate_draws"]

# Sampler-state fields recorded in sample_stats, and their names there.
_EXTRA_FIELDS = {
    "nuts": {"diverging": "diverging", "accept_prob": "accept_prob", "adapt_state.step_size": "step_size",
             "num_steps": "num_steps"},
    "hmc": {"diverging": "diverging", "accept_prob": "accept_prob", "adapt_state.step_size": "step_size",
            "num_steps": "num_steps"},
    "mala": {"accept_prob": "accept_prob", "step_size": "step_size", "grad_norm": "grad_norm"},
    "sgld": {"loss": "minibatch_loss", "loss_delta": "minibatch_loss_delta", "grad_norm": "grad_norm"},
    "rmsprop_sgld": {"loss": "minibatch_loss", "loss_delta": "minibatch_loss_delta", "grad_norm": "grad_norm"},
    "sgnht": {"loss": "minibatch_loss", "loss_delta": "minibatch_loss_delta", "grad_norm": "grad_norm",
              "thermostat": "thermostat"},
}


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
    batch = settings.resolved_batch_size(post.n)
    return KERNELS[name](post.model.loss, settings.step_size, batch, **opts)


def _chunk_size(n: int) -> int:
    return int(max(1, min(256, 4_000_000 // max(n, 1))))


class ProbeArgs(NamedTuple):
    """Probe arrays as traced arguments (shapes fixed: one compilation per shape)."""

    datasets: dict[str, dict[str, jax.Array]]
    per_sample: dict[str, jax.Array]  # empty when no per-sample losses are recorded


def probe_args(plan: ProbePlan | None, dtype=jnp.float64) -> ProbeArgs:
    if plan is None:
        return ProbeArgs({}, {})
    as_ = partial(jnp.asarray, dtype=dtype)
    batch = plan.per_sample_batch or {}
    return ProbeArgs({name: {k: as_(v) for k, v in d.items()} for name, d in plan.datasets.items()},
                     {k: as_(v) for k, v in batch.items()})


@partial(jax.jit, static_argnames=("loss_fn", "observables", "chunk", "sample_chunk"))
def _evaluate(flat_z, thin_z, args: PosteriorArgs, pargs: ProbeArgs, *, loss_fn, observables, chunk,
              sample_chunk):
    def params_at(z):
        params = dict(args.frozen)
        params.update(z)
        return params

    def one(z):
        loss, delta = full_batch_loss(loss_fn, z, args)
        params = params_at(z)
        obs = {name: jnp.asarray(fn(params, jnp)) for name, fn in observables}
        return loss, delta, obs, dataset_losses(loss_fn, params, pargs.datasets, args.consts, jnp)

    per_draw = jax.lax.map(one, flat_z, batch_size=chunk)
    per_sample = None
    if pargs.per_sample:  # static: the pytree structure
        per_sample = jax.lax.map(
            lambda z: sample_losses(loss_fn, params_at(z), pargs.per_sample, args.consts, jnp),
            thin_z, batch_size=sample_chunk)
    return per_draw, per_sample


def evaluate_draws(post: GibbsPosterior, samples: dict, args: PosteriorArgs, observables: dict,
                   probes: ProbePlan | None = None):
    """Full-batch L_n^ρ, L_n^ρ - L_n^ρ(w*) (per sample) and observables at every draw.

    With ``probes``, also returns the Trace groups of the probe losses (one jitted call: a
    vectorised pass over all draws for the per-draw values and one over the thinned draws
    for the per-sample losses); without, a triple as before.
    """
    leaf = next(iter(samples.values()))
    C, D = leaf.shape[:2]
    flat = {k: v.reshape((C * D,) + v.shape[2:]) for k, v in samples.items()}
    thin_idx = probes.thinned_draws(D) if probes is not None and probes.num_per_sample else np.zeros(0, int)
    thin = {k: np.asarray(v)[:, thin_idx].reshape((C * thin_idx.size,) + v.shape[2:]) for k, v in samples.items()}
    pargs = probe_args(probes)
    rows = post.n + sum(next(iter(d.values())).shape[0] for d in pargs.datasets.values())
    n_ps = probes.num_per_sample if probes is not None else 1
    (loss, delta, obs, probe_means), per_sample = _evaluate(
        flat, thin, args, pargs, loss_fn=post.model.loss, observables=tuple(sorted(observables.items())),
        chunk=_chunk_size(rows), sample_chunk=_chunk_size(n_ps))
    shape = lambda x: np.asarray(x).reshape((C, D) + np.shape(x)[1:])  # noqa: E731
    out = (shape(loss), shape(delta), {k: shape(v) for k, v in obs.items()})
    if probes is None:
        return out
    ps = None if per_sample is None else np.asarray(per_sample, dtype=np.float64).reshape(
        (C, thin_idx.size, probes.num_per_sample))
    groups = probes.assemble(dataset_losses={k: shape(v) for k, v in probe_means.items()}, per_sample=ps,
                             num_draws=D)
    return (*out, groups)


def sample(post: GibbsPosterior, settings: SamplerSettings, *, observables: dict, keep_params: bool = True,
           probes: ProbePlan | None = None):
    """Sample ``post`` with NumPyro and return a Trace (see pplpatterning.trace).

    ``probes`` (validated by ``pplpatterning.sample``) adds the ``probe_losses`` and
    ``per_sample_losses`` groups (see pplpatterning.probes).

    The draws run in up to 20 equal compiled segments (see .driver). If the run
    stops early (Ctrl-C, an error, all chains NaN), the completed draws are returned with
    attrs ``incomplete=1`` and ``incomplete_reason``, and a warning says what happened.
    """
    t_start = time.perf_counter()
    args = posterior_args(post)
    kernel = make_kernel(post, settings)
    C = settings.num_chains
    init = {k: (jnp.broadcast_to(v, (C,) + v.shape) if C > 1 else v) for k, v in args.centre.items()}
    fields = _EXTRA_FIELDS[settings.sampler]
    samples, extra, reason = run_segmented(kernel, args, init, settings, fields)
    t_sampled = time.perf_counter()
    done = next(iter(samples.values())).shape[1]
    if reason is not None:
        warnings.warn(f"Sampling stopped early: {reason}. The trace keeps the {done} of {settings.num_draws} "
                      "draws per chain completed before that.", RuntimeWarning, stacklevel=3)

    groups = {}
    if settings.is_stochastic_gradient and settings.loss_estimate == "minibatch":  # probes need "full"
        loss, delta = extra["minibatch_loss"], extra["minibatch_loss_delta"]
        _, _, obs = evaluate_draws(post, samples, args, observables) if observables else (None, None, {})
    elif probes is not None:
        loss, delta, obs, groups = evaluate_draws(post, samples, args, observables, probes)
    else:
        loss, delta, obs = evaluate_draws(post, samples, args, observables)
    t_done = time.perf_counter()

    stats = {"loss": loss, "loss_delta": delta, **extra}
    attrs = run_attrs(post, settings, backend="numpyro", dtype=str(args.n_beta.dtype),
                      packages=("jax", "jaxlib", "numpyro"), incomplete_reason=reason,
                      sampling_seconds=t_sampled - t_start, evaluation_seconds=t_done - t_sampled)
    return build_trace(posterior=samples if keep_params else {}, sample_stats=stats, observables=obs, attrs=attrs,
                       extra_groups=groups)
