"""``pplpatterning calibrate``: sweep an SG sampler's step size and recommend one.

    pplpatterning calibrate --model regular --sampler sgld --steps 1e-4 1e-3 1e-2 --plot cal.png
    pplpatterning calibrate --model product --sampler rmsprop_sgld --gammas 0.1 1 10 --csv cal.csv

Sweeps the step size ε (and nβ, γ on request) and recommends the largest ε whose MALA
acceptance is ≥ the threshold, whose loss trace settles, with λ̂ > 0 and no NaN
(pplpatterning.workflows.calibrate). Every argument is checked before anything is compiled
or sampled. The calibration workflow (pandas, the backends) is imported inside
:func:`cmd_calibrate`, so that building the parser stays light.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pplpatterning.cli.arguments import (
    BACKEND_NAMES, CSV_FORMAT, PLOT_FORMATS, add_command, add_posterior_args, build_posterior, key_value_arg,
)
from pplpatterning.samplers.settings import SG_SAMPLERS

__all__ = ["add_calibrate_parser", "cmd_calibrate"]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return value


def _nonnegative(text: str) -> float:
    value = _number(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number ≥ 0, got {text!r}")
    return value


def add_calibrate_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``pplpatterning calibrate``."""
    p = add_command(
        subparsers, "calibrate", help="sweep an SG sampler's step size and recommend one",
        description="Sweep the step size ε of an SG sampler (and nβ, γ on request) and recommend the largest ε "
                    "whose MALA acceptance is ≥ --threshold, whose loss trace settles, with λ̂ > 0 and no NaN.")
    add_posterior_args(p)
    p.add_argument("--sampler", default="sgld", choices=list(SG_SAMPLERS), help="SG sampler to calibrate")
    p.add_argument("--backend", default="numpyro", choices=BACKEND_NAMES, help="framework that runs the chains")
    p.add_argument("--steps", nargs="+", type=_positive, default=None, metavar="EPS",
                   help="step sizes to try (default: 1e-6 … 1e-2 in half-decades)")
    p.add_argument("--n-betas", nargs="+", type=_positive, default=None, metavar="NB",
                   help="also sweep nβ (default: only --n-beta)")
    p.add_argument("--gammas", nargs="+", type=_nonnegative, default=None, metavar="G",
                   help="also sweep γ (default: only --gamma)")
    p.add_argument("--threshold", type=float, default=0.9, help="minimum MALA acceptance")
    p.add_argument("--chains", type=int, default=4, help="number of chains per step size")
    p.add_argument("--draws", type=int, default=500, help="kept draws per chain and step size")
    p.add_argument("--burnin", type=int, default=500, help="burn-in steps per chain")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (default min(n, 256))")
    p.add_argument("--thinning", type=int, default=1, help="keep every K-th step")
    p.add_argument("--acceptance-points", type=int, default=64, help="draws at which MALA acceptance is evaluated")
    p.add_argument("--option", action="append", type=key_value_arg, default=[], metavar="KEY=VALUE",
                   help="sampler option, repeatable (e.g. --option diffusion=1.0; default: the sampler's defaults)")
    p.add_argument("--seed", type=int, default=0, help="run seed")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of λ̂ ± 2 MCSE and acceptance against ε "
                                                  "(default: not drawn)")
    p.add_argument("--csv", metavar="PATH", help="write the sweep table as CSV (default: not written)")
    p.add_argument("--json", action="store_true", help="print the sweep and the recommendation as JSON "
                                                       "(default: a table)")
    p.set_defaults(func=cmd_calibrate, outputs={"plot": PLOT_FORMATS, "csv": CSV_FORMAT})
    return p


def cmd_calibrate(a: argparse.Namespace) -> int:
    """Run the sweep, write ``--csv`` / ``--plot``, print the table and the recommendation; return 0."""
    from pplpatterning.workflows.calibrate import calibrate

    post = build_posterior(a)
    result = calibrate(post, a.sampler, backend=a.backend, step_sizes=a.steps, n_betas=a.n_betas, gammas=a.gammas,
                       threshold=a.threshold, num_chains=a.chains, num_draws=a.draws, num_burnin=a.burnin,
                       batch_size=a.batch_size, thinning=a.thinning, seed=a.seed,
                       acceptance_points=a.acceptance_points, **dict(a.option))
    if a.csv:
        result.table.to_csv(a.csv, index=False)
    if a.plot:
        result.plot(a.plot)
    if a.json:
        out: dict[str, Any] = {
            "model": result.model, "backend": result.backend, "sampler": result.sampler,
            "threshold": result.threshold, "lambda_exact": result.lambda_exact,
            "recommended": json.loads(result.recommended.to_json(orient="records")),
            "table": json.loads(result.table.to_json(orient="records")),
            # the sweep ran to its end; what went wrong in a row is in its `reasons`, their union here
            "incomplete": False, "incomplete_reason": None,
            "findings": sorted({c for r in result.table["reasons"].fillna("") for c in str(r).split(",") if c}),
        }
        print(json.dumps(out, indent=2))
        return 0
    cols = ["n_beta", "gamma", "step_size", "llc", "mcse", "rhat", "ess_bulk", "acceptance", "ok", "message"]
    print(result.table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="—"))
    print()
    print(result)
    for label, path in (("csv", a.csv), ("plot", a.plot)):
        if path:
            print(f"{label}: {path}")
    return 0
