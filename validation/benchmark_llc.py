"""LLC benchmark: pplpatterning's backends against devinterp 2.0.1, ratios from one run.

    make bench            # or: .venv/bin/python validation/benchmark_llc.py --rounds 5

Workloads (validation/bench_workloads.py, WORKLOADS): y = a·b·x with n = 1000, full batch;
deep linear network widths [10, 20, 20, 10], n = 10 000, batch 256; both 4 chains × 1000
SGLD draws, nβ = n/log n, γ = 1. Each round runs, in fresh processes and interleaved so
that load on the shared machine hits every contender alike:

- devinterp end to end (its own venv, .venv-bench; installed from requirements-bench.txt),
- each pplpatterning backend with an empty JAX compilation cache ("cold") and with a warm
  one ("warm"; the Pyro backend compiles nothing, so it has one column).

Medians over rounds; ratios are devinterp time / our time (> 1: we are faster). Results go
to validation/out/benchmark.json and a markdown table on stdout (--markdown FILE to save).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "validation" / "out"
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"
OUR_PY = ROOT / ".venv" / "bin" / "python"


def ensure_bench_venv() -> None:
    if BENCH_PY.exists():
        return
    print("creating .venv-bench with devinterp 2.0.1 (pinned, CPU torch) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(ROOT / ".venv-bench")], check=True)
    subprocess.run([str(BENCH_PY), "-m", "pip", "install", "-q", "-r",
                    str(ROOT / "validation" / "requirements-bench.txt")], check=True)


def _run_json(cmd: list[str], env: dict | None = None) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json", dir=OUT)[1])
    try:
        subprocess.run(cmd + ["--json", str(out)], check=True, env={**os.environ, **(env or {})},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def devinterp(workload: str) -> dict:
    r = _run_json([str(BENCH_PY), str(ROOT / "validation" / "bench_devinterp.py"), "--workload", workload,
                   "--repeats", "1"])
    m = r["median"]
    return {"wall_s": m["wall_s"], "steps_per_s": m["steps_per_s"], "llc": m["llc_mean"]}


def ours(workload: str, backend: str, cache_dir: str, steady: bool) -> dict:
    cmd = [str(OUR_PY), str(ROOT / "validation" / "bench_ours.py"), "--workload", workload, "--backend", backend]
    return _run_json(cmd + (["--steady"] if steady else []),
                     env={"JAX_COMPILATION_CACHE_DIR": cache_dir, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backends", nargs="+", default=["numpyro"], choices=["numpyro", "pyro"])
    p.add_argument("--workloads", nargs="+", default=["product", "dln"])
    p.add_argument("--markdown", default=None)
    a = p.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_bench_venv()

    warm = {w: tempfile.mkdtemp(prefix=f"jaxcache-{w}-") for w in a.workloads}
    for w in a.workloads:  # populate the warm caches once
        if "numpyro" in a.backends:
            ours(w, "numpyro", warm[w], steady=False)

    rows: dict[tuple[str, str], list[dict]] = {}
    for r in range(a.rounds):
        for w in a.workloads:
            print(f"round {r + 1}/{a.rounds} {w}: devinterp", flush=True)
            rows.setdefault((w, "devinterp"), []).append(devinterp(w))
            for b in a.backends:
                if b == "numpyro":
                    print(f"round {r + 1}/{a.rounds} {w}: numpyro cold + warm", flush=True)
                    rows.setdefault((w, "numpyro cold"), []).append(
                        ours(w, b, tempfile.mkdtemp(prefix="jaxcache-cold-"), steady=False))
                    rows.setdefault((w, "numpyro warm"), []).append(ours(w, b, warm[w], steady=True))
                else:
                    print(f"round {r + 1}/{a.rounds} {w}: {b}", flush=True)
                    rows.setdefault((w, b), []).append(ours(w, b, warm[w], steady=True))

    med = lambda xs, k: statistics.median(x[k] for x in xs if x.get(k) is not None)  # noqa: E731
    summary = []
    lines = [f"LLC benchmark, {date.today().isoformat()}, {a.rounds} rounds (medians), machine: "
             f"{os.cpu_count()} cores, float32 devinterp vs float64 pplpatterning", "",
             "| workload | contender | wall s | ratio devinterp/ours | steps/s (e2e) | steady steps/s | "
             "steady ratio | λ̂ (minibatch loss) |",
             "|---|---|---|---|---|---|---|---|"]
    for w in a.workloads:
        base = rows[(w, "devinterp")]
        d_wall, d_sps = med(base, "wall_s"), med(base, "steps_per_s")
        for name in [k[1] for k in rows if k[0] == w]:
            xs = rows[(w, name)]
            wall, sps = med(xs, "wall_s"), med(xs, "steps_per_s")
            steady = med(xs, "steady_steps_per_s") if any("steady_steps_per_s" in x for x in xs) else None
            llc = med(xs, "llc")
            rec = dict(workload=w, contender=name, wall_s=wall, ratio=d_wall / wall, steps_per_s=sps,
                       steady_steps_per_s=steady, steady_ratio=(steady / d_sps) if steady else None, llc=llc,
                       runs=xs)
            summary.append(rec)
            lines.append(f"| {w} | {name} | {wall:.2f} | {d_wall / wall:.2f} | {sps:.0f} | "
                         f"{'' if steady is None else f'{steady:.0f}'} | "
                         f"{'' if steady is None else f'{steady / d_sps:.1f}'} | {llc:.3f} |")
    (OUT / "benchmark.json").write_text(json.dumps(summary, indent=2))
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        Path(a.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
