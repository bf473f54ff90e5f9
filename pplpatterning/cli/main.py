"""Command line: ``pplpatterning llc --model product --backend numpyro --sampler nuts``.

Every argument, output paths included, is checked before anything is compiled or sampled.

Exit codes (the same for every command):

====  ==========================================================================
0     healthy
1     unexpected error (a traceback)
2     bad usage or bad input: a one-line message on stderr, before any sampling
3     the run is incomplete (interrupted, stopped, evaluation failed); what was
      sampled is still saved when ``--save`` was given
4     the run completed but ``diagnose()`` reports an error or warning (stuck,
      diverged, off target, R-hat, ...); ``llc`` always, ``compare``, ``chi`` and
      ``pattern`` with ``--strict``
====  ==========================================================================

Every ``--json`` output carries ``incomplete``, ``incomplete_reason`` and ``findings``
(finding codes; see :func:`pplpatterning.diagnose`).

Module-level imports stay light (stdlib and pplpatterning's dependency-free modules) so that
``pplpatterning --help`` starts in well under a second: numpy, xarray, pandas, matplotlib,
JAX and torch are imported inside the command functions that need them. That is the
legitimate kind of function-level import, used throughout the cli modules.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pplpatterning.samplers.settings import SAMPLERS

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INCOMPLETE", "EXIT_FINDINGS"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_FINDINGS = 4

# The names of pplpatterning.sampling.core.BACKENDS, repeated here because importing
# pplpatterning.sampling.core loads xarray; tests/test_cli_trust.py checks that they agree.
BACKEND_NAMES = ("numpyro", "pyro")

# Output formats: suffix -> the package that writes it (None: always available).
TRACE_FORMATS = {".nc": "netCDF4", ".zarr": "zarr"}
CSV_FORMAT = {".csv": None}
PLOT_FORMATS = {".png": "matplotlib"}
FOLDER = None  # an output folder (created if missing) instead of a file


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to every flag's help unless the help already says its default.

    Switches get "(default: off)". Flags whose default is ``None`` or an empty repeatable
    list must explain it in their own words; tests/test_cli_trust.py checks that every flag
    has help and states its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if isinstance(action, argparse._StoreTrueAction) and "default" not in text.lower():
            return text + " (default: off)"
        d = action.default
        if "default" in text.lower() or action.required or d is None or d is False or d is argparse.SUPPRESS or d == []:
            return text
        return super()._get_help_string(action)


def add_command(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """``subparsers.add_parser`` with the project's help formatter."""
    return subparsers.add_parser(name, formatter_class=HelpFormatter, **kwargs)


# ----------------------------------------------------------------------- arguments
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


def _sampler_value(text: str) -> tuple[str, Any]:
    return _model_arg(text)


def _pair_arg(text: str) -> tuple[str, str]:
    """BACKEND.SAMPLER (for ``compare --exclude``), both names checked."""
    backend, _, sampler = text.partition(".")
    if backend not in BACKEND_NAMES or sampler not in SAMPLERS:
        raise argparse.ArgumentTypeError(
            f"expected BACKEND.SAMPLER with BACKEND in {list(BACKEND_NAMES)} and SAMPLER in {sorted(SAMPLERS)}, "
            f"got {text!r} (e.g. --exclude pyro.nuts).")
    return backend, sampler


def _model_name(text: str) -> str:
    """A built-in model name (checked here rather than by ``choices``, which argparse would list in
    ``--help`` by importing the zoo, and with it scipy: too slow for ``--help``)."""
    from pplpatterning.models import MODELS

    if text not in MODELS:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(sorted(MODELS))}; "
                                         "`pplpatterning models` describes them).")
    return text


def _add_posterior_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=_model_name, metavar="NAME",
                   help="built-in model (required; `pplpatterning models` lists them and their arguments)")
    p.add_argument("--model-arg", action="append", type=_model_arg, default=[], metavar="KEY=VALUE",
                   help="model factory argument, repeatable (e.g. --model-arg d=3; default: the factory's defaults, "
                        "see `pplpatterning models NAME`)")
    p.add_argument("--n", type=int, default=1000, help="number of data points")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data generator")
    p.add_argument("--n-beta", type=float, default=None, help="nβ (default n/log n, the WBIC temperature)")
    p.add_argument("--gamma", type=float, default=1.0, help="localization strength γ (0 = none)")


