"""devinterp 2.0.1 side of the LLC benchmark (PyTorch, SGLD).

Run inside the separate bench virtualenv (see validation/requirements-bench.txt):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -r validation/requirements-bench.txt
    .venv-bench/bin/python validation/bench_devinterp.py --workload product --repeats 3 --json out.json
    .venv-bench/bin/python validation/bench_devinterp.py --workload dln --repeats 3 --json out.json

The first section (data generators) imports ONLY numpy so that the NumPyro
benchmark can import it and regenerate bit-identical data and centres:

    from validation.bench_devinterp import make_product_data, make_dln_data, WORKLOADS

torch / devinterp are imported lazily inside the functions that need them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings

import numpy as np  # the only third-party import at module level

# ─── Workload definitions and numpy-only data generators ────────────────────
#
# Conventions shared with the NumPyro side (keep both in sync):
#   * One np.random.default_rng(seed) stream per workload, seed 0.
#   * Everything is generated in float64 and cast to float32 at the end
#     (devinterp / torch work in float32).
#   * Per-sample loss is the Gaussian NLL with unit noise, up to constants:
#       product: l_i(w) = (y_i - a*b*x_i)^2 / 2
#       dln:     l_i(w) = ||y_i - W3 W2 W1 x_i||^2 / 2   (summed over the 10 outputs)
#     L_n(w) = mean_i l_i(w);   nbeta = n / log(n);
#     LLC_hat = nbeta * (E_w[L_n(w)] - L_n(w*)).
#   * DLN weights are in torch nn.Linear layout (out_features, in_features),
#     so f(x) = x @ W1.T @ W2.T @ W3.T.

PRODUCT_N = 1000
DLN_N = 10_000
DLN_WIDTHS = (10, 20, 20, 10)

WORKLOADS = {
    "product": dict(
        n=PRODUCT_N,
        batch_size=1000,  # full batch
        num_chains=4,
        num_draws=1000,
        num_burnin_steps=0,
        num_steps_bw_draws=1,
        lr=1e-3,
        localization=1.0,
        nbeta=PRODUCT_N / math.log(PRODUCT_N),
        seed=0,
        # Asymptotic LLC: the product model a*b at the origin has RLCT 1/2.  The
        # finite-n target of the estimator is product_reference_llc() = 0.1438.
        expected_llc=0.5,
    ),
    "dln": dict(
        n=DLN_N,
        widths=DLN_WIDTHS,
        batch_size=256,
        num_chains=4,
        num_draws=1000,
        num_burnin_steps=0,
        num_steps_bw_draws=1,
        lr=1e-5,  # 1e-4 biases λ̂ to ~133 (devinterp and ours alike) against ~45; speed is unaffected
        localization=1.0,
        nbeta=DLN_N / math.log(DLN_N),
        seed=0,
        # Teacher is full rank r = 10 = min(H_in, H_out): Aoyagi's formula gives
        # lambda = (-r^2 + r (H_in + H_out)) / 2 = 50 (the 10x10 product map).
        # Since w* is the teacher, not the empirical minimiser, the finite-n target
        # is lower, roughly 50 - 100 / (2 log n) ~ 44.6.
        expected_llc=50.0,
    ),
}


def make_product_data(n: int = PRODUCT_N, seed: int = 0) -> dict[str, np.ndarray]:
    """y = a*b*x + eps with truth a = b = 0, x ~ N(0,1), eps ~ N(0,1).

    Draw order from default_rng(seed): x (n,), then eps (n,).
    Returns float32 arrays x (n,), y (n,) and the centre w* = (a, b) = (0, 0).
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    eps = rng.standard_normal(n)
    a_true, b_true = 0.0, 0.0
    y = a_true * b_true * x + eps
    return {
        "x": x.astype(np.float32),
        "y": y.astype(np.float32),
        "a": np.float32(a_true),
        "b": np.float32(b_true),
    }


def make_dln_data(
    n: int = DLN_N, widths: tuple[int, ...] = DLN_WIDTHS, seed: int = 0
) -> dict[str, object]:
    """Teacher DLN (no biases) with W_l ~ N(0, 1/fan_in); x ~ N(0, I); y = f(x) + N(0, I).

    Draw order from default_rng(seed): W1, W2, W3 (each (out, in), standard
    normal scaled by 1/sqrt(in)), then x (n, widths[0]), then noise (n, widths[-1]).
    The teacher's weights are the SGLD centre w*.  Returns float32 arrays:
    "weights" (list of (out, in) matrices), "x" (n, 10), "y" (n, 10).
    """
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        weights.append(rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in))
    x = rng.standard_normal((n, widths[0]))
    noise = rng.standard_normal((n, widths[-1]))
    f = x
    for w in weights:
        f = f @ w.T
    y = f + noise
    return {
        "weights": [w.astype(np.float32) for w in weights],
        "x": x.astype(np.float32),
        "y": y.astype(np.float32),
    }


