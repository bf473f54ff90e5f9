"""LLC and per-head refined LLC over the training of the built-in transformer (issue 12).

Three steps, each its own process so that peak memory is measured per contender:

    # 1. train (about 2 min; 12 log-spaced checkpoints; the .npz files are not committed)
    .venv/bin/python -m pplpatterning.models.transformer.train --out validation/reports/transformer/run \
        --checkpoints 12 --threads 1
    # 2. λ̂ at every checkpoint, each round two processes started together (one core each):
    #    round 1: ours on NumPyro (float32) and devinterp 2.0.1 (torch) -> devinterp_round1.json
    #    round 2: ours on Pyro (float32) and devinterp again            -> devinterp.json
    .venv/bin/python validation/transformer_trajectory.py llc --out validation/reports/transformer [--backend pyro]
    .venv-bench/bin/python validation/transformer_devinterp.py --run validation/reports/transformer/run \
        --json validation/reports/transformer/devinterp.json --lr 3e-5 --localization 1000 --nbeta 2019
    # 3. the refined λ̂ of every head (at every other checkpoint), head scores, stages, figures
    .venv/bin/python validation/transformer_trajectory.py heads --out validation/reports/transformer
    .venv/bin/python validation/transformer_trajectory.py report --out validation/reports/transformer

Settings (the same for both contenders): the training set (n = 20 000 sequences of 33
tokens), nβ = n / log n = 2019 (WBIC), γ = 1000, SGLD with ε = 3e-5, minibatch 64, 4 chains
× 200 draws after 100 burn-in steps, minibatch loss (devinterp's). Chosen on the last
checkpoint: ε = 1e-4 (γ = 100) drifts to a loss of 3.0 and ε = 1e-5 (γ = 100) has not
equilibrated after 300 steps (R-hat 1.68); ε = 3e-5 with γ = 1000 gives R-hat 1.013.
Thread settings: OMP/MKL/OpenBLAS = 1, XLA_FLAGS=--xla_cpu_multi_thread_eigen=false, torch
1 thread (set by this script for its own process; pass the same environment to devinterp's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import numpy as np  # noqa: E402

SETTINGS = dict(sampler="sgld", step_size=3e-5, batch_size=64, num_chains=4, num_draws=200, num_burnin=100,
                loss_estimate="minibatch", dtype="float32")
GAMMA = 1000.0
#: the per-head runs: fewer draws (8 heads × 6 checkpoints), the same sampler and ε
HEAD_SETTINGS = dict(SETTINGS, num_draws=100, num_burnin=100)


def _setup(run: Path):
    import pplpatterning as pp
    from pplpatterning.models.transformer import InductionTask, transformer_model
    from pplpatterning.models.transformer.train import load_run

    config, checkpoints, meta = load_run(run)
    t = meta["task"]
    task = InductionTask(vocab=t["vocab"], seq_len=t["seq_len"], span=tuple(t["span"]), min_gap=t["min_gap"],
                         sharpness=t["sharpness"], task_seed=t["task_seed"])
    train = task.sample(meta["training"]["n_train"], np.random.default_rng([meta["training"]["seed"], 1]))
    model = transformer_model(config, checkpoints[-1].params, task=task)
    post = pp.GibbsPosterior(model, {"tokens": train.tokens}, gamma=GAMMA)
    return config, checkpoints, task, post


def cmd_llc(out: Path, backend: str) -> None:
    from pplpatterning.backends.numpyro import driver
    from pplpatterning.workflows.trajectory import llc_trajectory

    _, checkpoints, _, post = _setup(out / "run")
    t0 = time.perf_counter()
    ds = llc_trajectory(checkpoints, post, backend=backend, seed=0, **SETTINGS)
    seconds = time.perf_counter() - t0
    ds.to_netcdf(out / f"llc_{backend}.nc")
    report = {"backend": backend, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "program_traces": dict(driver.PROGRAM_TRACES), "steps": ds["checkpoint"].values.tolist(),
              "llc": ds["llc"].values.tolist(), "mcse": ds["llc_mcse"].values.tolist(), "rhat": ds["rhat"].values.tolist(),
              "job_seconds": ds["seconds"].values.tolist(), "loss_at_centre": ds["loss_at_centre"].values.tolist()}
    (out / f"llc_{backend}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("seconds", "peak_rss_mb", "program_traces")}))


def cmd_heads(out: Path) -> None:
    from pplpatterning.models.transformer import transformer_components
    from pplpatterning.workflows.trajectory import llc_trajectory

    config, checkpoints, _, post = _setup(out / "run")
    heads = transformer_components(config, mlps=False, embed=False, unembed=False)
    picked = checkpoints[1::2]
    t0 = time.perf_counter()
    ds = llc_trajectory(picked, post, components=heads, backend="numpyro", seed=0,
                                     store=out / "heads_store", **HEAD_SETTINGS)
    ds.attrs["seconds_total"] = time.perf_counter() - t0
    ds.to_netcdf(out / "heads.nc")
    print(ds["llc"].round(1).to_pandas())


def _llc_dataset(out: Path, ours: dict):
    """The λ̂ trajectory: the netCDF file `llc` wrote, or rebuilt from its JSON (the .nc files
    are not committed)."""
    import xarray as xr

    path = out / "llc_numpyro.nc"
    if path.exists():
        return xr.open_dataset(path).load()
    var = {"llc": ours["llc"], "llc_mcse": ours["mcse"], "rhat": ours["rhat"], "loss_at_centre": ours["loss_at_centre"]}
    return xr.Dataset({k: ("checkpoint", np.asarray(v, dtype=float)) for k, v in var.items()},
                      coords={"checkpoint": np.asarray(ours["steps"], dtype=np.int64)})


def _head_kinds(scores: dict, threshold: float = 0.3) -> dict[str, str]:
    """Each head's kind by its attention-pattern score at the last checkpoint: "previous-token"
    or "induction" when that score is ≥ threshold and the larger of the two, else "other"."""
    prev, ind = np.asarray(scores["previous_token"]), np.asarray(scores["induction"])
    kinds = {}
    for layer in range(prev.shape[0]):
        for head in range(prev.shape[1]):
            p, i = prev[layer, head], ind[layer, head]
            kind = "previous-token" if p >= threshold and p >= i else "induction" if i >= threshold else "other"
            kinds[f"layer {layer} head {head}"] = kind
    return kinds


def _separation(heads, kinds: dict[str, str]) -> dict:
    """Per checkpoint: the mean refined λ̂ of each kind of head and, for the previous-token and
    the induction heads each, the gap between the lowest head of that kind and the highest
    "other" head in combined MCSEs (positive: every head of the kind lies above every other)."""
    rows = {}
    for step in heads["checkpoint"].values:
        h = heads.sel(checkpoint=step)
        by = {}
        for name, kind in kinds.items():
            by.setdefault(kind, []).append((float(h["llc"].sel(component=name)), float(h["llc_mcse"].sel(component=name))))
        row = {f"mean_{k}": float(np.mean([v for v, _ in xs])) for k, xs in by.items()}
        for kind in ("previous-token", "induction"):
            if by.get(kind) and by.get("other"):
                lo, hi = min(by[kind]), max(by["other"])
                row[f"gap_{kind}_over_other_in_mcse"] = (lo[0] - hi[0]) / float(np.hypot(lo[1], hi[1]))
        rows[int(step)] = row
    return rows


def cmd_report(out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import xarray as xr

    from pplpatterning.models.transformer import head_scores
    from pplpatterning.trajectory_plots import plot_llc_trajectory, plot_rllc_trajectory
    from pplpatterning.workflows.stages import detect_stages

    config, checkpoints, task, _ = _setup(out / "run")
    # round 1: ours on NumPyro and devinterp, run together; round 2: ours on Pyro and devinterp
    ours = json.loads((out / "llc_numpyro.json").read_text())
    dv = json.loads((out / "devinterp_round1.json").read_text())
    pyro = json.loads((out / "llc_pyro.json").read_text()) if (out / "llc_pyro.json").exists() else None
    dv2 = json.loads((out / "devinterp.json").read_text()) if pyro is not None else None
    llc = _llc_dataset(out, ours)
    heads = xr.open_dataset(out / "heads.nc").load()
    probe = task.sample(512, np.random.default_rng(99))
    scores = {ck.step: head_scores(config, ck.params, probe.tokens, probe.labels, probe.source) for ck in checkpoints}
    last = checkpoints[-1].step
    stages = detect_stages(llc["checkpoint"].values, llc["llc"].values, llc["llc_mcse"].values)
    figs = Path(__file__).resolve().parents[1] / "docs" / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    shown = llc.sel(checkpoint=llc["checkpoint"] > 0)  # a log step axis; step 0 is in summary.json
    plot_llc_trajectory(shown, ax=ax, stages=stages)
    dvs = [(r["step"], r["llc_mean"]) for r in dv["rows"] if r["step"] > 0]
    ax.plot(*zip(*dvs), "x", color="tab:red", label="devinterp 2.0.1 (same settings)")
    if pyro is not None:
        keep = np.asarray(pyro["steps"]) > 0
        ax.errorbar(np.asarray(pyro["steps"])[keep], np.asarray(pyro["llc"])[keep],
                    yerr=2 * np.asarray(pyro["mcse"])[keep], fmt="+", color="tab:green", label="ours, Pyro backend")
    ax.set_ylim(-150, 230)
    ax.text(1.1, -140, "steps 1-5 lie below (λ̂ < -300: not yet minima)", fontsize=7, color="0.3")
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title("built-in transformer (38 912 parameters): λ̂ over training")
    fig.tight_layout()
    fig.savefig(figs / "transformer_llc.png", dpi=120)
    fig, ax = plt.subplots(figsize=(7, 4))
    kinds = _head_kinds(scores[last])
    plot_rllc_trajectory(heads, ax=ax)
    for line in ax.get_lines():
        if line.get_label() in kinds and kinds[line.get_label()] != "other":
            line.set_label(f"{line.get_label()} ({kinds[line.get_label()]})")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_ylim(-20, 40)
    ax.text(1.1, -18, "step 1 lies below (about -75)", fontsize=7, color="0.3")
    ax.set_title("refined λ̂ of each attention head")
    fig.tight_layout()
    fig.savefig(figs / "transformer_rllc_heads.png", dpi=120)
    summary = {
        "ours_seconds": ours["seconds"], "devinterp_seconds": dv["seconds"],
        "time_ratio_devinterp_over_ours": dv["seconds"] / ours["seconds"],
        "ours_peak_rss_mb": ours["peak_rss_mb"], "devinterp_peak_rss_mb": dv["peak_rss_mb"],
        "program_traces": ours["program_traces"], "stages": [int(s) for s in stages],
        "pyro_round": None if pyro is None else {
            "pyro_seconds": pyro["seconds"], "devinterp_seconds": dv2["seconds"],
            "time_ratio_devinterp_over_pyro": dv2["seconds"] / pyro["seconds"],
            "pyro_peak_rss_mb": pyro["peak_rss_mb"], "devinterp_peak_rss_mb": dv2["peak_rss_mb"],
            "pyro_llc": pyro["llc"], "pyro_mcse": pyro["mcse"], "pyro_rhat": pyro["rhat"],
            "devinterp_llc": [r["llc_mean"] for r in dv2["rows"]]},
        "rows": [{"step": s, "llc": a, "mcse": m, "rhat": r, "devinterp_llc": d["llc_mean"],
                  "devinterp_chain_std": d["llc_std"], "loss": lo}
                 for s, a, m, r, d, lo in zip(ours["steps"], ours["llc"], ours["mcse"], ours["rhat"], dv["rows"],
                                             ours["loss_at_centre"])],
        "head_scores_last": {k: np.asarray(v).tolist() for k, v in scores[last].items() if k in ("previous_token", "induction")},
        "heads": {str(c): {"llc": heads["llc"].sel(component=c).values.tolist(),
                           "mcse": heads["llc_mcse"].sel(component=c).values.tolist(),
                           "rhat": heads["rhat"].sel(component=c).values.tolist()}
                  for c in heads["component"].values},
        "head_steps": heads["checkpoint"].values.tolist(),
        "head_kinds": _head_kinds(scores[last]),
        "separation": _separation(heads, _head_kinds(scores[last])),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("rows", "heads")}, indent=1))
    for r in summary["rows"]:
        print(f"{r['step']:6d}  loss {r['loss']:.3f}  λ̂ {r['llc']:8.2f} ± {r['mcse']:.2f}  R-hat {r['rhat']:.3f}  "
              f"devinterp {r['devinterp_llc']:8.2f} (chain sd {r['devinterp_chain_std']:.2f})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="LLC and per-head rLLC over training of the built-in transformer.")
    p.add_argument("what", choices=("llc", "heads", "report"), help="which step to run")
    p.add_argument("--out", default="validation/reports/transformer", help="report directory (holds run/)")
    p.add_argument("--backend", default="numpyro", choices=("numpyro", "pyro"), help="our backend for `llc`")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.what == "llc":
        cmd_llc(out, a.backend)
    elif a.what == "heads":
        cmd_heads(out)
    else:
        cmd_report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
