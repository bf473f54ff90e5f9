"""One run of the scale benchmark (validation/bench_scale.py) in this process, as one JSON line.

    .venv/bin/python validation/bench_scale_run.py ours --backend numpyro --dtype float32 --width 58 --draws 500
    .venv/bin/python validation/bench_scale_run.py fused --width 58 --draws 500
    .venv-bench/bin/python validation/bench_scale_run.py devinterp --width 58 --draws 500
    .venv/bin/python validation/bench_scale_run.py chi --n 100000 --draws 1000 --stream

bench_scale.py starts every run in a fresh process with the thread settings of
:data:`bench_scale.THREAD_ENV` and a fresh JAX compilation cache; this module sets torch's own
thread counts (``--threads``, default 1) before any torch work. The workload is SGLD on a deep
linear network with widths [w]*4 (d = 3w²; data, teacher and centre w* of
bench_workloads.make_dln_data), n = 10 000, batch 256, 4 chains from w*, no burn-in,
ε = 1e-5, γ = 1, nβ = n/log n (docs/math.md §8.1):

    w ← w − (ε/2) [nβ ∇L_batch(w) + γ (w − w*)] + √ε ξ,   λ̂ = nβ (E[L(w)] − L(w*)).

Reported by every run: ``e2e_s``, seconds from building the model/posterior (after the
imports and the NumPy data generation) to the returned λ̂ (fused: to the returned losses),
compilation included; ``steady_chain_steps_per_s``, chain-steps per second of the sampling
loop with the first segment/block (which compiles) left out (ours: timestamps of the
backends' progress-bar updates, :class:`StepClock`; devinterp: its first to last SGLD step;
fused: the second, compiled call); ``compile_s``; ``peak_rss_mb`` (VmHWM of this process);
``cpu_per_wall`` (CPU seconds / wall seconds of the whole process, ~1 when single-threaded).

JAX, NumPyro, torch, devinterp and pplpatterning are imported inside the contender
functions: each runs in its own interpreter (devinterp's in .venv-bench, without JAX).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_workloads import make_dln_data  # noqa: E402

N, BATCH, CHAINS, GAMMA, STEP = 10_000, 256, 4, 1.0, 1e-5
N_BETA = N / math.log(N)
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


def peak_rss_mb() -> float:
    """VmHWM (peak resident set size) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class StepClock:
    """A stand-in for tqdm in the backends' sampling loops: records (time, steps so far) at
    every ``update``; :meth:`steady_rate` is the rate from the first update with steps to the
    last (the first segment, which compiles, is left out)."""

    records: list[tuple[float, int]] = []

    def __init__(self, *args, **kwargs):
        self.n = 0
        StepClock.records = [(time.perf_counter(), 0)]

    def update(self, n=1):
        self.n += int(n)
        StepClock.records.append((time.perf_counter(), self.n))

    def __getattr__(self, name):  # set_description, close, ...: no-ops
        return lambda *a, **k: None

    @classmethod
    def first_segment_s(cls) -> float | None:
        """Seconds from the bar's creation to the first update with steps (the compiling segment)."""
        rec = [r for r in cls.records if r[1] > 0]
        return rec[0][0] - cls.records[0][0] if rec else None

    @classmethod
    def steady_rate(cls, chains: int) -> float | None:
        rec = [r for r in cls.records if r[1] > 0]
        if len(rec) < 2 or rec[-1][1] == rec[0][1]:
            return None
        return chains * (rec[-1][1] - rec[0][1]) / (rec[-1][0] - rec[0][0])


def centre_losses(width: int) -> np.ndarray:
    """l_i(w*) = ||y_i − f_{w*}(x_i)||²/2 in float64 on the benchmark's (float32) data."""
    raw = make_dln_data(N, (width,) * 4, seed=0)
    f = raw["x"].astype(np.float64)
    for w in raw["weights"]:
        f = f @ w.astype(np.float64).T
    return 0.5 * np.sum((raw["y"].astype(np.float64) - f) ** 2, axis=-1)


def dln_posterior(raw: dict, width: int, dtype: str):
    """The GibbsPosterior of bench_workloads' DLN data (float64 arrays; ``sample(dtype=)`` casts)."""
    import pplpatterning as pp
    from pplpatterning.models import get_model

    model = get_model("dln", widths=(width,) * 4, r=width)
    return pp.GibbsPosterior(model, {"x": raw["x"].astype(np.float64), "y": raw["y"].astype(np.float64)},
                             centre={f"W{i + 1}": w.astype(np.float64) for i, w in enumerate(raw["weights"])},
                             n_beta=N_BETA, gamma=GAMMA)


