"""Issue 11's scale benchmark: SGLD on deep linear networks of 10³–10⁶ parameters, ratios from one run.

    .venv/bin/python validation/bench_scale.py grid --widths 18 58 183 577 --draws-at 577=200 \\
        --repeats 3 --out validation/reports/scale.jsonl
    .venv/bin/python validation/bench_scale.py stream --width 577 --draws 500 5000 --out ...   # memory vs draws
    .venv/bin/python validation/bench_scale.py stream --width 1826 --draws 100 --out ...       # d ≈ 10⁷ completes
    .venv/bin/python validation/bench_scale.py chi --n 100000 --draws 1000 --out ...           # per-sample χ memory
    .venv/bin/python validation/bench_scale.py table validation/reports/scale.jsonl

Every run is one process of validation/bench_scale_run.py (devinterp's in .venv-bench), started
with the same thread settings (:data:`THREAD_ENV`; torch's intra- and inter-op threads are set
to ``--threads`` inside the torch processes) and a fresh, empty JAX compilation cache
(``JAX_COMPILATION_CACHE_DIR`` a new temporary directory, removed afterwards). ``grid`` runs,
per width, ``--repeats`` rounds of every contender, round-robin, the order rotated each round,
so that load on the shared machine hits every contender alike; run r uses seed r (devinterp
init_seed 100 + 1000 r), so repeats are independent estimates. One JSON line per run is
appended to ``--out`` as it finishes: the worker's fields (bench_scale_run.py), plus the
parent's ``parent_wall_s`` (process start to exit), ``parent_peak_rss_mb`` (``os.wait4``'s
ru_maxrss of that child) and the load average before the run.

devinterp's λ̂ = nβ (mean minibatch loss − mean init loss over 32 batches); its MCSE here is
that of the (chain, step) series nβ·loss (:func:`pplpatterning.estimators.convergence.series_stats`,
as for ours), or of its chain mean where larger (devinterp's chains see the same batches), with
the standard error of its 32-batch init loss added in quadrature;
``llc_exact_centre`` replaces the init loss by L_n(w*) computed exactly in float64.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np

from pplpatterning.estimators.convergence import series_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale_run import BATCH, N_BETA, centre_losses  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "validation" / "bench_scale_run.py"
OUR_PY = ROOT / ".venv" / "bin" / "python"
OUR_PY = OUR_PY if OUR_PY.exists() else Path(sys.executable)
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"
#: The environment of every run: one thread for OpenMP/MKL/OpenBLAS (torch's CPU kernels) and
#: XLA's Eigen pool off. ``intra_op_parallelism_threads=1`` is no XLA flag (XLA rejects unknown
#: ``--`` flags; a token without dashes is passed over), kept because issue 11 names it.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
              "TQDM_DISABLE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
#: name -> (interpreter, worker arguments)
CONTENDERS = {
    "numpyro-f32": (OUR_PY, ["ours", "--backend", "numpyro", "--dtype", "float32"]),
    "numpyro-f64": (OUR_PY, ["ours", "--backend", "numpyro", "--dtype", "float64"]),
    "pyro-f32": (OUR_PY, ["ours", "--backend", "pyro", "--dtype", "float32"]),
    "devinterp": (BENCH_PY, ["devinterp"]),
    "fused-f32": (OUR_PY, ["fused", "--dtype", "float32"]),
    "fused-f32-cycle": (OUR_PY, ["fused", "--dtype", "float32", "--cycle-batches"]),
}
#: The grid's default contenders (fused-f32-cycle only checks the batch order's effect on λ̂).
DEFAULT_CONTENDERS = ["numpyro-f32", "numpyro-f64", "pyro-f32", "devinterp", "fused-f32"]
RESULT_TAG = "BENCH_SCALE_RESULT "


def child_env(threads: int, cache_dir: str) -> dict:
    """os.environ without JAX cache settings, plus :data:`THREAD_ENV` and a fresh cache dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(THREAD_ENV, JAX_COMPILATION_CACHE_DIR=cache_dir)
    if threads != 1:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    return env


