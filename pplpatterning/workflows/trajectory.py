"""LLC trajectories over training: λ̂ (and refined λ̂ of components) at every checkpoint.

A training run saved as checkpoints (:mod:`pplpatterning.spec.checkpoints`) gives one centre
w*_t per step t. :func:`llc_trajectory` estimates λ̂(w*_t) = nβ (E[L_n(w)] - L_n(w*_t)) at
each (docs/math.md §2), and, for each named component C, the weight-restricted λ̂_C(w*_t)
(only C sampled, the rest frozen at w*_t; Wang et al. 2024, arXiv 2410.02984). Plotted against
the step it is the curve whose turning points developmental interpretability reads as stage
boundaries (arXiv 2402.02364; :func:`~pplpatterning.workflows.stages.detect_stages`).

Every (checkpoint, component) pair is one independent *job*: one ``sample()`` on the
checkpoint's posterior and one ``llc()`` of its trace. The jobs

- are validated together before any of them runs (checkpoint names and shapes, components,
  the sampler settings);
- share one compiled program per shape: on the NumPyro backend the centre, data and weights
  are traced arguments and the driver keeps the programs of earlier runs
  (``backends/numpyro/driver.py``, :data:`PROGRAM_TRACES` there counts the traces), so
  the checkpoints of one run compile once (and each component's restriction once);
- are seeded by their identity, not by their order: :func:`job_seed` of (``seed``, the
  checkpoint's step, the component's name), so a serial, a resumed and a distributed run
  give the same numbers;
- can be saved one by one (``store=``) as each finishes, and skipped when found there;
- can run on a Dask cluster or any executor (``client=``).

Nothing here imports JAX or torch: the backends are reached through ``sample()``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from pplpatterning.estimators.convergence import series_mcse
from pplpatterning.estimators.diagnose import diagnose
from pplpatterning.estimators.llc import llc
from pplpatterning.samplers.settings import SamplerSettings
from pplpatterning.sampling.backend import check_backend_name, get_backend
from pplpatterning.sampling.core import check_memory, sample
from pplpatterning.spec.checkpoints import Checkpoint, load_checkpoints
from pplpatterning.spec.masks import resolve_component
from pplpatterning.spec.observables import validate_observables
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.spec.refine import refine
from pplpatterning.workflows.jobs import JobStore, SharedPayload, digest, run_on

__all__ = ["llc_trajectory", "job_seed", "run_job", "TrajectoryJob", "SharedPayload", "WHOLE", "STORE_FORMAT"]

#: The ``component`` coordinate of the unrestricted λ̂ (the template posterior's own restriction).
WHOLE = "whole"
#: The version of the ``store=`` layout (trajectory.json + one netCDF file per job).
STORE_FORMAT = 2

# sample() arguments the trajectory sets itself, and why
_RESERVED = {
    "seed": "pass `seed=` to llc_trajectory: each job's seed is derived from it (job_seed)",
    "progress_bar": "pass `progress_bar=` to llc_trajectory: one bar over all jobs, the runs' own bars off",
    "observables": "pass `observables=` to llc_trajectory",
    "keep_params": "the jobs keep no draws' parameters (keep_params=False)",
}

#: sample()'s keyword arguments and their defaults (what a job passes on unless given)
_SAMPLE_DEFAULTS = {k: p.default for k, p in inspect.signature(sample).parameters.items()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY}


# ----------------------------------------------------------------------------- seeds, digests
def job_seed(seed: int, step: int, component: str = WHOLE) -> int:
    """The seed of the job (checkpoint at ``step``, ``component``) of a trajectory seeded by
    ``seed``: the first 63 bits of ``numpy.random.SeedSequence([seed, step, h])``, h = the first
    8 bytes of SHA-256(component name). It depends on the job's identity only, never on the
    order in which jobs run or the worker that runs them."""
    h = int.from_bytes(hashlib.sha256(str(component).encode()).digest()[:8], "little")
    word = np.random.SeedSequence([int(seed), int(step), h]).generate_state(1, np.uint64)[0]
    return int(word) >> 1


# ----------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class TrajectoryJob:
    """One (checkpoint, component) job: the checkpoint's ``step`` and ``params``, the
    ``component`` name and its ``restriction`` (None for :data:`WHOLE`: the template's own;
    else parameter names or ``{name: bool mask}``, passed to ``refine``), its ``seed``
    (:func:`job_seed`) and ``identity`` (what a store checks on resume). Plain data:
    picklable for any executor."""

    index: int
    step: int
    component: str
    params: dict
    restriction: Any
    seed: int
    identity: dict


@dataclass(frozen=True)
class _Template:
    """What every job shares: the template posterior, the data set q' (or None), the
    observables (a mapping, or a function of the checkpoint's posterior), the backend and
    the other sample() keywords."""

    posterior: GibbsPosterior
    data: Mapping | None
    observables: Any
    backend: str
    sample_kwargs: dict
    probes: Any = None


def run_job(shared: Any, job: TrajectoryJob) -> xr.Dataset:
    """Run one job: ``sample()`` the checkpoint's posterior (restricted to the component,
    refined to q' when the trajectory has ``data=``), with the job's seed and no progress
    bar, and return its result as a small Dataset (scalars ``llc``, ``llc_mcse``, ``rhat``,
    ``ess``, ``ess_tail``, ``loss_at_centre``, ``seconds``, ``seed``, ``incomplete``,
    ``num_draws_used``, and ``observable_mean``/``observable_mcse`` over ``observable``),
    the job's identity in its attrs. Module-level, so executors can pickle it.

    A run stopped by KeyboardInterrupt is not a result: the interrupt is raised again."""
    template: _Template = shared.value if isinstance(shared, SharedPayload) else shared
    t0 = time.perf_counter()
    post = template.posterior.with_(centre=job.params)
    loss_at_centre = post.loss_at_centre  # the training loss L_n^ρ(w*_t)
    if job.restriction is not None or template.data is not None:
        post = refine(post, component=job.restriction, data=template.data)
    obs = template.observables(post) if callable(template.observables) else template.observables
    trace = sample(post, backend=template.backend, seed=job.seed, progress_bar=False, keep_params=False,
                   observables=obs, probes=template.probes, **template.sample_kwargs)
    reason = str(trace.attrs.get("incomplete_reason", ""))
    if reason.startswith("interrupted"):
        raise KeyboardInterrupt(f"llc_trajectory: the run of checkpoint step {job.step}, component "
                                f"{job.component!r} was interrupted")
    est = llc(trace)
    values = {"llc": est.llc, "llc_mcse": est.mcse, "rhat": est.rhat, "ess": est.ess_bulk,
              "ess_tail": est.ess_tail, "loss_at_centre": loss_at_centre}
    data = {k: xr.DataArray(float(v)) for k, v in values.items()}
    data["seed"] = xr.DataArray(np.int64(job.seed))
    data["incomplete"] = xr.DataArray(np.int64(int(trace.attrs.get("incomplete", 0))))
    data["num_draws_used"] = xr.DataArray(np.int64(est.num_draws_used))
    diag = diagnose(trace)  # no target: a checkpoint's finite-nβ λ is not known
    data["healthy"] = xr.DataArray(np.int64(diag.ok))
    data["problems"] = xr.DataArray(np.str_(" ".join(diag.problem_codes())))
    names = sorted(obs or {})
    if names:
        series = xr.concat([trace["observables"][k].astype(np.float64) for k in names],
                           dim=xr.DataArray(names, dims="observable", name="observable"))
        stats = series_mcse(series.isel(draw=slice(0, est.num_draws_used)))
        data["observable_mean"] = stats["mean"].reset_coords(drop=True)
        data["observable_mcse"] = stats["mcse"].reset_coords(drop=True)
    if template.probes is not None:
        from pplpatterning.estimators.susceptibility import susceptibility

        chi = susceptibility(trace).transpose("probe", "observable")
        data["chi"] = chi["chi"].astype(np.float64).reset_coords(drop=True)
        data["chi_se"] = chi["se"].astype(np.float64).reset_coords(drop=True)
    data["seconds"] = xr.DataArray(time.perf_counter() - t0)
    return xr.Dataset(data, attrs={"job": json.dumps(job.identity, sort_keys=True)})


# ----------------------------------------------------------------------------- validation
def _checkpoint_list(checkpoints: Any) -> list[Checkpoint]:
    """Checkpoints from a directory, Checkpoint objects or (step, params) pairs, sorted by step."""
    if isinstance(checkpoints, (str, os.PathLike)):
        out = load_checkpoints(checkpoints)
    else:
        if isinstance(checkpoints, Mapping) or not isinstance(checkpoints, Sequence):
            raise TypeError("`checkpoints` must be a directory of step-*.npz files, a sequence of "
                            "pplpatterning.spec.checkpoints.Checkpoint, or a sequence of (step, params) pairs; "
                            f"got {type(checkpoints).__name__}.")
        out = []
        for i, c in enumerate(checkpoints):
            if isinstance(c, Checkpoint):
                out.append(c)
            elif isinstance(c, (tuple, list)) and len(c) == 2:
                out.append(Checkpoint(c[0], c[1]))
            else:
                raise TypeError(f"`checkpoints[{i}]` must be a Checkpoint or a (step, params) pair, "
                                f"got {type(c).__name__}.")
    if not out:
        raise ValueError("`checkpoints` is empty; give at least one checkpoint.")
    steps = [c.step for c in out]
    dup = sorted({s for s in steps if steps.count(s) > 1})
    if dup:
        raise ValueError(f"`checkpoints` repeat the steps {dup}; every checkpoint needs its own training step.")
    return sorted(out, key=lambda c: c.step)


def _check_params(ckpt: Checkpoint, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """The checkpoint holds every parameter of the model, with the model's shape, and nothing else."""
    missing = [k for k in shapes if k not in ckpt.params]
    unknown = [k for k in ckpt.params if k not in shapes]
    if missing or unknown:
        raise ValueError(f"Checkpoint at step {ckpt.step} does not match the model: "
                         + (f"it lacks {missing}" if missing else "")
                         + ("; " if missing and unknown else "")
                         + (f"it has unknown parameters {unknown}" if unknown else "")
                         + f". The model's parameters are {list(shapes)}.")
    for k, shape in shapes.items():
        if ckpt.params[k].shape != tuple(shape):
            raise ValueError(f"Checkpoint at step {ckpt.step}: parameter {k!r} has shape {ckpt.params[k].shape}; "
                             f"the model expects {tuple(shape)}.")


def _checked_components(components: Any, shapes) -> dict[str, Any]:
    """``{name: restriction}``: names or a mask mapping, each checked against the model."""
    if components is None:
        return {}
    if not isinstance(components, Mapping) or not components:
        raise TypeError("`components` must be a non-empty mapping {component name: parameter name(s) or "
                        "{parameter name: boolean mask}}, or None.")
    out = {}
    for name, spec in components.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"`components` key {name!r} must be a non-empty string.")
        if name == WHOLE:
            raise ValueError(f"`components` may not use the name {WHOLE!r}: it is the unrestricted λ̂'s coordinate.")
        resolve_component(shapes, spec, f"components[{name!r}]")
        if isinstance(spec, str):
            spec = (spec,)
        out[name] = dict(spec) if isinstance(spec, Mapping) else tuple(spec)
    return out


