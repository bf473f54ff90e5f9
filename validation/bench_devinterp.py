"""devinterp 2.0.1 side of the LLC benchmark (PyTorch, SGLD).

Run inside the separate bench virtualenv (see validation/requirements-bench.txt):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -r validation/requirements-bench.txt
    .venv-bench/bin/python validation/bench_devinterp.py --workload product --repeats 3 --json out.json
    .venv-bench/bin/python validation/bench_devinterp.py --workload dln --repeats 3 --json out.json

The workloads and their data come from validation/bench_workloads.py (NumPy only), shared
with our side (validation/bench_ours.py) so that both see bit-identical data and centres.

torch, datasets, devinterp, transformers, xarray and zarr are imported inside functions:
they exist only in the bench venv, and :func:`main` imports them first on its own clock so
that their import time is reported separately (``import_s``) from the timed runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np  # the only third-party import at module level

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_workloads import WORKLOADS, make_data, product_reference_llc  # noqa: E402


def build_model_and_loss(workload: str, data: dict, counter: dict):
    """Torch model at the centre w*, plus a devinterp loss_fn.

    devinterp 2.0.1 only accepts an LM-style dataset of integer "input_ids"
    sequences and a loss_fn(model, input_ids) -> (batch, seq_len-1) per-token
    loss.  We therefore store each example as the index pair [i, i]
    (seq_len 2 => one "token" position) and look up the float32 (x_i, y_i)
    rows inside loss_fn.  The loss is exactly the per-sample l_i(w) above.
    """
    import torch
    from torch import nn

    x = torch.from_numpy(np.ascontiguousarray(data["x"]))
    y = torch.from_numpy(np.ascontiguousarray(data["y"]))

    if workload == "product":

        class Product(nn.Module):
            def __init__(self, a: float, b: float):
                super().__init__()
                self.a = nn.Parameter(torch.tensor(a, dtype=torch.float32))
                self.b = nn.Parameter(torch.tensor(b, dtype=torch.float32))

            def forward(self, xb):
                return self.a * self.b * xb

        model = Product(float(data["a"]), float(data["b"]))

        def per_sample(model, xb, yb):
            return 0.5 * (yb - model(xb)) ** 2

    elif workload == "dln":
        ws = data["weights"]
        layers = []
        for w in ws:
            lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
            layers.append(lin)
        model = nn.Sequential(*layers)

        def per_sample(model, xb, yb):
            return 0.5 * ((yb - model(xb)) ** 2).sum(dim=-1)

    else:
        raise ValueError(workload)

    def loss_fn(model, input_ids):
        if torch.is_grad_enabled():  # SGLD step (init-loss passes run under no_grad)
            t = time.perf_counter()
            counter["sgld_steps"] += 1
            counter.setdefault("t_first_step", t)
            counter["t_last_step"] = t
        else:
            counter["init_loss_evals"] += 1
        idx = input_ids[:, 0]
        return per_sample(model, x[idx], y[idx])[:, None]

    return model, loss_fn


def _run_record(cfg: dict, counter: dict, times: tuple[float, float, float], llc_mean: float, llc_std: float,
                result, out_path: str) -> dict:
    """The timings, step counts and estimate of one devinterp run (see :func:`run_once`);
    ``times`` = (start, model and dataset built, estimate returned)."""
    import torch

    t0, t_built, t1 = times
    per_chain = [float(v) for v in np.asarray(result["llc_per_chain"])]
    trace = np.asarray(result["loss_trace"])  # (chain, step)
    wall = t1 - t0
    expected_steps = cfg["num_chains"] * (
        cfg["num_burnin_steps"] + cfg["num_draws"] * cfg["num_steps_bw_draws"]
    )
    steps = counter["sgld_steps"]
    zarr_bytes = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out_path) for f in fs
    )
    return {
        "wall_s": wall,
        "build_s": t_built - t0,
        "before_first_step_s": counter.get("t_first_step", t1) - t0,
        "sampling_loop_s_approx": counter.get("t_last_step", t1)
        - counter.get("t_first_step", t1),
        "after_last_step_s": t1 - counter.get("t_last_step", t1),
        "sgld_steps": steps,
        "sgld_steps_expected": expected_steps,
        "init_loss_evals": counter["init_loss_evals"],
        "steps_per_s": steps / wall,
        "llc_mean": llc_mean,
        "llc_std": llc_std,
        "llc_per_chain": per_chain,
        "init_loss": float(result["init_loss"]),
        "loss_trace_mean": float(trace.mean()),
        "loss_trace_finite": bool(np.isfinite(trace).all()),
        "zarr_output_bytes": zarr_bytes,
        "torch_threads": torch.get_num_threads(),
    }


def run_once(workload: str, data: dict, init_seed: int, workdir: str, cfg: dict | None = None,
             keep_trace: bool = False) -> dict:
    """One end-to-end devinterp LLC estimate; returns timings and the estimate.

    ``cfg`` (default ``WORKLOADS[workload]``) may give other sizes (validation/bench_scale.py:
    DLN widths [w]*4); ``keep_trace`` adds the (chain, step) minibatch ``loss_trace`` as lists."""
    from datasets import Dataset
    from devinterp.slt.llc import llc

    cfg = WORKLOADS[workload] if cfg is None else cfg
    counter = {"sgld_steps": 0, "init_loss_evals": 0}
    out_path = os.path.join(workdir, f"samples_{workload}_{init_seed}.zarr")
    assert not os.path.exists(out_path)  # devinterp returns a cached result otherwise

    t0 = time.perf_counter()
    model, loss_fn = build_model_and_loss(workload, data, counter)
    n = cfg["n"]
    idx = np.arange(n, dtype=np.int64)
    dataset = Dataset.from_dict({"input_ids": np.stack([idx, idx], axis=1)})
    dataset = dataset.with_format("torch")
    t_built = time.perf_counter()

    result = llc(
        model=model,
        dataset=dataset,
        observables={},  # no extra probe datasets: the LLC needs only the sampling loss
        lr=cfg["lr"],
        n_beta=cfg["nbeta"],
        loss_fn=loss_fn,
        num_chains=cfg["num_chains"],
        num_draws=cfg["num_draws"],
        num_burnin_steps=cfg["num_burnin_steps"],
        num_steps_bw_draws=cfg["num_steps_bw_draws"],
        batch_size=cfg["batch_size"],
        localization=cfg["localization"],
        init_seed=init_seed,
        device="cpu",
        output_path=out_path,
    )
    llc_mean = float(result["llc_mean"])
    llc_std = float(result["llc_std"])
    t1 = time.perf_counter()
    rec = {"init_seed": init_seed, **_run_record(cfg, counter, (t0, t_built, t1), llc_mean, llc_std, result, out_path)}
    if keep_trace:
        rec["loss_trace"] = np.asarray(result["loss_trace"], dtype=np.float64).tolist()
    return rec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", dest="json_out", default=None, help="write results here")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (1: two threads spin-wait on a loaded 2-core machine, issue 11)")
    p.add_argument(
        "--init-seed",
        type=int,
        default=100,
        help="devinterp init_seed (its default is 100; chain c uses init_seed + c)",
    )
    p.add_argument(
        "--vary-seed",
        action="store_true",
        help="use init_seed + 1000*repeat so repeats are independent estimates",
    )
    p.add_argument("--progress", action="store_true", help="show devinterp's tqdm bars")
    return p


def timed_imports(threads: int) -> tuple[dict, float]:
    """Import the bench stack (torch with ``threads`` threads first); returns (versions, seconds)."""
    t_imp = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    import datasets
    import devinterp.slt.llc  # noqa: F401  (import cost reported separately)
    import transformers
    import xarray
    import zarr

    import_s = time.perf_counter() - t_imp
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "devinterp": importlib.metadata.version("devinterp"),
        "numpy": np.__version__,
        "datasets": datasets.__version__,
        "transformers": transformers.__version__,
        "xarray": xarray.__version__,
        "zarr": zarr.__version__,
    }
    return versions, import_s


def run_repeats(args, data: dict) -> list[dict]:
    """``args.repeats`` runs of :func:`run_once`, each printed, their zarr output removed."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_devinterp_") as workdir:
        for r in range(args.repeats):
            seed = args.init_seed + (1000 * r if args.vary_seed else 0)
            rec = run_once(args.workload, data, seed, workdir)
            rec["repeat"] = r
            runs.append(rec)
            shutil.rmtree(
                os.path.join(workdir, f"samples_{args.workload}_{seed}.zarr"),
                ignore_errors=True,
            )
            print(
                f"[{args.workload} r{r}] wall {rec['wall_s']:.2f}s  "
                f"steps {rec['sgld_steps']}/{rec['sgld_steps_expected']}  "
                f"{rec['steps_per_s']:.0f} steps/s  "
                f"LLC {rec['llc_mean']:.4f} ± {rec['llc_std']:.4f}  "
                f"(per chain {', '.join(f'{v:.3f}' for v in rec['llc_per_chain'])})",
                flush=True,
            )
    return runs


