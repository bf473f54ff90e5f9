"""Side-by-side sampler comparison: one posterior, a grid of backend × sampler.

Each row is one ``sample`` run: λ̂ ± MCSE, the exact λ and the exact finite-nβ target where
the model knows them, z = (λ̂ - target)/MCSE, R-hat, bulk/tail ESS, ESS per second of wall
time, the wall time itself, whether the run is ``incomplete``, and ``problems``: the codes of
``diagnose(trace, target=target)``'s error and warning findings, comma separated
(``off_target`` when |z| > 3, ``incomplete``, ``stuck_chain``, ``rhat``, ...; see
pplpatterning.estimators.diagnose). Runs that fail keep their row with the error, so one broken
sampler does not hide the others.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from pplpatterning.estimators.diagnose import diagnose
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.samplers.settings import SamplerSettings
from pplpatterning.sampling.core import BACKENDS, get_backend, sample

__all__ = ["compare", "finite_target", "trace_row", "COLUMNS"]

COLUMNS = ["backend", "sampler", "llc", "mcse", "target", "lambda_exact", "z", "rhat", "ess_bulk", "ess_tail",
           "ess_per_s", "wall_s", "num_chains", "num_draws", "step_size", "incomplete", "problems", "error"]


def finite_target(post: GibbsPosterior) -> float | None:
    """The model's exact finite-nβ E[λ̂] for this posterior, or None if unknown. The zoo's
    targets restrict whole parameters only, so a sub-parameter (masked) restriction has none."""
    fn = post.model.target_fn
    if fn is None or post.masks:
        return None
    value = fn(post)
    return None if value is None else float(value)


def target_or_none(post: GibbsPosterior) -> float | None:
    """:func:`finite_target`, with a target that cannot be computed reported as unknown (None)."""
    try:
        return finite_target(post)
    except Exception:  # an unknown target does not stop a run or a sweep
        return None


def trace_row(trace, target: float | None, wall_s: float) -> dict[str, Any]:
    """The estimate columns of one row, judged by ``diagnose(trace, target=target)``."""
    diag = diagnose(trace, target=target)
    est = diag.estimate
    return dict(llc=est.llc, mcse=est.mcse, z=diag.z, rhat=est.rhat, ess_bulk=est.ess_bulk, ess_tail=est.ess_tail,
                ess_per_s=est.ess_bulk / wall_s if wall_s > 0 else float("nan"), wall_s=wall_s,
                num_draws=est.num_draws_total, incomplete=diag.incomplete,
                problems=",".join(dict.fromkeys(diag.problem_codes())))


def _exclusions(exclude, backends: list[str], samplers: list[str]) -> set[tuple[str, str]]:
    """``exclude`` entries ("backend.sampler" or (backend, sampler)) as a set of pairs, validated."""
    if isinstance(exclude, (str, bytes)):
        exclude = [exclude]
    pairs = set()
    for item in exclude or ():
        pair = tuple(item.split(".", 1)) if isinstance(item, str) else tuple(item)
        if len(pair) != 2 or pair[0] not in backends or pair[1] not in samplers:
            raise ValueError(f"`exclude` entry {item!r} must be BACKEND.SAMPLER with a backend of {backends} and a "
                             f"sampler of {samplers}, e.g. 'pyro.nuts'.")
        pairs.add(pair)
    if len(pairs) == len(backends) * len(samplers):
        raise ValueError("`exclude` leaves no backend × sampler pair to run.")
    return pairs


def compare(
    posterior: GibbsPosterior,
    *,
    backends: Sequence[str] = BACKENDS,
    samplers: Sequence[str] = ("nuts", "mala", "sgld"),
    sampler_options: Mapping[str, Mapping[str, Any]] | None = None,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_burnin: int = 500,
    seed: int = 0,
    progress_bar: bool = False,
    exclude: Sequence[str | tuple[str, str]] = (),
) -> pd.DataFrame:
    """Run every backend × sampler on ``posterior`` and return one row per run.

    ``sampler_options`` maps a sampler name to its keyword arguments (``step_size``,
    ``batch_size``, ``target_accept``, ...), the same for every backend. ``exclude`` names
    pairs to skip, as ``"backend.sampler"`` strings or (backend, sampler) tuples. All
    settings are validated before the first run.
    """
    if not isinstance(posterior, GibbsPosterior):
        raise TypeError(f"`posterior` must be a GibbsPosterior, got {type(posterior).__name__}.")
    backends, samplers = list(backends), list(samplers)
    if not backends or not samplers:
        raise ValueError("`backends` and `samplers` must each name at least one entry.")
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"`backends` entry {b!r} is not one of {list(BACKENDS)}.")
    skip = _exclusions(exclude, backends, samplers)
    opts = {s: dict((sampler_options or {}).get(s, {})) for s in samplers}
    unknown = set(sampler_options or {}) - set(samplers)
    if unknown:
        raise ValueError(f"`sampler_options` names samplers not in `samplers`: {sorted(unknown)}.")
    for s in samplers:  # validate everything before running anything
        common = {k: opts[s][k] for k in ("step_size", "batch_size", "thinning", "loss_estimate") if k in opts[s]}
        extra = {k: v for k, v in opts[s].items() if k not in common}
        SamplerSettings(sampler=s, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, seed=seed,
                        options=extra, **common).resolved_batch_size(posterior.n)
    for b in backends:
        get_backend(b)
    target = finite_target(posterior)

    rows = []
    for b in backends:
        for s in samplers:
            if (b, s) in skip:
                continue
            row: dict[str, Any] = dict(backend=b, sampler=s, target=target, lambda_exact=posterior.model.lam,
                                       num_chains=num_chains, num_draws=num_draws,
                                       step_size=opts[s].get("step_size"), incomplete=False, problems="", error="")
            t0 = time.perf_counter()
            try:
                tr = sample(posterior, backend=b, sampler=s, num_chains=num_chains, num_draws=num_draws,
                            num_burnin=num_burnin, seed=seed, progress_bar=progress_bar, keep_params=False,
                            **opts[s])
            except Exception as exc:  # keep the row, report the failure
                row.update(wall_s=time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
                rows.append(row)
                continue
            row.update(trace_row(tr, target, time.perf_counter() - t0))
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)

