"""`sample`: run a GibbsPosterior on a backend and return a Trace — the one skeleton every
backend runs under.

``sample()`` validates everything (settings, memory, observables and probes evaluated once
at w*), then asks the backend (:mod:`.backend`) to ``run`` the chains, evaluating every kept
draw's record (:mod:`.record`: loss, observables, probe losses, per-sample losses stored or
streamed) inside its loop, and builds the Trace here: the keep-what-completed policy and
the incomplete-run attrs exist once. Backends are imported lazily by name, so importing
pplpatterning never imports JAX or torch; nothing after the Trace needs either.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from pplpatterning.samplers.settings import SamplerSettings
from pplpatterning.sampling.backend import BACKENDS, Backend, RunResult, check_backend_name, get_backend
from pplpatterning.sampling.evaluation import Evaluation, incomplete_reason
from pplpatterning.sampling.memory import SampleMemoryError, check_memory, estimate_memory
from pplpatterning.sampling.record import DrawRecord, make_record
from pplpatterning.spec.observables import validate_observables
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.spec.probes import ProbePlan, Probes, dataset_losses, sample_losses
from pplpatterning.trace import build_trace, run_attrs
from pplpatterning.trace.moments import MOMENTS_GROUP, MOMENTS_LOSS_DELTA, moments_dataset

__all__ = ["sample", "BACKENDS", "SampleMemoryError", "estimate_memory", "check_memory", "check_at_centre",
           "get_backend"]


def _finite_scalar_at_centre(module, posterior: GibbsPosterior, fn, what: str, shape: tuple[int, ...] = ()):
    """``module.evaluate_at_centre(posterior, fn)`` (contract C1), any exception or a result that
    is not finite with ``shape`` turned into a ValueError naming ``what``."""
    evaluate = module.evaluate_at_centre  # outside the try: a backend without it is not the user's error
    try:
        value = np.asarray(evaluate(posterior, fn))
    except Exception as exc:
        raise ValueError(f"{what} failed at the centre w*: {type(exc).__name__}: {exc}") from exc
    kind = "a finite scalar (shape ())" if shape == () else f"finite values of shape {shape}"
    if value.shape != shape:
        raise ValueError(f"{what} must return {kind}; at the centre w* it returned shape {value.shape}.")
    if value.dtype.kind not in "biuf" or not np.all(np.isfinite(value)):
        shown = value if value.size <= 5 else f"{int(np.sum(~np.isfinite(value)))} non-finite value(s)"
        raise ValueError(f"{what} must return {kind}; at the centre w* it returned {shown}.")


def _backend_batch(batch: Mapping[str, np.ndarray], xp) -> dict[str, Any]:
    """A NumPy data dict as backend arrays (writable copies: torch warns on read-only memory)."""
    return {k: xp.asarray(np.array(v)) for k, v in batch.items()}


def check_at_centre(module, posterior: GibbsPosterior, observables: Mapping[str, Any],
                    plan: ProbePlan | None) -> None:
    """Evaluate every observable, every probe data set's loss and (once) the per-sample probe
    losses at w* on the backend, eagerly, before anything is compiled (issue 9): a function
    that fails or returns the wrong shape fails here, not after the whole run."""
    for name, phi in observables.items():
        _finite_scalar_at_centre(module, posterior, lambda p, c, xp, phi=phi: phi(p, xp), f"observable {name!r}")
    if plan is None:
        return
    loss = posterior.model.loss
    for name, batch in plan.datasets.items():
        def fn(p, c, xp, name=name, batch=batch):
            return dataset_losses(loss, p, {name: _backend_batch(batch, xp)}, c, xp)[name]
        _finite_scalar_at_centre(module, posterior, fn, f"probe data set {name!r}")
    batch = plan.per_sample_batch
    if batch is not None:
        def per_sample(p, c, xp):
            rows = _backend_batch(batch, xp)
            if plan.tokens:  # one row per (sequence, position)
                return xp.reshape(posterior.model.token_loss(p, rows, c, xp), (-1,))
            return sample_losses(loss, p, rows, c, xp)
        _finite_scalar_at_centre(module, posterior, per_sample, "the per-sample probe losses",
                                 shape=(plan.num_per_sample,))


def sample(
    posterior: GibbsPosterior,
    *,
    backend: str = "numpyro",
    sampler: str = "nuts",
    num_chains: int = 4,
    num_draws: int = 1000,
    num_burnin: int = 500,
    step_size: float | None = None,
    batch_size: int | None = None,
    thinning: int = 1,
    loss_estimate: str = "full",
    seed: int = 0,
    progress_bar: bool = True,
    observables: Mapping[str, Callable[..., Any]] | None = None,
    keep_params: bool | int = True,
    probes: Probes | None = None,
    dtype: str = "float64",
    eval_size: int | None = None,
    chain_devices: int | None = None,
    device: str | None = None,
    forward_dtype: str | None = None,
    **options: Any,
) -> xr.DataTree:
    """Sample ``posterior`` and return a Trace (an ArviZ DataTree).

    Every argument is validated before anything is compiled: the settings
    (:class:`~pplpatterning.samplers.settings.SamplerSettings`), the memory the run needs
    (:func:`estimate_memory`), and every observable and probe loss, evaluated once at the
    centre w* on the backend (:func:`check_at_centre`). ``observables`` maps names to
    functions ``phi(params, xp) -> scalar`` evaluated on every kept draw (builders in
    :mod:`pplpatterning.spec.observables`). ``probes`` (a :class:`~pplpatterning.spec.probes.Probes`)
    adds the probe data sets' losses and the per-sample losses the susceptibility
    estimators need; all of them are evaluated at every kept draw inside the sampling loop
    (:mod:`pplpatterning.sampling.record`), so the draws' parameters are held only with
    ``keep_params`` (True: every kept draw; an integer k: every k-th, the ``posterior``
    group's ``draw`` coordinate then holds their kept-draw indices; False: none). ``dtype="float32"`` runs the parameters, data and passes in float32 with
    the loss differences and accumulators in float64 (update-rule samplers; see
    :class:`~pplpatterning.samplers.settings.SamplerSettings`); with it,
    ``forward_dtype="bfloat16"`` computes the loss's passes in bfloat16 (mixed precision,
    :mod:`pplpatterning.spec.forward`). Sampler-specific options
    (``target_accept``, ``alpha``, ``diffusion``,
    ...) are passed as keywords; see :data:`pplpatterning.samplers.settings.SAMPLERS`. The memory
    estimate is recorded in the Trace's attrs as ``memory_estimate_bytes``.
    """
    if not isinstance(posterior, GibbsPosterior):
        raise TypeError(f"`posterior` must be a GibbsPosterior, got {type(posterior).__name__}.")
    stride = param_stride(keep_params, num_draws)
    check_backend_name(backend)
    settings = SamplerSettings(
        sampler=sampler, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin,
        step_size=step_size, batch_size=batch_size, thinning=thinning, loss_estimate=loss_estimate,
        seed=seed, progress_bar=progress_bar, options=options, dtype=dtype, eval_size=eval_size,
        chain_devices=chain_devices, device=device, forward_dtype=forward_dtype,
    )
    settings.resolved_batch_size(posterior.n)
    settings.resolved_eval_size(posterior.n)
    observables = {} if observables is None else observables
    validate_observables(observables, posterior)
    observables = dict(observables)
    plan = None
    if probes is not None:
        if not isinstance(probes, Probes):
            raise TypeError(f"`probes` must be a pplpatterning.spec.probes.Probes, got {type(probes).__name__}.")
        plan = probes.resolve(posterior, settings)
    memory = check_memory(posterior, settings, keep_params=stride, num_observables=len(observables),
                          plan=plan)
    module = get_backend(backend)
    # the device is checked (and its free memory read) before anything compiles
    device = module.device_memory(settings) if getattr(module, "device_memory", None) is not None else None
    if device is not None:  # the run's arrays live on an accelerator: check its free memory too
        check_memory(posterior, settings, keep_params=stride, num_observables=len(observables),
                     plan=plan, available=device[1], where=device[0])
    check_at_centre(module, posterior, observables, plan)
    record = make_record(settings, observables, plan, num_samples=posterior.n)
    run = module.run(posterior, settings, record=record, plan=plan, keep_params=stride)
    trace = assemble_trace(module, posterior, settings, run, record, plan, param_stride=stride)
    trace.attrs["memory_estimate_bytes"] = int(memory)
    return trace


def param_stride(keep_params: Any, num_draws: int) -> int:
    """``keep_params`` as the stride of the kept parameter draws: True → 1 (every kept draw),
    False → 0 (none), an integer k ≥ 1 → every k-th (k must divide ``num_draws``)."""
    if isinstance(keep_params, (bool, np.bool_)):
        return int(keep_params)
    if not isinstance(keep_params, (int, np.integer)) or keep_params < 1:
        raise TypeError(f"`keep_params` must be True, False or a positive integer k (keep every k-th draw's "
                        f"parameters), got {keep_params!r}.")
    if isinstance(num_draws, int) and num_draws > 0 and num_draws % int(keep_params):
        raise ValueError(f"`keep_params={keep_params}` must divide num_draws={num_draws}; e.g. "
                         f"keep_params={max(d for d in range(1, int(keep_params) + 1) if num_draws % d == 0)}.")
    return int(keep_params)


def assemble_trace(module: Backend, posterior: GibbsPosterior, settings: SamplerSettings, run: RunResult,
                   record: DrawRecord, plan: ProbePlan | None, *, param_stride: int = 1) -> xr.DataTree:
    """The keep-what-completed policy, once for every backend: a run stopped before any kept
    draw raises; one stopped later warns and keeps its completed draws and their recorded
    values (the minibatch loss taken from the sampler with ``loss_estimate="minibatch"``);
    attrs ``incomplete``/``incomplete_reason`` say what happened (issue 9, contract C3)."""
    D = run.num_draws
    if run.stop_reason is not None and D == 0:
        raise FloatingPointError(f"Sampling stopped before any draw was kept: {run.stop_reason}.")
    if run.stop_reason is not None:
        warnings.warn(f"Sampling stopped early: {run.stop_reason}. The trace keeps the {D} of "
                      f"{settings.num_draws} draws per chain completed before that.", RuntimeWarning, stacklevel=3)
    ev = run.values if run.values is not None else Evaluation(None, None, {}, {}, None)
    stats = dict(run.stats)
    loss, delta = (stats["minibatch_loss"], stats["minibatch_loss_delta"]) if not record.with_loss else (ev.loss, ev.delta)
    groups = {}
    if plan is not None:
        stored = None
        if record.per_sample == "stored":
            stored = ev.per_sample[:, :plan.thinned_draws(D).size]
        groups = plan.assemble(dataset_losses=ev.dataset_losses, per_sample=stored, num_draws=D)
        if record.per_sample == "streamed":
            groups[MOMENTS_GROUP] = moments_dataset(
                ev.moments, observables=record.observable_names + [MOMENTS_LOSS_DELTA], phi_shift=ev.moment_shifts[0],
                delta_shift=ev.moment_shifts[1], num_train=plan.num_train, train_coords=plan.row_coords("train"),
                train_weights=plan.row_weights, num_held_out=plan.num_held_out,
                held_out_coords=plan.row_coords("held_out"), thinning=plan.thinning)
    attrs = run_attrs(posterior, settings, backend=module.name, dtype=run.dtype, packages=module.packages,
                      incomplete_reason=incomplete_reason(run.stop_reason, ev, D),
                      sampling_seconds=run.seconds, evaluation_seconds=0.0)
    return build_trace(posterior=run.draws, sample_stats={"loss": loss, "loss_delta": delta, **stats},
                       observables=ev.observables, attrs=attrs, extra_groups=groups,
                       param_draws=np.arange(0, D, max(param_stride, 1)) if param_stride > 1 else None)