def _checked_sample_kwargs(kwargs: dict, posterior: GibbsPosterior, n_refined: int | None
                           ) -> tuple[str, dict, SamplerSettings]:
    """(backend, the other sample() keywords, their validated SamplerSettings), as sample()
    would check them (SamplerSettings, minibatch and evaluation sizes), before any run."""
    for k, why in _RESERVED.items():
        if k in kwargs:
            raise TypeError(f"`{k}` is not a sample() keyword of llc_trajectory: {why}.")
    defaults = _SAMPLE_DEFAULTS
    merged = {**defaults, **{k: v for k, v in kwargs.items() if k in defaults}}
    options = {k: v for k, v in kwargs.items() if k not in defaults}
    backend = check_backend_name(merged.pop("backend"))
    names = {f.name for f in fields(SamplerSettings)} - {"seed", "progress_bar", "options"}
    settings = SamplerSettings(**{k: merged[k] for k in names}, seed=0, progress_bar=False, options=options)
    for n in (posterior.n,) if n_refined is None else (n_refined,):
        settings.resolved_batch_size(n)
        settings.resolved_eval_size(n)
    rest = {k: v for k, v in kwargs.items() if k != "backend"}
    return backend, rest, settings


def _run_settings(posterior: GibbsPosterior, data: Mapping | None, observables: Any, backend: str,
                  settings: SamplerSettings, seed: int) -> dict:
    """The settings a stored result must share with this call (JSON; checkpoints and components
    are checked per job)."""
    model = posterior.model
    sampler = settings.describe()
    sampler.pop("seed")
    sampler.update(dtype=settings.dtype)
    if callable(observables):
        obs = f"function {getattr(observables, '__module__', '?')}.{getattr(observables, '__qualname__', '?')}"
    else:
        obs = sorted(observables or {})
    loss = model.loss
    return json.loads(json.dumps({
        "format": STORE_FORMAT,
        "model": model.name,
        "loss": f"{getattr(loss, '__module__', '?')}.{getattr(loss, '__qualname__', repr(loss))}",
        "param_shapes": {k: list(v) for k, v in model.param_shapes.items()},
        "consts": digest(dict(model.consts)),
        "n": posterior.n,
        "data": digest(dict(posterior.data)),
        "n_beta": posterior.n_beta,
        "n_beta_source": posterior.n_beta_source,
        "gamma": posterior.gamma,
        "weights": None if posterior.weights is None else digest(posterior.weights),
        "normalize_weights": posterior.normalize_weights,
        "restriction": digest(posterior.restriction),
        "refine_data": None if data is None else digest(dict(data)),
        "backend": backend,
        "sampler": sampler,
        "seed": int(seed),
        "observables": obs,
    }, default=str))