def _add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="numpyro", choices=BACKEND_NAMES, help="framework that runs the chains")
    p.add_argument("--sampler", default="nuts", choices=sorted(SAMPLERS), help="MCMC sampler")
    p.add_argument("--chains", type=int, default=4, help="number of chains")
    p.add_argument("--draws", type=int, default=1000, help="kept draws per chain")
    p.add_argument("--burnin", type=int, default=500, help="burn-in steps per chain (never in the estimate)")
    p.add_argument("--step-size", type=float, default=None,
                   help="step size ε (default: adapted for NUTS/HMC/MALA, 1e-4 for SG samplers)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size of SG samplers (default min(n, 256))")
    p.add_argument("--thinning", type=int, default=1, help="keep every K-th step")
    p.add_argument("--loss-estimate", default="full", choices=["full", "minibatch"],
                   help="per-draw loss: full-batch L_n, or the SG sampler's own minibatch estimate")
    p.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                   help="sampler option, repeatable (e.g. --option target_accept=0.9; default: the sampler's "
                        "defaults in pplpatterning.SAMPLERS)")
    p.add_argument("--seed", type=int, default=0, help="run seed (the same seed gives the same trace)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown unless --json)")


def add_strict_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true",
                   help="exit 4 when diagnose() reports an error or warning (default: report it, exit 0)")


# ---------------------------------------------------------------- output paths
def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def check_output_path(path: str, flag: str, formats: dict[str, str | None]) -> Path:
    """Refuse (ValueError naming ``flag``) a path that cannot be written in a supported format.

    Checks, before any sampling: the suffix is one of ``formats``, the package that writes
    it is installed, the path is not an existing folder (a ``.zarr`` store is one), its
    folder exists and is writable, and an existing file is writable.
    """
    p = Path(path)
    suffix = p.suffix
    if suffix not in formats:
        raise ValueError(f"{flag} {path!r}: use a file ending in {' or '.join(formats)}.")
    package = formats[suffix]
    if package is not None and not _installed(package):
        other = [s for s, pkg in formats.items() if pkg is None or _installed(pkg)]
        hint = f"use {' or '.join(other)}, or " if other else ""
        raise ValueError(f"{flag} {path!r}: writing {suffix} needs the {package!r} package, which is not installed; "
                         f"{hint}`pip install {package}`.")
    if p.is_dir() and suffix != ".zarr":
        raise ValueError(f"{flag} {path!r} is a folder; give a file name (e.g. {str(p / ('out' + suffix))!r}).")
    if p.exists() and not p.is_dir() and suffix == ".zarr":
        raise ValueError(f"{flag} {path!r} is a file; a .zarr store is a folder.")
    folder = p.parent
    if not folder.is_dir():
        raise ValueError(f"{flag} {path!r}: the folder {str(folder)!r} does not exist; create it first.")
    if not os.access(folder, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"{flag} {path!r}: not writable (check the permissions of {str(folder)!r}).")
    return p


def check_output_folder(path: str, flag: str) -> Path:
    """Refuse (ValueError naming ``flag``) a folder that is a file or cannot be created or written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {path!r} is a file; give a folder.")
    existing = next(q for q in (p, *p.resolve().parents) if q.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path!r}: cannot write into {str(existing)!r} (check its permissions).")
    return p


def check_outputs(a: argparse.Namespace) -> None:
    """Check every output path of the command (its ``outputs`` default: dest -> formats, or FOLDER)."""
    seen: dict[Path, str] = {}
    for dest, formats in getattr(a, "outputs", {}).items():
        path = getattr(a, dest, None)
        if not path:
            continue
        flag = "--" + dest.replace("_", "-")
        if formats is FOLDER:
            check_output_folder(path, flag)
            continue
        resolved = check_output_path(path, flag, formats).resolve()
        if resolved in seen:
            raise ValueError(f"{flag} and {seen[resolved]} name the same file {path!r}; give two different paths.")
        seen[resolved] = flag


# ---------------------------------------------------------------- run health
def trace_status(diag) -> dict[str, Any]:
    """The fields every --json output carries, from a :class:`~pplpatterning.Diagnosis`."""
    return {
        "incomplete": bool(diag.incomplete),
        "incomplete_reason": diag.incomplete_reason,
        "findings": [f.code for f in diag.findings],
        "diagnosis": diag.to_dict(),
    }


def runs_status(diags: dict[str, Any]) -> dict[str, Any]:
    """The --json fields of a command with several runs: any incomplete, the union of the codes, each run's own."""
    reasons = [f"{name}: {d.incomplete_reason}" for name, d in diags.items() if d.incomplete]
    codes = [f.code for d in diags.values() for f in d.findings]
    return {
        "incomplete": bool(reasons),
        "incomplete_reason": "; ".join(reasons) or None,
        "findings": sorted(set(codes), key=codes.index),
        "runs": {name: trace_status(d) for name, d in diags.items()},
    }


