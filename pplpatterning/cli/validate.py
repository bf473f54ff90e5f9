"""``pplpatterning calibrate`` and ``pplpatterning validate``.

    pplpatterning calibrate --model regular --sampler sgld --steps 1e-4 1e-3 1e-2 --plot cal.png
    pplpatterning calibrate --model product --sampler rmsprop_sgld --gammas 0.1 1 10 --csv cal.csv
    pplpatterning validate --quick                  # the CI subset of validation/, < 5 minutes
    pplpatterning validate --cases rrr dln --backends numpyro

``calibrate`` sweeps an SG sampler's step size ε (and nβ, γ on request) and recommends the
largest ε whose MALA acceptance is ≥ the threshold, whose loss trace settles, with λ̂ > 0
and no NaN (pplpatterning.workflows.calibrate). ``validate`` runs validation/run_validation.py from
the source tree (the validation suite is part of the repository, not of the wheel).
Every argument is checked before anything is compiled or sampled.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from pplpatterning.cli.main import BACKEND_NAMES, CSV_FORMAT, PLOT_FORMATS, FOLDER, add_command
from pplpatterning.samplers.settings import SG_SAMPLERS

__all__ = ["add_calibrate_parser", "add_validate_parser", "add_parsers", "cmd_calibrate", "cmd_validate",
           "load_validation_runner"]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return value


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number ≥ 0, got {text!r}")
    return value


# -------------------------------------------------------------------- calibrate
def add_calibrate_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``pplpatterning calibrate``."""
    from pplpatterning.cli.main import _add_posterior_args, _option

    p = add_command(
        subparsers, "calibrate", help="sweep an SG sampler's step size and recommend one",
        description="Sweep the step size ε of an SG sampler (and nβ, γ on request) and recommend the largest ε "
                    "whose MALA acceptance is ≥ --threshold, whose loss trace settles, with λ̂ > 0 and no NaN.")
    _add_posterior_args(p)
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
    p.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
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
    from pplpatterning.workflows.calibrate import calibrate
    from pplpatterning.cli.main import _build_posterior

    post = _build_posterior(a)
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


# --------------------------------------------------------------------- validate
def load_validation_runner(root: str | Path | None = None):
    """Import validation/run_validation.py from the repository at ``root``.

    Default root: the checkout this package was imported from (an editable install), else
    the current directory. Raises FileNotFoundError naming the path when it is missing.
    """
    candidates = [Path(root)] if root is not None else [Path(__file__).resolve().parents[1], Path.cwd()]
    for base in candidates:
        path = base / "validation" / "run_validation.py"
        if path.is_file():
            name = "_pplpatterning_validation_runner"
            if name in sys.modules and Path(sys.modules[name].__file__).resolve() == path.resolve():
                return sys.modules[name]
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
    tried = ", ".join(str(b / "validation" / "run_validation.py") for b in candidates)
    raise FileNotFoundError(
        f"`pplpatterning validate` runs the repository's validation suite, which is not installed with the "
        f"package; none of {tried} exists. Run it from a checkout of the repository or pass --root."
    )


def add_validate_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``pplpatterning validate``."""
    p = add_command(subparsers, "validate", help="run the validation suite (every model × backend × sampler) "
                                                 "and write validation/report.md")
    p.add_argument("--quick", action="store_true", help="the CI subset, < 5 minutes on 2 cores (default: the full run)")
    p.add_argument("--seed", type=int, default=None, help="run seed (default: the documented one)")
    p.add_argument("--out", default=None, help="directory for report.md and figures/ "
                                               "(default validation/, or validation/out/quick/ with --quick)")
    p.add_argument("--cases", nargs="+", default=None,
                   help="only these cases (see validation/settings.py; default: all)")
    p.add_argument("--backends", nargs="+", default=None, choices=BACKEND_NAMES, help="only these backends "
                                                                                      "(default: all)")
    p.add_argument("--samplers", nargs="+", default=None, help="only these samplers (default: all)")
    p.add_argument("--no-curves", action="store_true", help="skip the λ̂-against-nβ curves (default: drawn)")
    p.add_argument("--check", action="store_true", help="exit with status 1 if any row fails its check "
                                                        "(default: exit 0)")
    p.add_argument("--root", default=None, help="repository root holding validation/ (default: this checkout)")
    p.set_defaults(func=cmd_validate, outputs={"out": FOLDER})
    return p


def cmd_validate(a: argparse.Namespace) -> int:
    try:
        runner = load_validation_runner(a.root)
    except FileNotFoundError as exc:  # reported by pplpatterning.cli.main as a usage error (exit 2)
        raise ValueError(str(exc)) from None
    argv: list[str] = []
    if a.quick:
        argv.append("--quick")
    if a.seed is not None:
        argv += ["--seed", str(a.seed)]
    if a.out is not None:
        argv += ["--out", a.out]
    for flag, values in (("--cases", a.cases), ("--backends", a.backends), ("--samplers", a.samplers)):
        if values:
            argv += [flag, *values]
    if a.no_curves:
        argv.append("--no-curves")
    if a.check:
        argv.append("--check")
    return runner.main(argv)


def add_parsers(subparsers) -> None:
    """Register both commands (what ``pplpatterning.cli.main.build_parser`` calls)."""
    add_validate_parser(subparsers)
    add_calibrate_parser(subparsers)