def product_reference_llc(
    data: dict[str, np.ndarray] | None = None,
    nbeta: float = PRODUCT_N / math.log(PRODUCT_N),
    localization: float = 1.0,
    half_width: float = 8.0,
    grid: int = 2001,
) -> float:
    """Exact (quadrature) value of what SGLD estimates on the product workload.

    E_w[nbeta * (L_n(w) - L_n(w*))] under the localized tempered posterior
    p(w) ~ exp(-nbeta L_n(w) - localization |w - w*|^2 / 2), w = (a, b), w* = 0,
    which is the stationary law of devinterp's SGLD update.  For this data set
    (mean(x*y) = 0.059) it is 0.1438, well below the asymptotic RLCT 1/2,
    because w* = 0 is not the empirical minimiser of L_n.
    """
    if data is None:
        data = make_product_data()
    x = np.asarray(data["x"], dtype=np.float64)
    y = np.asarray(data["y"], dtype=np.float64)
    sxx, sxy = np.mean(x * x), np.mean(x * y)
    g = np.linspace(-half_width, half_width, grid)
    a, b = np.meshgrid(g, g)
    u = a * b
    dl = -u * sxy + 0.5 * u * u * sxx  # L_n(a, b) - L_n(0, 0)
    logp = -nbeta * dl - 0.5 * localization * (a * a + b * b)
    w = np.exp(logp - logp.max())
    return float((w * nbeta * dl).sum() / w.sum())


def make_data(workload: str) -> dict[str, object]:
    cfg = WORKLOADS[workload]
    if workload == "product":
        return make_product_data(cfg["n"], cfg["seed"])
    if workload == "dln":
        return make_dln_data(cfg["n"], cfg["widths"], cfg["seed"])
    raise ValueError(workload)


# ─── devinterp side (torch/devinterp imported lazily) ───────────────────────


def _build_model_and_loss(workload: str, data: dict, counter: dict):
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


def run_once(workload: str, data: dict, init_seed: int, workdir: str) -> dict:
    """One end-to-end devinterp LLC estimate; returns timings and the estimate."""
    import torch
    from datasets import Dataset
    from devinterp.slt.llc import llc

    cfg = WORKLOADS[workload]
    counter = {"sgld_steps": 0, "init_loss_evals": 0}
    out_path = os.path.join(workdir, f"samples_{workload}_{init_seed}.zarr")
    assert not os.path.exists(out_path)  # devinterp returns a cached result otherwise

    t0 = time.perf_counter()
    model, loss_fn = _build_model_and_loss(workload, data, counter)
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

    per_chain = [float(v) for v in np.asarray(result["llc_per_chain"])]
    init_loss = float(result["init_loss"])
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
        "init_seed": init_seed,
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
        "init_loss": init_loss,
        "loss_trace_mean": float(trace.mean()),
        "loss_trace_finite": bool(np.isfinite(trace).all()),
        "zarr_output_bytes": zarr_bytes,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", dest="json_out", default=None, help="write results here")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
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
    args = p.parse_args(argv)

    if not args.progress:
        os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*nbeta set to 1.*")

    t_imp = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    import datasets
    import devinterp.slt.llc  # noqa: F401  (import cost reported separately)
    import transformers
    import xarray
    import zarr

    import_s = time.perf_counter() - t_imp

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

    def med(key):
        return float(statistics.median(r[key] for r in runs))

    summary = {
        "wall_s": med("wall_s"),
        "steps_per_s": med("steps_per_s"),
        "llc_mean": med("llc_mean"),
        "llc_std": med("llc_std"),
        "sgld_steps": med("sgld_steps"),
    }
    report = {
        "backend": "devinterp",
        "workload": args.workload,
        "config": {
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
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "devinterp": importlib.metadata.version("devinterp"),
            "numpy": np.__version__,
            "datasets": datasets.__version__,
            "transformers": transformers.__version__,
            "xarray": xarray.__version__,
            "zarr": zarr.__version__,
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
    print(
        f"[{args.workload} median of {len(runs)}] wall {summary['wall_s']:.2f}s  "
        f"{summary['steps_per_s']:.0f} steps/s  "
        f"LLC {summary['llc_mean']:.4f} ± {summary['llc_std']:.4f}  "
        f"(asymptotic {cfg['expected_llc']}"
        + (f", exact finite-n {reference:.4f}" if reference is not None else "")
        + f"; imports {import_s:.1f}s, threads "
        f"{torch.get_num_threads()})",
        flush=True,
    )
    if args.json_out:
        out_dir = os.path.dirname(os.path.abspath(args.json_out))
        os.makedirs(out_dir, exist_ok=True)
        with open(args.json_out, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
