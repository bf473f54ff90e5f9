"""Command line: ``pplpatterning llc --model product --backend numpyro --sampler nuts``.

Every argument is checked before anything is compiled or sampled.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from typing import Any

from .samplers import SAMPLERS
from .sampling import BACKENDS

__all__ = ["main"]


def _model_arg(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--model-arg expects KEY=VALUE, got {text!r} (e.g. --model-arg d=3).")
    key, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return key.strip(), parsed


def _option(text: str) -> tuple[str, Any]:
    return _model_arg(text)


def _add_posterior_args(p: argparse.ArgumentParser) -> None:
    from pplpatterning.models import MODELS

    p.add_argument("--model", required=True, choices=sorted(MODELS), help="built-in model")
    p.add_argument("--model-arg", action="append", type=_model_arg, default=[], metavar="KEY=VALUE",
                   help="model factory argument, repeatable (e.g. --model-arg d=3)")
    p.add_argument("--n", type=int, default=1000, help="number of data points (default 1000)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data generator")
    p.add_argument("--n-beta", type=float, default=None, help="nβ (default n/log n, the WBIC temperature)")
    p.add_argument("--gamma", type=float, default=1.0, help="localization γ (default 1.0; 0 = none)")


def _add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="numpyro", choices=BACKENDS)
    p.add_argument("--sampler", default="nuts", choices=sorted(SAMPLERS))
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--draws", type=int, default=1000, help="kept draws per chain")
    p.add_argument("--burnin", type=int, default=500, help="burn-in steps per chain (never in the estimate)")
    p.add_argument("--step-size", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (SG samplers)")
    p.add_argument("--thinning", type=int, default=1)
    p.add_argument("--loss-estimate", default="full", choices=["full", "minibatch"])
    p.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                   help="sampler option, repeatable (e.g. --option target_accept=0.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _build_posterior(a: argparse.Namespace):
    from pplpatterning import GibbsPosterior
    from pplpatterning.models import get_model

    model = get_model(a.model, **dict(a.model_arg))
    if a.n < 2:
        raise ValueError(f"--n must be at least 2, got {a.n}.")
    data = model.generate(a.n, seed=a.data_seed)
    return GibbsPosterior(model, data, n_beta=a.n_beta, gamma=a.gamma)


def _target(post) -> float | None:
    fn = post.model.target_fn
    if fn is None:
        return None
    try:
        value = fn(post)
    except Exception:  # a target that cannot be computed is reported as unknown
        return None
    return None if value is None else float(value)


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "—" if x is None else format(x, spec)


def cmd_llc(a: argparse.Namespace) -> int:
    from pplpatterning import diagnose, sample, save_trace

    post = _build_posterior(a)
    t0 = time.perf_counter()
    trace = sample(
        post, backend=a.backend, sampler=a.sampler, num_chains=a.chains, num_draws=a.draws,
        num_burnin=a.burnin, step_size=a.step_size, batch_size=a.batch_size, thinning=a.thinning,
        loss_estimate=a.loss_estimate, seed=a.seed, progress_bar=not (a.no_progress or a.json),
        **dict(a.option),
    )
    wall = time.perf_counter() - t0
    diag = diagnose(trace)
    est = diag.estimate
    target = _target(post)
    result = {
        "model": post.model.name, "backend": a.backend, "sampler": a.sampler,
        "lambda_exact": post.model.lam, "multiplicity": post.model.multiplicity,
        "target_finite_nbeta": target, **est.to_dict(), "n": post.n, "n_beta_source": post.n_beta_source,
        "wall_seconds": wall, "findings": [vars(f) for f in diag.findings],
    }
    if a.save:
        result["saved_to"] = str(save_trace(trace, a.save))
    if a.json:
        print(json.dumps(result, indent=2, default=float))
        return 0
    lam = "—" if post.model.lam is None else f"{post.model.lam:g} (m={post.model.multiplicity})"
    rows = [
        ("model", f"{post.model.name}  (d={post.sampled_dim}, n={post.n})"),
        ("posterior", f"nβ={post.n_beta:.4g} [{post.n_beta_source}], γ={post.gamma:g}"),
        ("sampler", f"{a.backend}/{a.sampler}, {est.num_chains} chains × {est.num_draws} draws, "
                    f"burn-in {a.burnin}, loss: {est.loss_estimate}"),
        ("exact λ", lam),
        ("finite-nβ target", _fmt(target)),
        ("λ̂ ± MCSE", f"{est.llc:.4f} ± {est.mcse:.4f}"),
        ("per chain", ", ".join(f"{v:.3f}" for v in est.per_chain)),
        ("R-hat", f"{est.rhat:.3f}"),
        ("ESS bulk / tail", f"{est.ess_bulk:.0f} / {est.ess_tail:.0f}"),
        ("wall time", f"{wall:.2f} s"),
    ]
    if a.save:
        rows.append(("trace saved", result["saved_to"]))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print()
    print(diag)
    return 0


def _sampler_value(text: str) -> tuple[str, Any]:
    return _model_arg(text)


def cmd_compare(a: argparse.Namespace) -> int:
    from .comparison import compare
    from .plots import plot_comparison

    post = _build_posterior(a)
    opts: dict[str, dict[str, Any]] = {s: {} for s in a.samplers}
    for flag, items in (("step_size", a.step_size), ("batch_size", a.batch_size)):
        for sampler, value in items:
            if sampler not in opts:
                raise ValueError(f"--{flag.replace('_', '-')} names sampler {sampler!r}, which is not in --samplers.")
            opts[sampler][flag] = value
    for key, value in a.option:
        sampler, _, name = key.partition(".")
        if sampler not in opts or not name:
            raise ValueError(f"--option expects SAMPLER.KEY=VALUE with a sampler from --samplers, got {key!r}.")
        opts[sampler][name] = value
    table = compare(post, backends=a.backends, samplers=a.samplers, sampler_options=opts, num_chains=a.chains,
                    num_draws=a.draws, num_burnin=a.burnin, seed=a.seed, progress_bar=not (a.no_progress or a.json))
    if a.csv:
        table.to_csv(a.csv, index=False)
    if a.plot:
        plot_comparison(table, a.plot, title=f"{post.model.name}: nβ={post.n_beta:.4g}, γ={post.gamma:g}, n={post.n}")
    if a.json:
        print(table.to_json(orient="records", indent=2))
        return 0
    lam = "—" if post.model.lam is None else f"{post.model.lam:g} (m={post.model.multiplicity})"
    target = table["target"].iloc[0]
    print(f"{post.model.name}: n={post.n}, nβ={post.n_beta:.4g} [{post.n_beta_source}], γ={post.gamma:g}; "
          f"exact λ {lam}; finite-nβ target {_fmt(None if target != target else target)}")
    show = table.copy()
    show["λ̂ ± MCSE"] = [("error" if e else f"{m:.4f} ± {s:.4f}") for m, s, e in
                        zip(show["llc"], show["mcse"], show["error"])]
    cols = ["backend", "sampler", "λ̂ ± MCSE", "z", "rhat", "ess_bulk", "ess_per_s", "wall_s", "problems"]
    print(show[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="—"))
    for _, row in table[table["error"] != ""].iterrows():
        print(f"{row['backend']}/{row['sampler']} failed: {row['error']}", file=sys.stderr)
    for label, path in (("csv", a.csv), ("plot", a.plot)):
        if path:
            print(f"{label}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pplpatterning", description="SLT estimators on NumPyro and Pyro.")
    sub = p.add_subparsers(dest="command", required=True)
    p_llc = sub.add_parser("llc", help="estimate the local learning coefficient of a built-in model")
    _add_posterior_args(p_llc)
    _add_sampler_args(p_llc)
    p_llc.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p_llc.add_argument("--save", metavar="PATH", help="save the trace (netCDF .nc or .zarr)")
    p_llc.set_defaults(func=cmd_llc)

    p_cmp = sub.add_parser("compare", help="λ̂ of one posterior across backends × samplers")
    _add_posterior_args(p_cmp)
    p_cmp.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p_cmp.add_argument("--samplers", nargs="+", default=["nuts", "mala", "sgld"], choices=sorted(SAMPLERS))
    p_cmp.add_argument("--step-size", action="append", type=_sampler_value, default=[], metavar="SAMPLER=EPS",
                       help="step size per sampler, repeatable (e.g. --step-size sgld=1e-3)")
    p_cmp.add_argument("--batch-size", action="append", type=_sampler_value, default=[], metavar="SAMPLER=B")
    p_cmp.add_argument("--option", action="append", type=_option, default=[], metavar="SAMPLER.KEY=VALUE",
                       help="sampler option, repeatable (e.g. --option nuts.target_accept=0.95)")
    p_cmp.add_argument("--chains", type=int, default=4)
    p_cmp.add_argument("--draws", type=int, default=1000)
    p_cmp.add_argument("--burnin", type=int, default=500)
    p_cmp.add_argument("--seed", type=int, default=0)
    p_cmp.add_argument("--no-progress", action="store_true")
    p_cmp.add_argument("--json", action="store_true", help="print the table as JSON records")
    p_cmp.add_argument("--csv", metavar="PATH", help="write the table as CSV")
    p_cmp.add_argument("--plot", metavar="PATH", help="write a PNG of λ̂ ± 2 MCSE against the target")
    p_cmp.set_defaults(func=cmd_compare)

    from .cli_chi import add_chi_parser

    add_chi_parser(sub)
    from .cli_pattern import add_pattern_parser

    add_pattern_parser(sub)
    from .cli_validate import add_parsers
    add_parsers(sub)  # calibrate, validate
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return a.func(a)
    except BrokenPipeError:  # e.g. `pplpatterning llc ... --json | head`
        sys.stderr.close()
        return 0
    except (ValueError, TypeError, ImportError) as exc:
        print(f"pplpatterning {a.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
