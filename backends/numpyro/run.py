"""The NumPyro backend object: run a GibbsPosterior with NumPyro kernels (NUTS/HMC, or an
update rule of pplpatterning.samplers through .rule_kernel), all in float64 (see
.precision), every kept draw evaluated inside the compiled loop (.recording). The Trace is
built by ``pplpatterning.sampling.core``, once for every backend."""

from __future__ import annotations

import time
import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import NUTS

from pplpatterning.sampling.backend import FunctionBackend, RunResult
from pplpatterning.sampling.evaluation import Evaluation
from pplpatterning.sampling.record import DrawRecord
from pplpatterning.spec.forward import forward_losses
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.spec.probes import ProbePlan
from pplpatterning.samplers.registry import rule_for
from pplpatterning.samplers.settings import SamplerSettings

from .driver import run_segmented
from .hmc_jitter import JitteredHMC
from .rule_kernel import RuleKernel
from .precision import as_data, in_float64
from .recording import Recorder, record_args
from .spec import model_for, posterior_args, potential_and_grad

__all__ = ["BACKEND", "sample_chains", "make_kernel", "stat_fields", "evaluate_at_centre", "evaluation_of",
           "device_memory", "run_device"]

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
    loss, _ = forward_losses(post.model, settings.forward_dtype)
    return RuleKernel(rule_for(settings), loss, settings.resolved_batch_size(post.n))


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


@in_float64
def sample_chains(post: GibbsPosterior, settings: SamplerSettings, *, record: DrawRecord | None = None,
                  plan: ProbePlan | None = None, keep_params: int = 1) -> RunResult:
    """Compile and run the chains in float64 (inside ``jax.enable_x64(True)``; the process's
    JAX configuration is left as it was): burn-in, then the draws in up to 20 equal compiled
    segments that keep what completed (see .driver). Every kept draw's ``record`` (loss,
    observables, probe losses, per-sample losses) is evaluated inside the compiled loop
    (.recording); the draws' parameters are returned only with ``keep_params``."""
    dev = run_device(settings)
    if dev is not None:  # everything of this run is created on (and stays on) that device
        with jax.default_device(dev):
            return _sample_chains(post, settings, record, plan, keep_params, chain_devices=1)
    return _sample_chains(post, settings, record, plan, keep_params, chain_devices=settings.chain_devices)


def _sample_chains(post, settings, record, plan, keep_params, *, chain_devices):
    t_start = time.perf_counter()
    args = posterior_args(post, settings.dtype)
    kernel = make_kernel(post, settings)
    C = settings.num_chains
    init = {k: (jnp.broadcast_to(v, (C,) + v.shape) if C > 1 else v) for k, v in args.centre.items()}
    recorder = rargs = None
    if record is not None and record.evaluates_anything:
        loss, token_loss = forward_losses(post.model, settings.forward_dtype)
        recorder = Recorder(record, loss, C, token_loss)
        rargs = recorder.with_shifts(args, record_args(plan, args, record, settings.dtype))
    seg = run_segmented(kernel, args, init, settings, stat_fields(settings), recorder=recorder, rargs=rargs,
                        keep_draws=keep_params, chain_devices=chain_devices)
    values = evaluation_of(seg.values, seg.acc, record, rargs) if recorder is not None else None
    return RunResult(draws=seg.samples, stats=seg.extra, stop_reason=seg.reason, dtype=settings.dtype,
                     seconds=time.perf_counter() - t_start, values=values)


def evaluation_of(series: dict, acc, record: DrawRecord, rargs) -> Evaluation:
    """The recorded series and per-sample accumulator as an :class:`Evaluation` (NumPy)."""
    series = jax.tree.map(np.ascontiguousarray, series)  # C order: reductions as on a reloaded trace
    stored = acc if record.per_sample == "stored" else None
    moments = acc if record.per_sample == "streamed" else None
    shifts = tuple(np.asarray(x) for x in rargs.shifts) if moments is not None else None
    return Evaluation(series.get("loss"), series.get("delta"), dict(series.get("observables", {})),
                      dict(series.get("dataset_losses", {})), stored, moments=moments, moment_shifts=shifts)


def run_device(settings: SamplerSettings):
    """The JAX device of ``settings.device`` ("cpu", "gpu"/"cuda", "tpu", optionally ":k"), or
    None (JAX's default placement, sharded over the local devices); ValueError when JAX has
    no such device."""
    if settings.device is None:
        return None
    platform, _, index = settings.device.partition(":")
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)
    try:
        devices = jax.devices(platform)
        return devices[int(index or 0)]
    except (RuntimeError, ValueError, IndexError) as exc:
        available = sorted({f"{d.platform}:{d.id}" for d in jax.devices()})
        raise ValueError(f"`device={settings.device!r}`: JAX has no such device ({exc}); it has {available}. "
                         "Use one of those, or device=None.") from None


def device_memory(settings: SamplerSettings) -> tuple[str, int] | None:
    """(name, free bytes) of the run's device when it is an accelerator; None on the CPU
    (host memory, checked by ``sample()`` already). Free = ``bytes_limit - bytes_in_use`` of
    ``Device.memory_stats()``; None when the platform does not report them."""
    dev = run_device(settings) or jax.local_devices()[0]
    if dev.platform == "cpu":
        return None
    stats = dev.memory_stats() or {}
    limit = stats.get("bytes_limit")
    return None if not limit else (f"{dev.platform}:{dev.id}", int(limit) - int(stats.get("bytes_in_use", 0)))


#: The NumPyro (JAX) backend (the protocol of pplpatterning.sampling.backend).
BACKEND = FunctionBackend("numpyro", ("jax", "jaxlib", "numpyro"), evaluate_at_centre, sample_chains,
                          potential_and_grad, device_memory)