def run_worker(python: Path, args: list[str], threads: int = 1, timeout: float = 1800) -> dict:
    """One worker process: its result line, the parent's wall time and the child's peak RSS."""
    cache = tempfile.mkdtemp(prefix="bench_scale_jaxcache_")
    load = os.getloadavg()
    with tempfile.TemporaryFile("w+") as log:
        t = time.perf_counter()
        proc = subprocess.Popen([str(python), str(RUN), *args, "--threads", str(threads)], stdout=log,
                                stderr=subprocess.STDOUT, env=child_env(threads, cache), cwd=str(ROOT))
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        log.seek(0)
        text = log.read()
    shutil.rmtree(cache, ignore_errors=True)
    lines = [ln for ln in text.splitlines() if ln.startswith(RESULT_TAG)]
    rec = json.loads(lines[-1][len(RESULT_TAG):]) if lines else {"error": text[-3000:]}
    rec.update(returncode=proc.returncode, parent_wall_s=wall, parent_peak_rss_mb=usage.ru_maxrss / 1e3,
               loadavg_before=list(load), args=args)
    return rec


def devinterp_llc(rec: dict) -> dict:
    """λ̂ and its MCSE from devinterp's (chain, step) loss trace (module docstring); drops the trace."""
    trace = np.asarray(rec.pop("loss_trace"), dtype=np.float64)
    l0 = centre_losses(rec["width"])
    init_se = N_BETA * l0.std() / math.sqrt(32 * BATCH)  # 32 init batches of 256 rows
    stats = series_stats(N_BETA * trace)
    shared = series_stats(N_BETA * trace.mean(axis=0, keepdims=True)).mcse  # the chains share their batches
    series_se = max(stats.mcse, shared)
    return {"llc": N_BETA * (trace.mean() - rec["init_loss"]), "mcse": math.hypot(series_se, init_se),
            "mcse_series": series_se, "mcse_independent_chains": stats.mcse, "mcse_chain_mean": shared,
            "mcse_init_loss": init_se, "rhat": stats.rhat, "llc_exact_centre": N_BETA * (trace.mean() - l0.mean())}


def emit(out: Path, rec: dict) -> None:
    with out.open("a") as fh:
        fh.write(json.dumps(rec) + "\n")
    brief = {k: rec.get(k) for k in ("task", "name", "d", "draws", "steady_chain_steps_per_s", "e2e_s",
                                     "peak_rss_mb", "llc", "mcse", "returncode")}
    print(json.dumps(brief), flush=True)


def machine_record(a) -> dict:
    mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
               if ln.startswith("MemTotal:"))
    return {"task": "machine", "date": date.today().isoformat(), "nproc": os.cpu_count(), "mem_total_gb": mem / 1e6,
            "thread_env": THREAD_ENV, "torch_threads": a.threads, "argv": sys.argv[1:]}


def parse_at(items: list[str]) -> dict[int, int]:
    """["577=200", ...] -> {577: 200}."""
    return {int(k): int(v) for k, v in (s.split("=") for s in items)}


def grid(a) -> None:
    """Round-robin over the contenders, ``repeats`` rounds per width (module docstring)."""
    emit(a.out, machine_record(a))
    draws_at, repeats_at = parse_at(a.draws_at), parse_at(a.repeats_at)
    for width in a.widths:
        draws = draws_at.get(width, a.draws)
        for r in range(repeats_at.get(width, a.repeats)):
            k = r % len(a.contenders)
            for name in a.contenders[k:] + a.contenders[:k]:
                python, args = CONTENDERS[name]
                rec = run_worker(python, args + ["--width", str(width), "--draws", str(draws), "--seed", str(r)],
                                 a.threads, a.timeout)
                rec.update(task="grid", name=name, round=r)
                if name == "devinterp" and "loss_trace" in rec:
                    rec.update(devinterp_llc(rec))
                emit(a.out, rec)


def stream(a) -> None:
    """Ours NumPyro float32 at one width and several draw counts: peak RSS against draws."""
    emit(a.out, machine_record(a))
    for draws in a.draws:
        args = ["ours", "--backend", "numpyro", "--dtype", "float32", "--width", str(a.width), "--draws", str(draws),
                "--loss-estimate", a.loss_estimate, "--thinning", str(a.thinning)]
        rec = run_worker(OUR_PY, args, a.threads, a.timeout)
        rec.update(task="stream", name=f"numpyro-f32-{a.loss_estimate}")
        emit(a.out, rec)