def exit_code(*diags, strict: bool = True) -> int:
    """3 when any run is incomplete, 4 (if ``strict``) on any error or warning finding, else 0."""
    if any(d.incomplete for d in diags):
        return EXIT_INCOMPLETE
    if strict and not all(d.ok for d in diags):
        return EXIT_FINDINGS
    return EXIT_OK


def status_lines(diag, *, strict: bool = True) -> list[str]:
    """Human summary: incompleteness first, then every finding; 'healthy' only when there is neither."""
    lines = []
    if diag.incomplete:
        lines.append(f"INCOMPLETE RUN (exit {EXIT_INCOMPLETE}): {diag.incomplete_reason}; the results use only "
                     "the draws that were made.")
    problems = [f for f in diag.findings if f.severity in ("error", "warning")]
    if problems:
        codes = ", ".join(f.code for f in problems)
        tail = f" (exit {EXIT_FINDINGS})" if strict and not diag.incomplete else ""
        lines.append(f"PROBLEMS FOUND{tail}: {codes}")
    lines.extend(f"  {f}" for f in diag.findings)
    if not lines:
        lines.append("healthy: diagnose() found no problems.")
    return lines


# ---------------------------------------------------------------- posterior
def _build_posterior(a: argparse.Namespace):
    from pplpatterning import GibbsPosterior
    from pplpatterning.models import get_model

    model = get_model(a.model, **dict(a.model_arg))
    if a.n < 2:
        raise ValueError(f"--n must be at least 2, got {a.n}.")
    data = model.generate(a.n, seed=a.data_seed)
    return GibbsPosterior(model, data, n_beta=a.n_beta, gamma=a.gamma)


def _target(post) -> float | None:
    from pplpatterning.workflows.compare import target_or_none  # lazy: keeps `--help` light

    return target_or_none(post)


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "—" if x is None or x != x else format(x, spec)


def _sample_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    return dict(backend=a.backend, sampler=a.sampler, num_chains=a.chains, num_draws=a.draws, num_burnin=a.burnin,
                step_size=a.step_size, batch_size=a.batch_size, thinning=a.thinning, loss_estimate=a.loss_estimate,
                seed=a.seed, progress_bar=not (a.no_progress or a.json), **dict(a.option))