def _run_serial(template: _Template, todo: list[TrajectoryJob], finish: Callable) -> None:
    for job in todo:
        finish(job, run_job(template, job))


def llc_trajectory(
    checkpoints: Any,
    posterior: GibbsPosterior,
    *,
    components: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    observables: Mapping[str, Callable[..., Any]] | Callable[[GibbsPosterior], Mapping] | None = None,
    probes: Any = None,
    store: str | os.PathLike | None = None,
    client: Any = None,
    progress_bar: bool = True,
    seed: int = 0,
    **sample_kwargs: Any,
) -> xr.Dataset:
    """λ̂ at every checkpoint of a training run (and the refined λ̂ of each component, and χ).

    For checkpoint t with parameters w*_t, the posterior is ``posterior.with_(centre=w*_t)``
    (same model, data, nβ, γ, weights) and λ̂_t = nβ (E[L_n^ρ(w)] - L_n^ρ(w*_t)) with its
    MCSE, from :func:`pplpatterning.llc` of one ``sample()`` run (docs/math.md §2). With
    ``components={name: C}`` each checkpoint also gets the weight-restricted λ̂_C (only C
    sampled, the rest frozen at w*_t: ``refine(post, component=C)``, arXiv 2410.02984), C
    being parameter names or a mask mapping ``{name: boolean array}`` (a head's slices, a
    row block); C replaces the template's own restriction, if it has one. With ``data=`` (a
    data set q') every job is data-refined as well: λ̂(q') = nβ (E_{p_q'}[L_q'(w)] - L_q'(w*_t)),
    the centre unchanged.

    Parameters
    ----------
    checkpoints
        A directory of ``step-*.npz`` files (:func:`~pplpatterning.spec.checkpoints.load_checkpoints`),
        a sequence of :class:`~pplpatterning.spec.checkpoints.Checkpoint`, or of
        ``(step, params)`` pairs. Sorted by step; steps must be distinct.
    posterior
        The template :class:`~pplpatterning.GibbsPosterior` (its centre is replaced).
    components, data
        See above. The component name ``"whole"`` is reserved for the unrestricted λ̂.
    observables
        ``{name: φ(params, xp)}`` recorded at every draw of every job (their posterior means
        and MCSEs are returned), or a function ``f(posterior) -> {name: φ}`` called with each
        job's posterior (for observables that depend on the centre, such as
        ``observables.component_loss(post, C)``; those give each job its own compiled program).
    probes
        A :class:`~pplpatterning.Probes` (probe data sets q'); with ``observables``, every job
        also returns the susceptibilities χ(φ; q') = -Cov(φ, L_q' - L_q^ρ) of its run
        (:func:`pplpatterning.susceptibility`, docs/math.md §3) as ``chi`` and ``chi_se``
        (dims ``probe``, ``observable``).
    store
        A directory: each finished job's result is written there at once (atomically: a
        temporary file renamed), and a rerun with the same arguments skips the jobs found
        there, so an interrupted trajectory resumes where it stopped. A store holding a run
        with other settings (model, data, nβ, γ, sampler settings, seed, ...) or another
        checkpoint under the same step raises a ValueError saying what differs.
    client
        None (the jobs run here, one after another), a ``dask.distributed.Client``, or any
        executor with ``submit(fn, *args)`` (``concurrent.futures``): the jobs are submitted
        and their results gathered as they finish; the numbers equal a serial run's. A
        ``ProcessPoolExecutor`` needs the "spawn" context (``mp_context=multiprocessing.get_context("spawn")``):
        forking a process that has started JAX can hang.
    progress_bar
        One bar over the jobs (the runs' own bars are always off); a line before it says how
        many jobs there are and how many were found in the store.
    seed
        Each job's seed is :func:`job_seed` (``seed``, its checkpoint's step, its component
        name): independent of order, workers and resumption.
    **sample_kwargs
        Everything else of :func:`pplpatterning.sample` (``backend``, ``sampler``,
        ``num_chains``, ``num_draws``, ``num_burnin``, ``step_size``, ``batch_size``, sampler
        options, ``dtype``, ``device``, ...), the same for every job, validated before the
        first job runs. ``seed``, ``progress_bar`` and ``keep_params`` are not accepted
        (each job's seed is derived, one bar is shown, no draws are kept).

    Returns
    -------
    xarray.Dataset
        Dims ``checkpoint`` (coordinate: the training step) and, with ``components``,
        ``component`` (``"whole"`` first, then the components in the given order). Variables
        ``llc``, ``llc_mcse``, ``rhat`` (rank-normalised split R-hat of the per-draw loss
        nβ ΔL, the same as the loss's own), ``ess`` and ``ess_tail`` (bulk and tail ESS),
        ``loss_at_centre`` (the training loss L_n^ρ(w*_t), over ``checkpoint``),
        ``seconds`` (wall time of each job), ``seed``, ``incomplete`` (1 when a run stopped
        early and kept only its completed draws), ``num_draws_used``, ``healthy`` (1 when
        :func:`pplpatterning.diagnose` of the job's trace finds no error or warning: complete,
        R-hat ≤ 1.01, enough ESS, λ̂ ≥ 0, ...) and ``problems`` (its codes, e.g. "negative_llc rhat"), and with observables
        ``observable_mean``, ``observable_mcse`` (dim ``observable``), with probes ``chi`` and
        ``chi_se`` (dims ``probe``, ``observable``). Attrs: the settings
        (``settings``, a JSON string, and the main ones as numbers/strings).

    Compilation: on the NumPyro backend the update-rule samplers (SGLD, MALA, ...) trace
    and compile their sampling program once per shape and settings and reuse it for every
    checkpoint (``pplpatterning.backends.numpyro.driver.PROGRAM_TRACES`` counts the traces);
    NUTS/HMC trace per run, their XLA compilations served by JAX's persistent cache when
    ``JAX_COMPILATION_CACHE_DIR`` is set.

    Several GPUs: the jobs are independent, so a node with k devices runs one worker per
    device, each seeing only its own: ``dask_cuda.LocalCUDACluster()`` (it sets
    ``CUDA_VISIBLE_DEVICES`` per worker), or k ``dask worker`` processes started as
    ``CUDA_VISIBLE_DEVICES=i dask worker SCHEDULER --nworkers 1 --nthreads 1``, then
    ``llc_trajectory(..., client=Client(cluster))``. Each worker compiles the program once
    for its device and reuses it for all the checkpoints it gets; set
    ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` when workers share a device. Results equal a
    serial run's for the same device type (the seeds do not depend on the worker).
    """
    if not isinstance(posterior, GibbsPosterior):
        raise TypeError(f"`posterior` must be a GibbsPosterior (the template), got {type(posterior).__name__}.")
    if not isinstance(progress_bar, (bool, np.bool_)):
        raise TypeError(f"`progress_bar` must be True or False, got {progress_bar!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise ValueError(f"`seed` must be an integer in [0, 2**63), got {seed!r}.")
    if client is not None and not callable(getattr(client, "submit", None)):
        raise TypeError(f"`client` must be a dask.distributed.Client or an executor with submit(fn, *args), "
                        f"got {type(client).__name__}.")
    shapes = posterior.model.param_shapes
    ckpts = _checkpoint_list(checkpoints)
    for c in ckpts:
        _check_params(c, shapes)
    restrictions = {WHOLE: None, **_checked_components(components, shapes)}
    # the checks that need a posterior use the first checkpoint's (refine checks q' and the loss on it)
    first = posterior.with_(centre=ckpts[0].params)
    if data is not None:
        first = refine(first, data=data)
    backend, kwargs, settings = _checked_sample_kwargs(sample_kwargs, posterior, None if data is None else first.n)
    if probes is not None:
        from pplpatterning.spec.probes import Probes

        if not isinstance(probes, Probes):
            raise TypeError(f"`probes` must be a pplpatterning.Probes, got {type(probes).__name__}.")
        if observables is None:
            raise ValueError("`probes=` needs `observables=`: χ(φ; q') is a covariance of each observable φ "
                             "with the probe loss, e.g. observables={'loss': observables.full_loss(post)}.")
    num_obs = 0
    if observables is not None:
        obs = observables(first) if callable(observables) else observables
        validate_observables(obs, first)
        num_obs = len(obs)
    check_memory(first, settings, keep_params=False, num_observables=num_obs)
    if client is None:
        get_backend(backend)  # its packages are importable here (a worker's are checked by its first job)
    template = _Template(posterior, data, dict(observables) if isinstance(observables, Mapping) else observables,
                         backend, kwargs, probes)

    run = _run_settings(posterior, data, observables, backend, settings, int(seed))
    run["probes"] = None if probes is None else digest({f.name: getattr(probes, f.name) for f in fields(probes)})
    jobs = [TrajectoryJob(i, c.step, name, dict(c.params), r, job_seed(int(seed), c.step, name),
                          {"step": c.step, "component": name, "seed": job_seed(int(seed), c.step, name),
                           "params": digest(dict(c.params)), "restriction": digest(r)})
            for i, c in enumerate(ckpts) for name, r in restrictions.items()]
    results: dict[tuple[int, str], xr.Dataset] = {}
    db = JobStore(store, run) if store is not None else None
    if db is not None:
        db.open()
        for job in jobs:
            found = db.load(job)
            if found is not None:
                results[(job.index, job.component)] = found
    todo = [j for j in jobs if (j.index, j.component) not in results]
    if progress_bar:
        parts = f"{len(ckpts)} checkpoint(s) × (1 + {len(restrictions) - 1} component(s)) = {len(jobs)} job(s)"
        tqdm.write(f"llc_trajectory: {parts}; {len(jobs) - len(todo)} found in the store, {len(todo)} to run.",
                   file=sys.stderr)

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), disable=not progress_bar, unit="job",
               desc="LLC trajectory")

    def finish(job: TrajectoryJob, result: xr.Dataset) -> None:
        results[(job.index, job.component)] = result
        if db is not None:
            db.save(job, result)
        bar.update(1)

    try:
        if client is None:
            _run_serial(template, todo, finish)
        else:
            run_on(client, run_job, template, todo, finish)
    except BaseException as exc:
        done = len(results)
        where = f"saved in the store {str(db.root)!r}: rerun with the same arguments to resume" if db is not None \
            else "not saved (pass store= to keep finished jobs)"
        exc.add_note(f"llc_trajectory: {done} of {len(jobs)} jobs had finished, {where}.")
        raise
    finally:
        bar.close()
    return _assemble(ckpts, list(restrictions), results, run, components is not None)