def _config(args, cfg: dict) -> dict:
    """The workload and devinterp's settings as run (for the JSON report)."""
    return {
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "entry_point": "devinterp.slt.llc.llc",
        "sampling_method": "sgmcmc_sgld (devinterp default: SGMCMC.sgld)",
        "noise_level": 1.0,
        "llc_weight_decay": 0.0,
        "num_init_loss_batches": 32,
        "gradient_accumulation_steps": 1,
        "shuffle": True,
        "epoch_mode": "cycle",
        "match_sampling_input_ids_across_chains": True,
        "observables": {},
        "init_seed": args.init_seed,
        "vary_seed": args.vary_seed,
        "device": "cpu",
    }


def _print_median(report: dict) -> None:
    """The one-line summary of the medians over the runs."""
    summary, reference = report["median"], report["reference_llc_finite_n"]
    print(
        f"[{report['workload']} median of {len(report['runs'])}] wall {summary['wall_s']:.2f}s  "
        f"{summary['steps_per_s']:.0f} steps/s  "
        f"LLC {summary['llc_mean']:.4f} ± {summary['llc_std']:.4f}  "
        f"(asymptotic {report['expected_llc_asymptotic']}"
        + (f", exact finite-n {reference:.4f}" if reference is not None else "")
        + f"; imports {report['import_s']:.1f}s, threads "
        f"{report['environment']['torch_threads']})",
        flush=True,
    )


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.progress:
        os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*nbeta set to 1.*")

    versions, import_s = timed_imports(args.threads)
    import torch

    t_gen = time.perf_counter()
    data = make_data(args.workload)
    datagen_s = time.perf_counter() - t_gen

    load_before = os.getloadavg()
    cfg = WORKLOADS[args.workload]
    reference = (
        product_reference_llc(data, cfg["nbeta"], cfg["localization"])
        if args.workload == "product"
        else None
    )
    runs = run_repeats(args, data)

    def med(key):
        return float(statistics.median(r[key] for r in runs))

    summary = {k: med(k) for k in ("wall_s", "steps_per_s", "llc_mean", "llc_std", "sgld_steps")}
    report = {
        "backend": "devinterp",
        "workload": args.workload,
        "config": _config(args, cfg),
        "environment": {
            **versions,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "loadavg_1_5_15_before": list(load_before),
            "loadavg_1_5_15_after": list(os.getloadavg()),
        },
        "import_s": import_s,
        "datagen_s": datagen_s,
        "timing_scope": (
            "wall_s = build torch model + HF Dataset + devinterp llc() (init loss, "
            "all chains, zarr writes, compute_llc) + float() of the result; "
            "excludes imports (import_s) and numpy data generation (datagen_s)"
        ),
        "expected_llc_asymptotic": cfg["expected_llc"],
        "reference_llc_finite_n": reference,
        "runs": runs,
        "median": summary,
    }
    _print_median(report)
    if args.json_out:
        out_dir = os.path.dirname(os.path.abspath(args.json_out))
        os.makedirs(out_dir, exist_ok=True)
        with open(args.json_out, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
