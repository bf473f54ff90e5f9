"""What a run will need in memory, stated and checked before anything is compiled."""

from __future__ import annotations

import dataclasses
import math

from pplpatterning.samplers.settings import SamplerSettings
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.spec.probes import MEMORY_COPIES, ProbePlan, available_memory, format_gb
from pplpatterning.trace.moments import moments_bytes, num_batches

__all__ = ["SampleMemoryError", "estimate_memory", "check_memory", "STATE_COPIES", "PER_DRAW_STATS"]

#: Copies of the d parameters each chain keeps while sampling: position, gradient, momentum,
#: a proposal with its gradient, adaptation (mass matrix, RMSProp V) and the backend's buffers.
STATE_COPIES = 8
#: Scalars recorded per kept draw beside the observables and probe losses (loss, loss_delta
#: and the sampler's statistics: accept_prob, step_size, diverging, energy, ...).
PER_DRAW_STATS = 8
_BYTES = 8  # float64

class SampleMemoryError(MemoryError, ValueError):
    """The run asked for will not fit in memory (raised before anything is compiled)."""




def estimate_memory(posterior: GibbsPosterior, settings: SamplerSettings, *, keep_params: bool,
                    num_observables: int = 0, plan: ProbePlan | None = None) -> dict[str, int]:
    """Bytes a run needs, by part (a lower bound of the peak; p = 4 bytes per parameter or
    data value with ``dtype="float32"``, 8 with float64; series and accumulators are float64):

    - ``state``: C × (STATE_COPIES × d + B) × p: each chain's sampler state and its per-sample
      losses on a batch of B rows (chains run as one vectorised batch);
    - ``data``: the training data in the run's precision (integer ids 8 bytes), once more on
      an accelerator than in host memory;
    - ``draws``: C × D × (PER_DRAW_STATS + #observables + #probe data sets) × 8 for the
      recorded scalar series, plus C × D × 2 d_sampled × p for the draws' parameters only with
      ``keep_params`` (NumPyro concatenates its segments; without it every kept draw is
      evaluated inside the sampling loop, pplpatterning.sampling.record);
    - ``probes``: the per-sample probe losses at their peak, MEMORY_COPIES × the stored
      (chain, draw, sample) losses, or MEMORY_COPIES × the streamed float64 batch sums
      (:func:`pplpatterning.trace.moments.moments_bytes`; independent of D).

    C = num_chains, D = num_draws (kept), d = number of scalar parameters (all of them for
    the state, whose forward pass assembles every parameter; the sampled ones for the kept draws).
    """
    d = posterior.model.dim
    rows = settings.resolved_batch_size(posterior.n)
    num_sets = 0 if plan is None else len(plan.datasets)
    stride = int(keep_params)  # keep_params=k: the parameters of every k-th kept draw (0: none)
    kept_params = -(-settings.num_draws // stride) if stride else 0
    p = 4 if settings.dtype == "float32" else 8
    probes = 0
    if plan is not None and plan.stream:
        recorded = math.ceil(settings.num_draws / plan.thinning)
        probes = moments_bytes(settings.num_chains, num_batches(recorded), plan.num_per_sample, num_observables + 1)
    elif plan is not None:
        probes = plan.memory_bytes
    per_draw = (PER_DRAW_STATS + num_observables + num_sets) * _BYTES
    data = sum(int(v.size) * (p if v.dtype.kind == "f" else 8) for v in posterior.data.values())
    return {
        "state": settings.num_chains * (STATE_COPIES * d + rows) * p,
        "data": data,
        "draws": settings.num_chains * (settings.num_draws * per_draw + kept_params * 2 * posterior.sampled_dim * p),
        "probes": MEMORY_COPIES * probes,
    }


def check_memory(posterior: GibbsPosterior, settings: SamplerSettings, *, keep_params: bool,
                 num_observables: int = 0, plan: ProbePlan | None = None,
                 available: int | None = None, where: str = "") -> int:
    """The total of :func:`estimate_memory`; raise :class:`SampleMemoryError` naming
    ``num_chains`` / ``num_draws`` / ``keep_params`` and what fits when it exceeds the
    available memory (:func:`pplpatterning.spec.probes.available_memory`, or ``available``
    bytes on the device named ``where``, e.g. "gpu:0")."""
    parts = estimate_memory(posterior, settings, keep_params=keep_params, num_observables=num_observables,
                            plan=plan)
    need = sum(parts.values())
    avail = available_memory() if available is None else int(available)
    if need <= avail:
        return int(need)
    C, D = settings.num_chains, settings.num_draws
    per_chain = (parts["state"] + parts["draws"]) // C
    fixes = []
    fixed = parts["probes"] + parts["data"]
    max_chains = (avail - fixed) // per_chain if avail > fixed else 0
    if 1 <= max_chains < C:
        fixes.append(f"num_chains ≤ {max_chains}")
    room = avail - fixed - parts["state"]
    if room > 0 and parts["draws"]:
        max_draws = room // (parts["draws"] // D)
        if 1 <= max_draws < D:
            fixes.append(f"num_draws ≤ {max_draws} (or a larger `thinning`)")
    if settings.dtype == "float64" and settings.sampler not in ("nuts", "hmc"):
        as32 = sum(estimate_memory(posterior, dataclasses.replace(settings, dtype="float32"), keep_params=keep_params,
                                   num_observables=num_observables, plan=plan).values())
        if as32 <= avail:
            fixes.append('dtype="float32"')
    if keep_params:
        without = sum(estimate_memory(posterior, settings, keep_params=False, num_observables=num_observables,
                                      plan=plan).values())
        if without <= avail:
            fixes.append("keep_params=False")
    fixes = fixes or ["fewer num_chains and num_draws"]
    raise SampleMemoryError(
        f"This run needs about {format_gb(need)} but only {format_gb(avail)} is available"
        f"{f' on {where}' if where else ''}; nothing was compiled or sampled. "
        f"num_chains={C} × d={posterior.model.dim} parameters: sampler state {format_gb(parts['state'])}; "
        f"data {format_gb(parts['data'])}; "
        f"num_draws={D} kept draws per chain (keep_params={keep_params}): {format_gb(parts['draws'])}; "
        f"probes: {format_gb(parts['probes'])}. Use " + ", or ".join(fixes) + "."
    )