def chi(a) -> None:
    """Per-sample χ with streamed (and stored) per-sample losses: peak RSS."""
    emit(a.out, machine_record(a))
    for mode in a.modes:
        args = ["chi", "--n", str(a.n), "--draws", str(a.draws), "--stream" if mode == "stream" else "--no-stream"]
        rec = run_worker(OUR_PY, args, a.threads, a.timeout)
        rec.update(task="chi", name=f"chi-{mode}")
        emit(a.out, rec)


def load(paths: list[Path]) -> list[dict]:
    return [json.loads(ln) for p in paths for ln in p.read_text().splitlines() if ln.strip()]


def med(rows: list[dict], key: str) -> float | None:
    xs = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(xs) if xs else None


def span(rows: list[dict], key: str, fmt: str) -> str:
    """median (min–max) of ``key`` over ``rows``."""
    xs = [r[key] for r in rows if r.get(key) is not None]
    if not xs:
        return ""
    m = format(statistics.median(xs), fmt)
    return m if len(xs) == 1 else f"{m} ({format(min(xs), fmt)}–{format(max(xs), fmt)})"


def pooled(rows: list[dict], key: str = "llc") -> tuple[float, float]:
    """Mean of the independent repeats' λ̂ and its standard error √(Σ mcse²)/R."""
    xs = [r for r in rows if r.get(key) is not None and r.get("mcse") is not None]
    if not xs:
        return math.nan, math.nan
    return (float(np.mean([r[key] for r in xs])), math.sqrt(sum(r["mcse"] ** 2 for r in xs)) / len(xs))


def grid_tables(rows: list[dict]) -> list[str]:
    """Per-d rows of every contender, then the ratios (medians over rounds) and λ̂ agreement."""
    g = [r for r in rows if r.get("task") == "grid" and r.get("returncode") == 0]
    by = {}
    for r in g:
        by.setdefault((r["d"], r["name"]), []).append(r)
    ds = sorted({d for d, _ in by})
    out = ["| d | draws | contender | runs | steady chain-steps/s | end-to-end s | compile s | peak RSS MB | "
           "λ̂ ± MCSE (pooled) |", "|---|---|---|---|---|---|---|---|---|"]
    for d in ds:
        for name in CONTENDERS:
            xs = by.get((d, name), [])
            if not xs:
                continue
            lam, se = pooled(xs)
            out.append(f"| {d} | {xs[0]['draws']} | {name} | {len(xs)} | {span(xs, 'steady_chain_steps_per_s', '.0f')} "
                       f"| {span(xs, 'e2e_s', '.2f')} | {span(xs, 'compile_s', '.2f')} | "
                       f"{span(xs, 'peak_rss_mb', '.0f')} | {'' if math.isnan(lam) else f'{lam:.1f} ± {se:.1f}'} |")
    out += ["", "| d | contender | steady / fused-f32 | steady / devinterp | devinterp e2e / ours e2e | "
            "peak RSS / devinterp |", "|---|---|---|---|---|---|"]
    for d in ds:
        ref = {k: by.get((d, k), []) for k in ("fused-f32", "devinterp")}
        for name in ("numpyro-f32", "numpyro-f64", "pyro-f32"):
            xs = by.get((d, name), [])
            if not xs:
                continue
            cells = [ratio(med(xs, "steady_chain_steps_per_s"), med(ref["fused-f32"], "steady_chain_steps_per_s")),
                     ratio(med(xs, "steady_chain_steps_per_s"), med(ref["devinterp"], "steady_chain_steps_per_s")),
                     ratio(med(ref["devinterp"], "e2e_s"), med(xs, "e2e_s")),
                     ratio(med(xs, "peak_rss_mb"), med(ref["devinterp"], "peak_rss_mb"))]
            out.append(f"| {d} | {name} | " + " | ".join(cells) + " |")
    return out + [""] + agreement(by, ds) + [""] + batch_order(by, ds)


def batch_order(by: dict, ds: list[int]) -> list[str]:
    """The fused loop's λ̂ = nβ (mean minibatch loss − L_n(w*)) per run, by batch order."""
    out = ["| d | fused loop | batches | λ̂ per run |", "|---|---|---|---|"]
    for d in ds:
        for name in ("fused-f32", "fused-f32-cycle"):
            xs = [r for r in by.get((d, name), []) if r.get("llc_exact_centre") is not None]
            if xs:
                kind = "one shuffled order, cycled" if name.endswith("cycle") else "with replacement"
                out.append(f"| {d} | {name} | {kind} | " + ", ".join(f"{r['llc_exact_centre']:.1f}" for r in xs) + " |")
    return out if len(out) > 2 else []


