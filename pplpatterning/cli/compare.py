"""``pplpatterning compare``: λ̂ of one posterior across backends × samplers.

    pplpatterning compare --model regular --samplers nuts mala sgld --step-size sgld=1e-3 \\
        --exclude pyro.nuts --csv table.csv --plot table.png --strict

One row per backend × sampler with its status (ok, check, OFF TARGET, INCOMPLETE,
FAILED); exits 3 when a run is incomplete and, with ``--strict``, 4 when any row is not
ok. The comparison workflow and the plots (pandas, matplotlib, the backends) are imported
inside :func:`cmd_compare`, so that building the parser stays light.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pplpatterning.cli.arguments import (
    BACKEND_NAMES, CSV_FORMAT, EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_OK, PLOT_FORMATS, add_command, add_posterior_args,
    add_strict_arg, build_posterior, key_value_arg,
)
from pplpatterning.cli.output import format_number
from pplpatterning.samplers.settings import SAMPLERS

__all__ = ["add_compare_parser", "cmd_compare", "pair_arg"]


def pair_arg(text: str) -> tuple[str, str]:
    """BACKEND.SAMPLER (for ``compare --exclude``), both names checked."""
    backend, _, sampler = text.partition(".")
    if backend not in BACKEND_NAMES or sampler not in SAMPLERS:
        raise argparse.ArgumentTypeError(
            f"expected BACKEND.SAMPLER with BACKEND in {list(BACKEND_NAMES)} and SAMPLER in {sorted(SAMPLERS)}, "
            f"got {text!r} (e.g. --exclude pyro.nuts).")
    return backend, sampler


def _compare_options(a: argparse.Namespace) -> dict[str, dict[str, Any]]:
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
    return opts


def _row_status(row) -> str:
    problems = set(str(row.get("problems") or "").split(",")) - {""}
    if row.get("error"):
        return "FAILED"
    if bool(row.get("incomplete", False)) or "incomplete" in problems:
        return "INCOMPLETE"
    if "off_target" in problems:
        return "OFF TARGET"
    return "check" if problems else "ok"


def _compare_records(table) -> list[dict[str, Any]]:
    records = json.loads(table.to_json(orient="records"))
    for r in records:
        r["findings"] = [c for c in str(r.get("problems") or "").split(",") if c]
        r["incomplete"] = bool(r.get("incomplete")) or "incomplete" in r["findings"]
        r.setdefault("incomplete_reason", None)
        r["status"] = _row_status(r)
    return records


def cmd_compare(a: argparse.Namespace) -> int:
    """Run every backend × sampler, write ``--csv`` / ``--plot``, print the table; return the exit code."""
    from pplpatterning.workflows.compare import compare
    from pplpatterning.plots import plot_comparison

    post = build_posterior(a)
    table = compare(post, backends=a.backends, samplers=a.samplers, sampler_options=_compare_options(a),
                    num_chains=a.chains, num_draws=a.draws, num_burnin=a.burnin, seed=a.seed,
                    progress_bar=not (a.no_progress or a.json), exclude=a.exclude)
    records = _compare_records(table)
    incomplete = any(r["incomplete"] for r in records)
    troubled = [r for r in records if r["status"] != "ok"]
    code = EXIT_INCOMPLETE if incomplete else (EXIT_FINDINGS if a.strict and troubled else EXIT_OK)
    if a.csv:
        table.to_csv(a.csv, index=False)
    if a.plot:
        plot_comparison(table, a.plot, title=f"{post.model.name}: nβ={post.n_beta:.4g}, γ={post.gamma:g}, n={post.n}")
    if a.json:
        print(json.dumps(records, indent=2))
        return code
    _print_table(a, post, table, records, troubled)
    return code


def _print_table(a: argparse.Namespace, post, table, records: list[dict[str, Any]],
                 troubled: list[dict[str, Any]]) -> None:
    lam = "—" if post.model.lam is None else f"{post.model.lam:g} (m={post.model.multiplicity})"
    target = table["target"].iloc[0]
    print(f"{post.model.name}: n={post.n}, nβ={post.n_beta:.4g} [{post.n_beta_source}], γ={post.gamma:g}; "
          f"exact λ {lam}; finite-nβ target {format_number(None if target != target else target)}")
    show = table.copy()
    show["status"] = [r["status"] for r in records]
    show["λ̂ ± MCSE"] = [("error" if e else f"{m:.4f} ± {s:.4f}") for m, s, e in
                        zip(show["llc"], show["mcse"], show["error"])]
    cols = ["status", "backend", "sampler", "λ̂ ± MCSE", "z", "rhat", "ess_bulk", "ess_per_s", "wall_s", "problems"]
    print(show[[c for c in cols if c in show]].to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="—"))
    for _, row in table[table["error"].fillna("") != ""].iterrows():
        print(f"{row['backend']}/{row['sampler']} failed: {row['error']}", file=sys.stderr)
    if troubled:
        names = ", ".join(f"{r['backend']}/{r['sampler']} ({r['status']})" for r in troubled)
        print(f"PROBLEMS in {len(troubled)} of {len(records)} runs: {names}; see the problems column "
              "(finding codes of diagnose()).")
    else:
        print("healthy: every run passed diagnose().")
    for label, path in (("csv", a.csv), ("plot", a.plot)):
        if path:
            print(f"{label}: {path}")


def add_compare_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``compare`` on the top-level parser's subparsers."""
    p = add_command(subparsers, "compare", help="λ̂ of one posterior across backends × samplers")
    add_posterior_args(p)
    p.add_argument("--backends", nargs="+", default=list(BACKEND_NAMES), choices=BACKEND_NAMES,
                   help="backends to run")
    p.add_argument("--samplers", nargs="+", default=["nuts", "mala", "sgld"], choices=sorted(SAMPLERS),
                   help="samplers to run on every backend")
    p.add_argument("--exclude", action="append", type=pair_arg, default=[], metavar="BACKEND.SAMPLER",
                   help="skip this backend × sampler pair, repeatable (e.g. --exclude pyro.nuts; default: none)")
    p.add_argument("--step-size", action="append", type=key_value_arg, default=[], metavar="SAMPLER=EPS",
                   help="step size per sampler, repeatable (e.g. --step-size sgld=1e-3; default: the sampler's)")
    p.add_argument("--batch-size", action="append", type=key_value_arg, default=[], metavar="SAMPLER=B",
                   help="minibatch size per SG sampler, repeatable (default min(n, 256))")
    p.add_argument("--option", action="append", type=key_value_arg, default=[], metavar="SAMPLER.KEY=VALUE",
                   help="sampler option, repeatable (e.g. --option nuts.target_accept=0.95; default: the "
                        "sampler's defaults)")
    p.add_argument("--chains", type=int, default=4, help="number of chains per run")
    p.add_argument("--draws", type=int, default=1000, help="kept draws per chain")
    p.add_argument("--burnin", type=int, default=500, help="burn-in steps per chain")
    p.add_argument("--seed", type=int, default=0, help="run seed")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars (default: shown)")
    add_strict_arg(p)
    p.add_argument("--json", action="store_true", help="print the table as JSON records (default: a table)")
    p.add_argument("--csv", metavar="PATH", help="write the table as CSV (default: not written)")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of λ̂ ± 2 MCSE against the target "
                                                  "(default: not drawn)")
    p.set_defaults(func=cmd_compare, outputs={"csv": CSV_FORMAT, "plot": PLOT_FORMATS})
    return p
