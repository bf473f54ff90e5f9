"""pplpatterning side of the LLC benchmark (one workload, one backend, one process).

    .venv/bin/python validation/bench_ours.py --workload product --backend numpyro --json out.json

Times, in this process, end to end from building the posterior to the returned λ̂ (imports
excluded, as on the devinterp side), and the steady-state sampling rate from the difference
of a long and a short run (compilation cancels). The data, centre, nβ, γ, step size, batch
size, chains and draws are those of ``bench_workloads.WORKLOADS`` (shared with devinterp's
side); the per-step loss is the minibatch loss like devinterp's, and the exact full-batch
evaluation is timed separately.

The package is imported at the top of this module on its own clock (``import_s``, together
with the backend that :func:`main` loads), before anything else from it, as devinterp's side
times its imports; JAX and NumPyro are imported inside :func:`steady_rate`, the only place
that drives NumPyro directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_workloads import WORKLOADS, make_dln_data, make_product_data  # noqa: E402

_t_import = time.perf_counter()
import pplpatterning  # noqa: E402,F401
import pplpatterning.models  # noqa: E402,F401
from pplpatterning.sampling.core import get_backend  # noqa: E402

PACKAGE_IMPORT_S = time.perf_counter() - _t_import  # the package's share of ``import_s``

from pplpatterning import GibbsPosterior, SamplerSettings, llc, sample  # noqa: E402
from pplpatterning.models import get_model  # noqa: E402


def build_posterior(workload: str):
    """(posterior, config) of ``workload`` in float64, on the data and centre devinterp's side uses."""
    cfg = WORKLOADS[workload]
    if workload == "product":
        raw = make_product_data(cfg["n"], cfg["seed"])
        model = get_model("product")
        data = {"x": raw["x"].astype(np.float64), "y": raw["y"].astype(np.float64)}
        centre = {"a": np.float64(raw["a"]), "b": np.float64(raw["b"])}
    else:
        raw = make_dln_data(cfg["n"], cfg["widths"], cfg["seed"])
        model = get_model("dln", widths=tuple(cfg["widths"]), r=min(cfg["widths"]))
        data = {"x": raw["x"].astype(np.float64), "y": raw["y"].astype(np.float64)}
        centre = {f"W{i + 1}": w.astype(np.float64) for i, w in enumerate(raw["weights"])}
    return GibbsPosterior(model, data, centre=centre, n_beta=cfg["nbeta"], gamma=cfg["localization"]), cfg


def run(workload: str, backend: str, loss_estimate: str, num_draws: int | None = None):
    """(seconds, λ̂ estimate, config) of one end-to-end SGLD run: posterior, sampling and llc()."""
    t0 = time.perf_counter()
    post, cfg = build_posterior(workload)
    tr = sample(post, backend=backend, sampler="sgld", step_size=cfg["lr"], batch_size=cfg["batch_size"],
                num_chains=cfg["num_chains"], num_draws=num_draws or cfg["num_draws"],
                num_burnin=cfg["num_burnin_steps"], loss_estimate=loss_estimate, seed=cfg["seed"],
                progress_bar=False, keep_params=False)
    est = llc(tr)
    return time.perf_counter() - t0, est, cfg


def steady_rate(workload: str, backend: str, repeats: int = 3) -> float:
    """Chain-steps per second of the sampling loop alone: the best of ``repeats`` re-runs
    after a first (compiling) run. NumPyro: one MCMC object re-run with the same shapes.
    Pyro: no compilation, so a repeated end-to-end run minus the full-loss evaluation."""
    cfg = WORKLOADS[workload]
    steps = cfg["num_chains"] * (cfg["num_burnin_steps"] + cfg["num_draws"])
    if backend == "pyro":
        times = [run(workload, backend, "minibatch")[0] for _ in range(repeats + 1)]
        return steps / min(times[1:])
    import jax
    from numpyro.infer import MCMC

    from pplpatterning.backends.numpyro.run import make_kernel
    from pplpatterning.backends.numpyro.spec import posterior_args

    post, _ = build_posterior(workload)
    st = SamplerSettings(sampler="sgld", step_size=cfg["lr"], batch_size=cfg["batch_size"],
                         num_burnin=cfg["num_burnin_steps"], num_draws=cfg["num_draws"], progress_bar=False)
    args = posterior_args(post)
    C = cfg["num_chains"]
    init = {k: jax.numpy.broadcast_to(v, (C,) + v.shape) for k, v in args.centre.items()}
    mcmc = MCMC(make_kernel(post, st), num_warmup=st.num_burnin, num_samples=st.num_draws, num_chains=C,
                chain_method="vectorized", progress_bar=False, jit_model_args=True)
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        with jax.enable_x64(True):  # as the backend runs (it never switches x64 on globally)
            mcmc.run(jax.random.PRNGKey(i), args, init_params=init,
                     extra_fields=("info.minibatch_loss", "info.minibatch_loss_delta"))
            jax.block_until_ready(mcmc.get_samples())
        times.append(time.perf_counter() - t)
    return steps / min(times[1:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    p.add_argument("--backend", choices=["numpyro", "pyro"], default="numpyro")
    p.add_argument("--json", dest="json_out", required=True)
    p.add_argument("--steady", action="store_true", help="also measure the steady-state sampling rate")
    a = p.parse_args(argv)

    t_imp = time.perf_counter()
    get_backend(a.backend)
    import_s = PACKAGE_IMPORT_S + time.perf_counter() - t_imp

    wall, est, cfg = run(a.workload, a.backend, "minibatch")
    steps = cfg["num_chains"] * (cfg["num_burnin_steps"] + cfg["num_draws"])
    out = {
        "workload": a.workload, "backend": a.backend, "import_s": import_s,
        "cache_dir": os.environ.get("JAX_COMPILATION_CACHE_DIR"),
        "wall_s": wall, "steps": steps, "steps_per_s": steps / wall,
        "llc": est.llc, "mcse": est.mcse, "rhat": est.rhat,
    }
    wall_full, est_full, _ = run(a.workload, a.backend, "full")
    out.update(wall_full_loss_s=wall_full, llc_full=est_full.llc, mcse_full=est_full.mcse)
    if a.steady:
        out["steady_steps_per_s"] = steady_rate(a.workload, a.backend)
    Path(a.json_out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