def ratio(a: float | None, b: float | None) -> str:
    return "" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def agreement(by: dict, ds: list[int]) -> list[str]:
    """λ̂ of ours against devinterp's: z = Δ / √(se² + se_devinterp²) with pooled repeats."""
    out = ["| d | contender | λ̂ ours | λ̂ devinterp (init loss; exact L_n(w*)) | z (init loss) | z (exact) |",
           "|---|---|---|---|---|---|"]
    for d in ds:
        dev = by.get((d, "devinterp"), [])
        if not dev:
            continue
        lam_d, se_d = pooled(dev)
        lam_x, _ = pooled(dev, "llc_exact_centre")
        se_x = math.sqrt(sum(r["mcse_series"] ** 2 for r in dev)) / len(dev)
        for name in ("numpyro-f32", "numpyro-f64", "pyro-f32"):
            lam, se = pooled(by.get((d, name), []))
            if math.isnan(lam):
                continue
            out.append(f"| {d} | {name} | {lam:.1f} ± {se:.1f} | {lam_d:.1f} ± {se_d:.1f}; "
                       f"{lam_x:.1f} ± {se_x:.1f} | {(lam - lam_d) / math.hypot(se, se_d):+.2f} | "
                       f"{(lam - lam_x) / math.hypot(se, se_x):+.2f} |")
    return out


def memory_tables(rows: list[dict]) -> list[str]:
    out = ["| task | d | draws | loss | thinning | steady chain-steps/s | end-to-end s | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r.get("task") == "stream"):
        out.append(f"| {r['name']} | {r['d']} | {r['draws']} | {r.get('loss_estimate')} | {r.get('thinning')} | "
                   f"{r.get('steady_chain_steps_per_s') or 0:.1f} | {r.get('e2e_s', math.nan):.1f} | "
                   f"{r.get('peak_rss_mb', math.nan):.0f} |")
    out += ["", "| χ run | n | draws | sampling s | attribution s | trace MB | peak RSS MB | refused |",
            "|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r.get("task") == "chi"):
        out.append(f"| {r['name']} | {r.get('n')} | {r['draws']} | {r.get('sampling_s', math.nan):.1f} | "
                   f"{r.get('attribution_s', math.nan):.1f} | {r.get('trace_mb', math.nan):.0f} | "
                   f"{r.get('peak_rss_mb', math.nan):.0f} | {r.get('refused', '')} |")
    return out


def table(a) -> None:
    rows = load(a.paths)
    print("\n".join(grid_tables(rows) + [""] + memory_tables(rows)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("grid", "stream", "chi"):
        s = sub.add_parser(name)
        s.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
        s.add_argument("--threads", type=int, default=1)
        s.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    g = sub.choices["grid"]
    g.add_argument("--widths", type=int, nargs="+", default=[18, 58, 183, 577])
    g.add_argument("--draws", type=int, default=500)
    g.add_argument("--draws-at", nargs="*", default=[], help="WIDTH=DRAWS overrides")
    g.add_argument("--repeats", type=int, default=3)
    g.add_argument("--repeats-at", nargs="*", default=[], help="WIDTH=REPEATS overrides")
    g.add_argument("--contenders", nargs="+", default=DEFAULT_CONTENDERS, choices=list(CONTENDERS))
    s = sub.choices["stream"]
    s.add_argument("--width", type=int, default=577)
    s.add_argument("--draws", type=int, nargs="+", default=[500, 5000])
    s.add_argument("--loss-estimate", choices=("minibatch", "full"), default="minibatch")
    s.add_argument("--thinning", type=int, default=1)
    c = sub.choices["chi"]
    c.add_argument("--n", type=int, default=100_000)
    c.add_argument("--draws", type=int, default=1000)
    c.add_argument("--modes", nargs="+", default=["stream", "stored"], choices=["stream", "stored"])
    t = sub.add_parser("table")
    t.add_argument("paths", type=Path, nargs="+")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if getattr(a, "out", None) is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
    {"grid": grid, "stream": stream, "chi": chi, "table": table}[a.cmd](a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
