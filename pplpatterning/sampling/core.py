"""`sample`: run a GibbsPosterior on a backend and return a Trace.

Backends are imported lazily by name, so importing pplpatterning never imports JAX or
torch; nothing after the Trace needs either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from pplpatterning.spec.observables import validate_observables
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.spec.probes import MEMORY_COPIES, ProbePlan, Probes, _gb, available_memory, dataset_losses, sample_losses
from pplpatterning.samplers.settings import SamplerSettings

__all__ = ["sample", "BACKENDS", "SampleMemoryError", "estimate_memory", "check_at_centre"]

#: Copies of the d parameters each chain keeps while sampling: position, gradient, momentum,
#: a proposal with its gradient, adaptation (mass matrix, RMSProp V) and the backend's buffers.
STATE_COPIES = 8
#: Scalars recorded per kept draw beside the observables and probe losses (loss, loss_delta
#: and the sampler's statistics: accept_prob, step_size, diverging, energy, ...).
PER_DRAW_STATS = 8
_BYTES = 8  # float64

BACKENDS = ("numpyro", "pyro")


def get_backend(name: str):
    """Import the backend module ``pplpatterning.backends.<name>``."""
    if name not in BACKENDS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got {name!r}.")
    import importlib

    try:
        return importlib.import_module(f"pplpatterning.backends.{name}")
    except ModuleNotFoundError as exc:
        extra = "numpyro" if name == "numpyro" else "pyro"
        raise ImportError(
            f"The {name!r} backend needs packages that are not installed ({exc.name}); "
            f"install them with `pip install 'pplpatterning[{extra}]' -c constraints.txt`."
        ) from exc


class SampleMemoryError(MemoryError, ValueError):
    """The run asked for will not fit in memory (raised before anything is compiled)."""


def estimate_memory(posterior: GibbsPosterior, settings: SamplerSettings, *, keep_params: bool,
                    num_observables: int = 0, plan: ProbePlan | None = None) -> dict[str, int]:
    """Bytes a run needs, by part (a lower bound of the peak, float64 = 8 bytes each):

    - ``state``: C × (STATE_COPIES × d + B) × 8: each chain's sampler state and its per-sample
      losses on a batch of B rows (chains run as one vectorised batch);
    - ``draws``: C × D × (k d + PER_DRAW_STATS + #observables + #probe data sets) × 8: the kept
      draws, which are held for the evaluation after sampling (k = 1), with a second copy when
      ``keep_params`` (NumPyro concatenates its segments: k = 2);
    - ``probes``: the per-sample probe losses at their peak, MEMORY_COPIES × plan.memory_bytes.

    C = num_chains, D = num_draws (kept), d = number of scalar parameters.
    """
    d = posterior.model.dim
    rows = settings.resolved_batch_size(posterior.n)
    num_sets = 0 if plan is None else len(plan.datasets)
    per_draw = (d * (2 if keep_params else 1) + PER_DRAW_STATS + num_observables + num_sets) * _BYTES
    return {
        "state": settings.num_chains * (STATE_COPIES * d + rows) * _BYTES,
        "draws": settings.num_chains * settings.num_draws * per_draw,
        "probes": 0 if plan is None else MEMORY_COPIES * plan.memory_bytes,
    }


def check_memory(posterior: GibbsPosterior, settings: SamplerSettings, *, keep_params: bool,
                 num_observables: int = 0, plan: ProbePlan | None = None,
                 available: int | None = None) -> int:
    """The total of :func:`estimate_memory`; raise :class:`SampleMemoryError` naming
    ``num_chains`` / ``num_draws`` / ``keep_params`` and what fits when it exceeds the
    available memory (:func:`pplpatterning.spec.probes.available_memory`)."""
    parts = estimate_memory(posterior, settings, keep_params=keep_params, num_observables=num_observables,
                            plan=plan)
    need = sum(parts.values())
    avail = available_memory() if available is None else int(available)
    if need <= avail:
        return int(need)
    C, D = settings.num_chains, settings.num_draws
    per_chain = (parts["state"] + parts["draws"]) // C
    fixes = []
    max_chains = (avail - parts["probes"]) // per_chain if avail > parts["probes"] else 0
    if 1 <= max_chains < C:
        fixes.append(f"num_chains ≤ {max_chains}")
    room = avail - parts["probes"] - parts["state"]
    if room > 0 and parts["draws"]:
        max_draws = room // (parts["draws"] // D)
        if 1 <= max_draws < D:
            fixes.append(f"num_draws ≤ {max_draws} (or a larger `thinning`)")
    if keep_params:
        without = sum(estimate_memory(posterior, settings, keep_params=False, num_observables=num_observables,
                                      plan=plan).values())
        if without <= avail:
            fixes.append("keep_params=False")
    fixes = fixes or ["fewer num_chains and num_draws"]
    raise SampleMemoryError(
        f"This run needs about {_gb(need)} but only {_gb(avail)} is available; nothing was compiled or sampled. "
        f"num_chains={C} × d={posterior.model.dim} parameters: sampler state {_gb(parts['state'])}; "
        f"num_draws={D} kept draws per chain (keep_params={keep_params}): {_gb(parts['draws'])}; "
        f"probes: {_gb(parts['probes'])}. Use " + ", or ".join(fixes) + "."
    )


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
            return sample_losses(loss, p, _backend_batch(batch, xp), c, xp)
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
    keep_params: bool = True,
    probes: Probes | None = None,
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
    estimators need. Sampler-specific options (``target_accept``, ``alpha``, ``diffusion``,
    ...) are passed as keywords; see :data:`pplpatterning.samplers.settings.SAMPLERS`. The memory
    estimate is recorded in the Trace's attrs as ``memory_estimate_bytes``.
    """
    if not isinstance(posterior, GibbsPosterior):
        raise TypeError(f"`posterior` must be a GibbsPosterior, got {type(posterior).__name__}.")
    if not isinstance(keep_params, (bool, np.bool_)):
        raise TypeError(f"`keep_params` must be True or False, got {keep_params!r}.")
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got {backend!r}.")
    settings = SamplerSettings(
        sampler=sampler, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin,
        step_size=step_size, batch_size=batch_size, thinning=thinning, loss_estimate=loss_estimate,
        seed=seed, progress_bar=progress_bar, options=options,
    )
    settings.resolved_batch_size(posterior.n)
    observables = {} if observables is None else observables
    validate_observables(observables, posterior)
    observables = dict(observables)
    plan = None
    if probes is not None:
        if not isinstance(probes, Probes):
            raise TypeError(f"`probes` must be a pplpatterning.spec.probes.Probes, got {type(probes).__name__}.")
        plan = probes.resolve(posterior, settings)
    memory = check_memory(posterior, settings, keep_params=bool(keep_params), num_observables=len(observables),
                          plan=plan)
    module = get_backend(backend)
    check_at_centre(module, posterior, observables, plan)
    kwargs: dict[str, Any] = {"observables": observables, "keep_params": bool(keep_params)}
    if plan is not None:
        kwargs["probes"] = plan
    trace = module.sample(posterior, settings, **kwargs)
    trace.attrs["memory_estimate_bytes"] = int(memory)
    return trace
