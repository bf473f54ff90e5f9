"""Cost of susceptibilities relative to plain LLC sampling (one configuration per process).

    .venv/bin/python validation/bench_chi.py --mode llc --sampler nuts
    .venv/bin/python validation/bench_chi.py --mode chi --sampler nuts --per-sample 1000 --probe-thinning 1
    .venv/bin/python validation/bench_chi.py --all        # every configuration, each in its own process

Workload: deep linear network widths (4, 8, 8, 4) (d = 128), true rank 2, n = 1000,
nβ = n/log n, γ = 1, 4 chains. ``llc`` samples with no observables or probes (full-batch
loss at every kept draw, as λ̂ needs); ``chi`` adds one component loss per layer plus the
full loss as observables, a probe data set of 1000 points from the rank-1 truth (a shifted
distribution), and the per-sample losses of ``--per-sample`` training samples. Reported:
sampling and draw-evaluation time (Trace attrs; minimum over ``--repeats`` runs after a
compiling warm-up run with the same shapes), peak RSS of the process after sampling and
after the analysis, the Trace's size, the time of ``susceptibility``/``attribution``, and the
standard errors reached per second of sampling (se·√t, the constant of se ∝ 1/√t).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pplpatterning import GibbsPosterior, Probes, attribution, llc, sample, susceptibility
from pplpatterning.models import get_model
from pplpatterning.spec.observables import component_loss, full_loss


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports ru_maxrss in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def run(mode: str, sampler: str, per_sample: int, thinning: int, draws: int, repeats: int) -> dict:
    """One configuration (module docstring): timings, memory, sizes and standard errors, as a dict."""
    model = get_model("dln", widths=(4, 8, 8, 4), r=2)
    data = model.generate(1000, seed=0)
    post = GibbsPosterior(model, data, gamma=1.0)
    kw = dict(sampler=sampler, num_chains=4, num_burnin=500, progress_bar=False, seed=1)
    if sampler == "sgld":
        kw.update(step_size=1e-4, batch_size=100, thinning=10)
    probe = get_model("dln", widths=(4, 8, 8, 4), r=1).generate(1000, seed=1)
    extra = {}
    if mode == "chi":
        obs = {"loss": full_loss(post), **{f"loss_{k}": component_loss(post, k) for k in model.param_shapes}}
        probes = Probes(datasets={"shifted": probe},
                        per_sample=np.arange(per_sample) if per_sample else None, thinning=thinning)
        extra = dict(observables=obs, probes=probes)
    sample(post, num_draws=max(20, draws // 20), **kw, **extra)  # warm-up: compile with the same shapes
    times = []
    for _ in range(repeats):
        tr = sample(post, num_draws=draws, **kw, **extra)
        times.append((tr.attrs["sampling_seconds"], tr.attrs["evaluation_seconds"]))
    out = {"mode": mode, "sampler": sampler, "per_sample": per_sample, "probe_thinning": thinning, "draws": draws,
           "sampling_s": min(t[0] for t in times), "evaluation_s": min(t[1] for t in times),
           "trace_mb": sum(tr[g].to_dataset().nbytes for g in tr.children) / 1e6, "rss_after_sampling_mb": _rss_mb()}
    est = llc(tr)
    out.update(llc=est.llc, llc_mcse=est.mcse, llc_se_sqrt_s=est.mcse * np.sqrt(out["sampling_s"]))
    if mode == "chi":
        t = time.perf_counter()
        chi = susceptibility(tr)
        out["susceptibility_s"] = time.perf_counter() - t
        r = chi.sel(probe="shifted", observable="loss")
        out.update(chi_loss=float(r.chi), chi_loss_se=float(r.se),
                   chi_rel_se=float(r.se / abs(r.chi)), chi_se_sqrt_s=float(r.se) * np.sqrt(out["sampling_s"]))
        if per_sample:
            t = time.perf_counter()
            att = attribution(tr)
            out["attribution_s"] = time.perf_counter() - t
            a = att.sel(observable="loss")
            out.update(chi_z_median_se=float(np.median(a.se)), chi_z_median_abs=float(np.median(np.abs(a.chi))),
                       chi_z_frac_significant=float(np.mean(np.abs(a.chi) > 2 * a.se)),
                       chi_z_median_se_sqrt_s=float(np.median(a.se)) * np.sqrt(out["sampling_s"]),
                       sum_chi_z=float(a.chi.sum()))
    out["peak_rss_mb"] = _rss_mb()
    return out


CONFIGS = [  # NUTS is left out: on this DLN it takes ~0.3 s per draw (deep trees), so evaluation is negligible
    ("llc", "sgld", 0, 1), ("chi", "sgld", 0, 1), ("chi", "sgld", 1000, 1), ("chi", "sgld", 1000, 5),
    ("llc", "mala", 0, 1), ("chi", "mala", 0, 1), ("chi", "mala", 1000, 1), ("chi", "mala", 1000, 5),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["llc", "chi"], default="llc")
    ap.add_argument("--sampler", default="nuts")
    ap.add_argument("--per-sample", type=int, default=1000)
    ap.add_argument("--probe-thinning", type=int, default=1)
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "bench_chi.json"))
    a = ap.parse_args()
    if not a.all:
        print(json.dumps(run(a.mode, a.sampler, a.per_sample if a.mode == "chi" else 0, a.probe_thinning, a.draws,
                             a.repeats)))
        return
    rows = []
    for mode, sampler, ps, th in CONFIGS:
        cmd = [sys.executable, __file__, "--mode", mode, "--sampler", sampler, "--per-sample", str(ps),
               "--probe-thinning", str(th), "--draws", str(a.draws), "--repeats", str(a.repeats)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    Path(a.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