def install_clock(backend: str) -> None:
    """Route the backend's progress bar through :class:`StepClock` (timestamps only)."""
    if backend == "numpyro":
        import pplpatterning.backends.numpyro.driver as loop
    else:
        import pplpatterning.backends.pyro.chains as loop
    loop.tqdm = StepClock


def compile_listener() -> dict:
    """Sum JAX's trace/lower/compile event durations into the returned dict's "s"."""
    import jax

    total = {"s": 0.0, "count": 0}

    def on_event(event, duration, **kwargs):
        if event in COMPILE_EVENTS:
            total["s"] += duration
            total["count"] += 1

    jax.monitoring.register_event_duration_secs_listener(on_event)
    return total


def run_ours(a) -> dict:
    """pplpatterning.sample (SGLD, keep_params=False) and llc() end to end on the DLN."""
    t = time.perf_counter()
    import pplpatterning as pp
    from pplpatterning.sampling.core import get_backend

    get_backend(a.backend)
    if a.backend == "pyro":
        import torch

        torch.set_num_threads(a.threads)
        torch.set_num_interop_threads(a.threads)
    compiled = compile_listener() if a.backend == "numpyro" else {"s": None, "count": 0}
    import_s = time.perf_counter() - t
    install_clock(a.backend)
    raw = make_dln_data(N, (a.width,) * 4, seed=0)
    t0 = time.perf_counter()
    post = dln_posterior(raw, a.width, a.dtype)
    tr = pp.sample(post, backend=a.backend, sampler="sgld", step_size=STEP, batch_size=BATCH, num_chains=CHAINS,
                   num_draws=a.draws, num_burnin=0, thinning=a.thinning, loss_estimate=a.loss_estimate,
                   keep_params=False, dtype=a.dtype, seed=a.seed, progress_bar=False)
    est = pp.llc(tr)
    e2e = time.perf_counter() - t0
    steps = CHAINS * a.draws * a.thinning
    return {"import_s": import_s, "e2e_s": e2e, "chain_steps": steps, "e2e_chain_steps_per_s": steps / e2e,
            "steady_chain_steps_per_s": StepClock.steady_rate(CHAINS), "sampling_s": tr.attrs["sampling_seconds"],
            "compile_s": compiled["s"], "compile_events": compiled["count"],
            "first_segment_s": StepClock.first_segment_s(), "llc": est.llc, "mcse": est.mcse, "rhat": est.rhat,
            "finite": bool(np.isfinite(est.llc)),
            "memory_estimate_mb": tr.attrs["memory_estimate_bytes"] / 1e6, "loss_estimate": a.loss_estimate,
            "thinning": a.thinning}


def run_fused(a) -> dict:
    """The hand-fused JAX float32 loop of bench_fused.py: compile (AOT) once, run once; its λ̂ is
    nβ (mean minibatch loss − L_n(w*)), L_n(w*) exact in float64."""
    t = time.perf_counter()
    import jax
    import jax.numpy as jnp

    from bench_fused import make_sampler

    import_s = time.perf_counter() - t
    raw = make_dln_data(N, (a.width,) * 4, seed=0)
    t0 = time.perf_counter()
    with jax.enable_x64(a.dtype == "float64"):
        x, y = jnp.asarray(raw["x"], dtype=a.dtype), jnp.asarray(raw["y"], dtype=a.dtype)
        centre = [jnp.asarray(w, dtype=a.dtype) for w in raw["weights"]]
        key = jax.random.PRNGKey(a.seed)
        run = make_sampler(x, y, centre, N_BETA, a.draws, cycle=a.cycle_batches).lower(key).compile()
        t1 = time.perf_counter()
        losses = np.asarray(run(key).block_until_ready())
        t2 = time.perf_counter()
    steps = CHAINS * a.draws
    return {"import_s": import_s, "e2e_s": t2 - t0, "chain_steps": steps, "e2e_chain_steps_per_s": steps / (t2 - t0),
            "steady_chain_steps_per_s": steps / (t2 - t1), "compile_s": t1 - t0,
            "final_minibatch_loss": float(losses[:, -1].mean()), "finite": bool(np.isfinite(losses).all()),
            "cycle_batches": a.cycle_batches,
            "llc_exact_centre": N_BETA * (losses.astype(np.float64).mean() - centre_losses(a.width).mean())}