# ------------------------------------------------------------------------ llc
def cmd_llc(a: argparse.Namespace) -> int:
    from pplpatterning.estimators.diagnose import diagnose
    from pplpatterning.sampling.core import sample
    from pplpatterning.trace.build import save_trace

    post = _build_posterior(a)
    target = _target(post)
    t0 = time.perf_counter()
    trace = sample(post, **_sample_kwargs(a))
    wall = time.perf_counter() - t0
    saved = str(save_trace(trace, a.save)) if a.save else None  # before anything that could fail
    diag = diagnose(trace, target=target)
    est = diag.estimate
    code = exit_code(diag)
    result = {
        "model": post.model.name, "backend": a.backend, "sampler": a.sampler,
        "lambda_exact": post.model.lam, "multiplicity": post.model.multiplicity,
        "target_finite_nbeta": target, "z": diag.z, **est.to_dict(), "n": post.n,
        "n_beta_source": post.n_beta_source, "wall_seconds": wall, **trace_status(diag), "exit_code": code,
    }
    if saved:
        result["saved_to"] = saved
    if a.json:
        print(json.dumps(result, indent=2, default=float))
        return code
    lam = "—" if post.model.lam is None else f"{post.model.lam:g} (m={post.model.multiplicity})"
    rows = [
        ("model", f"{post.model.name}  (d={post.sampled_dim}, n={post.n})"),
        ("posterior", f"nβ={post.n_beta:.4g} [{post.n_beta_source}], γ={post.gamma:g}"),
        ("sampler", f"{a.backend}/{a.sampler}, {est.num_chains} chains × {est.num_draws} draws, "
                    f"burn-in {a.burnin}, loss: {est.loss_estimate}"),
        ("exact λ", lam),
        ("finite-nβ target", _fmt(target)),
        ("λ̂ ± MCSE", f"{est.llc:.4f} ± {est.mcse:.4f}"),
        ("z vs target", _fmt(diag.z, "+.2f")),
        ("per chain", ", ".join(f"{v:.3f}" for v in est.per_chain)),
        ("R-hat", f"{est.rhat:.3f}"),
        ("ESS bulk / tail", f"{est.ess_bulk:.0f} / {est.ess_tail:.0f}"),
        ("wall time", f"{wall:.2f} s"),
    ]
    if saved:
        rows.append(("trace saved", saved))
    if diag.incomplete:
        print(status_lines(diag)[0])
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print()
    print("\n".join(status_lines(diag)))
    return code


# -------------------------------------------------------------------- compare
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
    from pplpatterning.workflows.compare import compare
    from pplpatterning.plots import plot_comparison

    post = _build_posterior(a)
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
    lam = "—" if post.model.lam is None else f"{post.model.lam:g} (m={post.model.multiplicity})"
    target = table["target"].iloc[0]
    print(f"{post.model.name}: n={post.n}, nβ={post.n_beta:.4g} [{post.n_beta_source}], γ={post.gamma:g}; "
          f"exact λ {lam}; finite-nβ target {_fmt(None if target != target else target)}")
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
    return code


# --------------------------------------------------------------------- models
def _zoo_table() -> dict[str, tuple[str, str]]:
    """{name: (factory arguments, λ formula)} from the table in pplpatterning.models' docstring."""
    import pplpatterning.models as zoo

    lines = (zoo.__doc__ or "").splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("=====")]
    if len(rules) < 3:
        return {}
    spans, start = [], 0
    for chunk in lines[rules[0]].split(" "):
        if chunk:
            spans.append((start, start + len(chunk)))
        start += len(chunk) + 1
    spans[-1] = (spans[-1][0], None)
    out = {}
    for line in lines[rules[1] + 1: rules[2]]:
        cells = [line[lo:hi].strip() for lo, hi in spans]
        if cells[0]:
            out[cells[0]] = (cells[1], cells[2])
    return out


def cmd_models(a: argparse.Namespace) -> int:
    import inspect

    from pplpatterning.models import MODELS

    table = _zoo_table()
    if not a.name:
        width = max(map(len, MODELS))
        lam_width = max(len(lam) for _, lam in table.values()) if table else 1
        print("Built-in models (`pplpatterning models NAME` shows one's arguments):\n")
        print(f"  {'name':<{width}}  {'exact λ at the default centre':<{lam_width}}  description")
        for name, factory in MODELS.items():
            lam = table.get(name, ("", "?"))[1]
            print(f"  {name:<{width}}  {lam:<{lam_width}}  {inspect.getdoc(factory).splitlines()[0]}")
        return EXIT_OK
    if a.name not in MODELS:
        raise ValueError(f"models: unknown model {a.name!r}; valid models are: {', '.join(MODELS)}.")
    factory = MODELS[a.name]
    print(f"{a.name}: {inspect.getdoc(factory)}")
    print()
    print("arguments (pass with --model-arg KEY=VALUE):")
    for p in inspect.signature(factory).parameters.values():
        default = "required" if p.default is inspect.Parameter.empty else f"default {p.default!r}"
        print(f"  {p.name:<12} {default}")
    if a.name in table:
        print(f"\nexact λ at the default centre: {table[a.name][1]}")
    model = factory()
    print(f"with the defaults: λ = {model.lam:g}, m = {model.multiplicity}; exact finite-nβ target: "
          f"{'yes' if model.target_fn is not None else 'none'}")
    return EXIT_OK