def _assemble(ckpts: list[Checkpoint], names: list[str], results: dict, run: dict, by_component: bool) -> xr.Dataset:
    """One Dataset (checkpoint[, component][, observable]) from the jobs' results."""
    steps = np.array([c.step for c in ckpts], dtype=np.int64)
    first = results[(0, names[0])]
    scalar = ["llc", "llc_mcse", "rhat", "ess", "ess_tail", "seconds", "seed", "incomplete", "num_draws_used",
              "healthy", "problems"]
    observables = list(first["observable"].values) if "observable" in first.dims else []
    probe_names = list(first["probe"].values) if "probe" in first.dims else []

    def grid(var: str) -> np.ndarray:
        return np.stack([np.stack([np.asarray(results[(i, n)][var].values) for n in names])
                         for i in range(len(ckpts))])

    coords = {"checkpoint": ("checkpoint", steps, {"long_name": "training step"})}
    dims = ("checkpoint", "component")
    if by_component:
        coords["component"] = ("component", np.array(names, dtype=object))
    if observables:
        coords["observable"] = ("observable", np.array(observables, dtype=object))
    if probe_names:
        coords["probe"] = ("probe", np.array(probe_names, dtype=object))
    long = {"llc": "λ̂ = nβ (E[L_n^ρ(w)] - L_n^ρ(w*))", "llc_mcse": "Monte Carlo standard error of λ̂",
            "rhat": "rank-normalised split R-hat of the per-draw loss", "ess": "bulk ESS of the per-draw loss",
            "ess_tail": "tail ESS of the per-draw loss", "seconds": "wall time of the job",
            "seed": "the job's seed (job_seed)", "incomplete": "1 when the run stopped early",
            "num_draws_used": "draws per chain in λ̂",
            "healthy": "1 when diagnose() of the job's trace has no error or warning",
            "problems": "diagnose()'s error and warning codes, space-separated ('' when healthy)", "observable_mean": "posterior mean of the observable",
            "observable_mcse": "MCSE of the observable's posterior mean",
            "chi": "χ(φ; q') = -Cov(φ, L_q' - L_q^ρ)", "chi_se": "standard error of χ"}
    data = {}
    for var in scalar + (["observable_mean", "observable_mcse"] if observables else []) + \
            (["chi", "chi_se"] if probe_names else []):
        values = grid(var)
        vdims = dims + (("observable",) if var.startswith("observable") else
                        ("probe", "observable") if var.startswith("chi") else ())
        if not by_component:
            values, vdims = values[:, 0], tuple(d for d in vdims if d != "component")
        data[var] = xr.DataArray(values, dims=vdims, attrs={"long_name": long[var]})
    loss = np.array([float(results[(i, names[0])]["loss_at_centre"]) for i in range(len(ckpts))])
    data["loss_at_centre"] = xr.DataArray(loss, dims=("checkpoint",),
                                          attrs={"long_name": "training loss L_n^ρ(w*) at the checkpoint"})
    sampler = run["sampler"]
    attrs = {"settings": json.dumps(run, sort_keys=True), "model": run["model"], "backend": run["backend"],
             "sampler": sampler["sampler"], "num_chains": sampler["num_chains"], "num_draws": sampler["num_draws"],
             "num_burnin": sampler["num_burnin"], "n": run["n"], "n_beta": run["n_beta"], "gamma": run["gamma"],
             "seed": run["seed"], "step_size": math.nan if sampler["step_size"] is None else sampler["step_size"]}
    return xr.Dataset(data, coords=coords, attrs=attrs)
