"""devinterp 2.0.1 side of the transformer-trajectory benchmark (issue 12): the same LLC
estimates on the same checkpoints of the built-in transformer, with devinterp's SGLD.

Run inside the bench virtualenv (validation/requirements-bench.txt, plus the repository:
``.venv-bench/bin/pip install --no-deps -e .``), one process, by
validation/transformer_trajectory.py, which runs our side in the same session, interleaved,
under the same thread settings (one thread everywhere: OMP/MKL/OpenBLAS = 1,
``torch.set_num_threads(1)``)::

    .venv-bench/bin/python validation/transformer_devinterp.py --run DIR --json out.json \
        --lr 3e-5 --localization 1000 --nbeta 2019 --chains 4 --draws 200 --burnin 100 --batch 64

The network is :class:`pplpatterning.models.transformer.torch_module.TransformerModule`
(the same array-API forward as our Model), float32; devinterp's ``loss_fn(model, input_ids)``
returns the per-token next-token losses (batch, T), which devinterp averages, as our
``tokens="mean"`` Model does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="training run directory (config.json + step-*.npz)")
    p.add_argument("--json", required=True, help="where to write the timings and estimates")
    p.add_argument("--lr", type=float, required=True, help="SGLD step size (devinterp lr = our step_size)")
    p.add_argument("--localization", type=float, required=True, help="γ")
    p.add_argument("--nbeta", type=float, required=True, help="nβ")
    p.add_argument("--chains", type=int, default=4, help="chains")
    p.add_argument("--draws", type=int, default=200, help="draws per chain")
    p.add_argument("--burnin", type=int, default=100, help="burn-in steps")
    p.add_argument("--batch", type=int, default=64, help="minibatch size (sequences)")
    p.add_argument("--only", type=int, nargs="*", default=None, help="checkpoint indices to run (default all)")
    args = p.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    from datasets import Dataset
    from devinterp.slt.llc import llc

    from pplpatterning.models.transformer import InductionTask
    from pplpatterning.models.transformer.torch_module import TransformerModule, per_token_loss
    from pplpatterning.models.transformer.train import load_run

    config, checkpoints, meta = load_run(args.run)
    t = meta["task"]
    task = InductionTask(vocab=t["vocab"], seq_len=t["seq_len"], span=tuple(t["span"]), min_gap=t["min_gap"],
                         sharpness=t["sharpness"], task_seed=t["task_seed"])
    tokens = task.sample(meta["training"]["n_train"], np.random.default_rng([meta["training"]["seed"], 1])).tokens
    dataset = Dataset.from_dict({"input_ids": tokens}).with_format("torch")

    def loss_fn(model, input_ids):
        return per_token_loss(model(input_ids[:, :-1]), input_ids[:, 1:])

    rows = []
    picked = range(len(checkpoints)) if args.only is None else args.only
    with tempfile.TemporaryDirectory(prefix="transformer_devinterp_") as workdir:
        for i in picked:
            ck = checkpoints[i]
            t0 = time.perf_counter()
            net = TransformerModule(config, dict(ck.params), dtype=torch.float32)
            result = llc(model=net, dataset=dataset, observables={}, lr=args.lr, n_beta=args.nbeta, loss_fn=loss_fn,
                         num_chains=args.chains, num_draws=args.draws, num_burnin_steps=args.burnin,
                         num_steps_bw_draws=1, batch_size=args.batch, localization=args.localization,
                         init_seed=100 + i, device="cpu", output_path=os.path.join(workdir, f"ck{i}.zarr"))
            seconds = time.perf_counter() - t0
            rows.append({"index": i, "step": ck.step, "llc_mean": float(result["llc_mean"]),
                         "llc_std": float(result["llc_std"]), "init_loss": float(result["init_loss"]),
                         "seconds": seconds})
            print(f"devinterp step {ck.step}: λ̂ = {rows[-1]['llc_mean']:.2f} (std over chains "
                  f"{rows[-1]['llc_std']:.2f}), {seconds:.1f} s", flush=True)
    report = {"backend": "devinterp", "rows": rows, "seconds": sum(r["seconds"] for r in rows),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "args": vars(args)}
    with open(args.json, "w") as fh:
        json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