# --------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pplpatterning", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="SLT estimators (LLC, susceptibilities, patterning) on NumPyro and Pyro.",
        epilog="exit codes: 0 healthy, 1 unexpected error, 2 bad input (before any sampling), 3 incomplete run, "
               "4 diagnose() found problems (llc; others with --strict).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_llc = add_command(sub, "llc", help="estimate the local learning coefficient of a built-in model")
    _add_posterior_args(p_llc)
    _add_sampler_args(p_llc)
    p_llc.add_argument("--json", action="store_true", help="print machine-readable JSON (default: a table)")
    p_llc.add_argument("--save", metavar="PATH", help="save the trace (.nc, or .zarr with zarr installed; "
                                                      "default: not saved)")
    p_llc.set_defaults(func=cmd_llc, outputs={"save": TRACE_FORMATS})

    p_cmp = add_command(sub, "compare", help="λ̂ of one posterior across backends × samplers")
    _add_posterior_args(p_cmp)
    p_cmp.add_argument("--backends", nargs="+", default=list(BACKEND_NAMES), choices=BACKEND_NAMES,
                       help="backends to run")
    p_cmp.add_argument("--samplers", nargs="+", default=["nuts", "mala", "sgld"], choices=sorted(SAMPLERS),
                       help="samplers to run on every backend")
    p_cmp.add_argument("--exclude", action="append", type=_pair_arg, default=[], metavar="BACKEND.SAMPLER",
                       help="skip this backend × sampler pair, repeatable (e.g. --exclude pyro.nuts; default: none)")
    p_cmp.add_argument("--step-size", action="append", type=_sampler_value, default=[], metavar="SAMPLER=EPS",
                       help="step size per sampler, repeatable (e.g. --step-size sgld=1e-3; default: the sampler's)")
    p_cmp.add_argument("--batch-size", action="append", type=_sampler_value, default=[], metavar="SAMPLER=B",
                       help="minibatch size per SG sampler, repeatable (default min(n, 256))")
    p_cmp.add_argument("--option", action="append", type=_option, default=[], metavar="SAMPLER.KEY=VALUE",
                       help="sampler option, repeatable (e.g. --option nuts.target_accept=0.95; default: the "
                            "sampler's defaults)")
    p_cmp.add_argument("--chains", type=int, default=4, help="number of chains per run")
    p_cmp.add_argument("--draws", type=int, default=1000, help="kept draws per chain")
    p_cmp.add_argument("--burnin", type=int, default=500, help="burn-in steps per chain")
    p_cmp.add_argument("--seed", type=int, default=0, help="run seed")
    p_cmp.add_argument("--no-progress", action="store_true", help="hide the progress bars (default: shown)")
    add_strict_arg(p_cmp)
    p_cmp.add_argument("--json", action="store_true", help="print the table as JSON records (default: a table)")
    p_cmp.add_argument("--csv", metavar="PATH", help="write the table as CSV (default: not written)")
    p_cmp.add_argument("--plot", metavar="PATH", help="write a PNG of λ̂ ± 2 MCSE against the target "
                                                      "(default: not drawn)")
    p_cmp.set_defaults(func=cmd_compare, outputs={"csv": CSV_FORMAT, "plot": PLOT_FORMATS})

    p_mod = add_command(sub, "models", help="list the built-in models, or one model's arguments")
    p_mod.add_argument("name", nargs="?", default=None, metavar="NAME",
                       help="a model to describe (default: list every model)")
    p_mod.set_defaults(func=cmd_models)

    from pplpatterning.cli.chi import add_chi_parser
    from pplpatterning.cli.pattern import add_pattern_parser
    from pplpatterning.cli.validate import add_parsers

    add_chi_parser(sub)
    add_pattern_parser(sub)
    add_parsers(sub)  # calibrate, validate
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        check_outputs(a)  # before building the posterior or sampling
        return a.func(a)
    except BrokenPipeError:  # e.g. `pplpatterning llc ... --json | head`
        sys.stderr.close()
        return EXIT_OK
    except (ValueError, TypeError, ImportError) as exc:
        message = " ".join(str(exc).split())  # one line
        print(f"pplpatterning {a.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