def run_devinterp(a) -> dict:
    """devinterp 2.0.1's llc() end to end (bench_devinterp.run_once with this width and draw count)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench_devinterp import run_once, timed_imports

    versions, import_s = timed_imports(a.threads)
    import torch

    torch.set_num_interop_threads(a.threads)
    raw = make_dln_data(N, (a.width,) * 4, seed=0)
    cfg = dict(n=N, widths=(a.width,) * 4, batch_size=BATCH, num_chains=CHAINS, num_draws=a.draws,
               num_burnin_steps=0, num_steps_bw_draws=1, lr=STEP, localization=GAMMA, nbeta=N_BETA)
    with tempfile.TemporaryDirectory(prefix="bench_scale_devinterp_") as work:
        rec = run_once("dln", raw, 100 + 1000 * a.seed, work, cfg=cfg, keep_trace=True)
    loop_s = rec["sampling_loop_s_approx"]
    return {"import_s": import_s, "e2e_s": rec["wall_s"], "chain_steps": rec["sgld_steps"],
            "e2e_chain_steps_per_s": rec["sgld_steps"] / rec["wall_s"],
            "steady_chain_steps_per_s": (rec["sgld_steps"] - 1) / loop_s if loop_s > 0 else None,
            "llc_devinterp": rec["llc_mean"], "init_loss": rec["init_loss"], "loss_trace": rec["loss_trace"],
            "finite": rec["loss_trace_finite"], "versions": versions, "torch_threads": rec["torch_threads"],
            "torch_interop_threads": torch.get_num_interop_threads()}


def run_chi(a) -> dict:
    """Per-sample χ on the 4-parameter regular model: n samples, 4 observables (the coordinates
    of w), Probes(per_sample="all", stream=...), SGLD 4 chains × draws; then attribution()."""
    t = time.perf_counter()
    import pplpatterning as pp
    from pplpatterning.models import get_model
    from pplpatterning.sampling.memory import SampleMemoryError

    import_s = time.perf_counter() - t
    model = get_model("regular", d=4)
    data = model.generate(a.n, seed=0)
    t0 = time.perf_counter()
    post = pp.GibbsPosterior(model, data, gamma=GAMMA)
    obs = {f"w{i}": pp.observables.param("w", i) for i in range(4)}
    out = {"import_s": import_s, "n": a.n, "stream": a.stream, "num_observables": len(obs), "width": None,
           "d": model.dim}
    try:
        tr = pp.sample(post, backend="numpyro", sampler="sgld", step_size=a.step_size, batch_size=BATCH,
                       num_chains=CHAINS, num_draws=a.draws, num_burnin=a.burnin, keep_params=False,
                       observables=obs, probes=pp.Probes(per_sample="all", stream=a.stream), seed=a.seed,
                       progress_bar=False)
    except SampleMemoryError as exc:
        out.update(refused=str(exc), e2e_s=time.perf_counter() - t0)
        return out
    t1 = time.perf_counter()
    out.update(sampling_s=tr.attrs["sampling_seconds"], memory_estimate_mb=tr.attrs["memory_estimate_bytes"] / 1e6,
               rss_after_sampling_mb=peak_rss_mb(), trace_mb=sum(tr[g].to_dataset().nbytes for g in tr.children) / 1e6)
    att = pp.attribution(tr)
    out.update(attribution_s=time.perf_counter() - t1, e2e_s=time.perf_counter() - t0,
               chi_shape=[int(s) for s in np.shape(att.chi)], chi_finite=bool(np.isfinite(np.asarray(att.chi)).all()),
               chi_median_abs=float(np.median(np.abs(np.asarray(att.chi)))),
               se_median=float(np.median(np.asarray(att.se))))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("contender", choices=("ours", "fused", "devinterp", "chi"))
    p.add_argument("--backend", choices=("numpyro", "pyro"), default="numpyro")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--width", type=int, default=10, help="w of widths [w]*4 (d = 3w²)")
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--thinning", type=int, default=1)
    p.add_argument("--loss-estimate", choices=("minibatch", "full"), default="minibatch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op and inter-op threads")
    p.add_argument("--cycle-batches", action="store_true",
                   help="fused: batches cycle one shuffled order shared by the chains (as devinterp)")
    p.add_argument("--n", type=int, default=100_000, help="chi: training samples")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True, help="chi: Probes(stream=)")
    p.add_argument("--step-size", type=float, default=1e-5, help="chi: SGLD step size")
    p.add_argument("--burnin", type=int, default=200, help="chi: burn-in steps")
    return p


RUNNERS = {"ours": run_ours, "fused": run_fused, "devinterp": run_devinterp, "chi": run_chi}


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    t = time.perf_counter()
    out = {"contender": a.contender, "width": a.width, "d": 3 * a.width ** 2, "draws": a.draws,
           "chains": CHAINS, "seed": a.seed, **({"backend": a.backend} if a.contender == "ours" else {}),
           **({"dtype": a.dtype} if a.contender in ("ours", "fused") else {})}
    out.update(RUNNERS[a.contender](a))
    wall = time.perf_counter() - t
    out.update(peak_rss_mb=peak_rss_mb(), process_s=wall, cpu_per_wall=cpu_seconds() / wall)
    print("BENCH_SCALE_RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
