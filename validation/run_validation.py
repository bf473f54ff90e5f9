"""Validation: every zoo model × backend × sampler against the exact answers, as a report.

    make validate                   # full run (≤ 1 hour): validation/report.md, validation/figures/
    .venv/bin/python validation/run_validation.py --quick    # < 5 minutes: validation/out/quick/
                                    # (tests/test_validation_quick.py runs the same rows in-process)
    .venv/bin/python validation/run_validation.py --cases rrr dln --backends numpyro --check
    .venv/bin/pplpatterning validate --quick          # the same through the CLI

Each row samples one posterior (validation/settings.py: the model, its data, nβ, γ, and the
sampler settings, with the reasons for each number) and records λ̂ ± MCSE, R-hat, ESS, wall
time, the exact λ, the exact finite-nβ target E[λ̂] where known, z = (λ̂ - target)/MCSE,
the MALA acceptance of the SG samplers' ε (pplpatterning.workflows.acceptance), the check the row
must pass (settings.py), and ``problems``: the error/warning codes of
``diagnose(trace, target=target)`` (``off_target`` when |z| > 3, ``stuck_chain``,
``incomplete``, ``rhat``, ...), shown in the report's table and drawn red in its figure.
An incomplete run fails its check whatever the check. The report (validation/report.md)
states the date, seed and settings, and links the figures in validation/figures/: λ̂ against
the target for every row, and λ̂ against nβ with the exact target curve for a few models.

Reproducible from ``--seed``: each row's sampler seed is a fixed function of the seed and
the row's (case, backend, sampler); the data seeds are part of the settings.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pandas as pd

from pplpatterning import GibbsPosterior, diagnose, sample
from pplpatterning.models import get_model
from pplpatterning.models.null_targets import null_data, rrr_null_target, rrr_side_integral
from pplpatterning.samplers.settings import SG_SAMPLERS
from pplpatterning.workflows.acceptance import mala_acceptance
from pplpatterning.workflows.compare import finite_target

HERE = Path(__file__).resolve().parent


def load_sibling(stem: str) -> ModuleType:
    """validation/<stem>.py, imported under a private name (``_pplpatterning_validation_<stem>``), so that
    no generic module name (``settings``, ``report``) is put on sys.path; loaded once per process."""
    name = f"_pplpatterning_validation_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


S = load_sibling("settings")
R = load_sibling("report")

__all__ = ["null_data", "rrr_null_target", "rrr_side_integral", "build_posterior", "reference_target", "plan",
           "run_row", "run_rows", "run_curves", "judge_row", "check_rows", "write_report", "run_validation", "main",
           "load_sibling", "ROW_COLUMNS"]

ROW_COLUMNS = ["case", "model", "backend", "sampler", "lambda_exact", "multiplicity", "target", "target_source",
               "n_beta", "gamma", "llc", "mcse", "z", "ratio_lambda", "rhat", "ess_bulk", "ess_tail", "mala_acceptance",
               "wall_s", "settings", "check", "passed", "failure", "incomplete", "problems", "notes", "error"]


# ------------------------------------------------------------- posteriors and targets
def build_posterior(case: S.Case) -> GibbsPosterior:
    """The case's GibbsPosterior (model, data, nβ, γ as in settings.py)."""
    model = get_model(case.model, **dict(case.model_args))
    if case.data == "generated":
        data = model.generate(case.n, seed=case.data_seed)
    elif case.data == "null":
        data = null_data(model, case.n, case.data_seed, whiten=case.model in ("rrr", "dln", "product", "normal_crossing"))
    else:
        raise ValueError(f"Case {case.label()}: unknown data kind {case.data!r} (use 'generated' or 'null').")
    return GibbsPosterior(model, data, n_beta=case.n_beta, gamma=case.gamma)


def reference_target(case: S.Case, post: GibbsPosterior) -> tuple[float | None, str]:
    """(E[λ̂], source): the model's target_fn, else the validation's own exact reference."""
    value = finite_target(post)
    if value is not None:
        return value, "target_fn"
    if case.model == "rrr" and case.data == "null" and int(case.model_args.get("r", 1)) == 0:
        a = case.model_args
        value = rrr_null_target(int(a["M"]), int(a["N"]), int(a["H"]), post.n_beta, post.gamma)
        if value is not None:
            return value, "singular-value quadrature"
    return None, ""


# ------------------------------------------------------------------------- plan
def run_settings(case: str, backend: str, sampler: str) -> S.Run:
    """The documented settings of one row (pyro overrides first)."""
    if backend == "pyro" and (case, sampler) in S.PYRO_RUNS:
        return S.PYRO_RUNS[(case, sampler)]
    try:
        return S.RUNS[case][sampler]
    except KeyError:
        raise ValueError(f"validation/settings.py has no settings for case {case!r}, sampler {sampler!r}.") from None


def plan(mode: str, cases=None, backends=None, samplers=None) -> list[tuple[str, str, str]]:
    """The (case, backend, sampler) rows of ``mode`` ("quick" or "full"), optionally filtered."""
    if mode not in ("quick", "full"):
        raise ValueError(f"`mode` must be 'quick' or 'full', got {mode!r}.")
    table = S.QUICK if mode == "quick" else S.FULL
    for what, given, valid in (("cases", cases, list(S.CASES)), ("backends", backends, ["numpyro", "pyro"]),
                               ("samplers", samplers, list(S.SAMPLER_ORDER))):
        unknown = sorted(set(given or []) - set(valid))
        if unknown:
            raise ValueError(f"`{what}` has unknown entries {unknown}; valid: {valid}.")
    rows = []
    for case, per_backend in table.items():
        if cases and case not in cases:
            continue
        for backend, names in per_backend.items():
            if backends and backend not in backends:
                continue
            rows += [(case, backend, s) for s in names if not samplers or s in samplers]
    for case, backend, sampler in rows:  # every row must have settings before anything runs
        run_settings(case, backend, sampler)
    return rows


def row_seed(seed: int, *parts: str) -> int:
    """A fixed seed per row: crc32 of the row's name mixed with the run seed."""
    return int((zlib.crc32("/".join(parts).encode()) + 1_000_003 * int(seed)) % (2**31 - 1))


# ---------------------------------------------------------------------- running
def judge_row(row: dict[str, Any], check: str) -> tuple[bool, str]:
    """(passed, failure): whether a row passes its documented check (settings.py) and R-hat ≤ R_HAT_MAX, and why not."""
    if row.get("error"):
        return False, "run failed"
    fails = []
    if row.get("incomplete"):
        fails.append("run incomplete")
    if not (np.isfinite(row["rhat"]) and row["rhat"] <= S.R_HAT_MAX):
        fails.append(f"R-hat {row['rhat']:.3f} > {S.R_HAT_MAX}")
    if check == "target":
        z = row.get("z")
        if z is None or not np.isfinite(z) or abs(z) > S.Z_MAX:
            fails.append(f"|z| = {abs(z):.1f} > {S.Z_MAX:g}" if z is not None and np.isfinite(z) else "no target")
    elif check == "lambda15":
        r = row.get("ratio_lambda")
        if r is None or not np.isfinite(r) or abs(r - 1) > S.LAMBDA_TOLERANCE:
            fails.append(f"λ̂/λ = {r:.3f} outside 1 ± {S.LAMBDA_TOLERANCE:g}")
    return not fails, "; ".join(fails)


def run_row(case_name: str, backend: str, sampler: str, seed: int, *, posterior: GibbsPosterior | None = None,
            target: tuple[float | None, str] | None = None) -> dict[str, Any]:
    """Sample one (case, backend, sampler) row at its documented settings and judge it."""
    case = S.CASES[case_name]
    run = run_settings(case_name, backend, sampler)
    post = posterior if posterior is not None else build_posterior(case)
    tgt, source = target if target is not None else reference_target(case, post)
    model = post.model
    row: dict[str, Any] = dict(case=case_name, model=case.label(), backend=backend, sampler=sampler,
                               lambda_exact=model.lam, multiplicity=model.multiplicity, target=tgt,
                               target_source=source, n_beta=post.n_beta, gamma=post.gamma, settings=run.describe(),
                               check=case.check, incomplete=False, problems="", notes="", error="")
    t0 = time.perf_counter()
    try:
        tr = sample(post, backend=backend, sampler=sampler, seed=row_seed(seed, case_name, backend, sampler),
                    progress_bar=False, keep_params=sampler in SG_SAMPLERS, **run.kwargs())
    except Exception as exc:  # keep the row, report the failure
        row.update(wall_s=time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}", passed=False,
                   failure="run failed")
        return row
    wall = time.perf_counter() - t0
    diag = diagnose(tr, target=tgt)
    est = diag.estimate
    problems = list(dict.fromkeys(diag.problem_codes()))
    row.update(llc=est.llc, mcse=est.mcse, z=diag.z, rhat=est.rhat, ess_bulk=est.ess_bulk, ess_tail=est.ess_tail,
               wall_s=wall, incomplete=diag.incomplete,
               notes=f"incomplete: {diag.incomplete_reason}" if diag.incomplete else "")
    if model.lam:
        row["ratio_lambda"] = est.llc / model.lam
    if sampler in SG_SAMPLERS and not diag.incomplete:
        try:
            row["mala_acceptance"] = mala_acceptance(post, tr, num_points=32, seed=seed).mean
        except Exception as exc:  # a diagnostic, not the estimate: record and carry on
            problems.append("mala_acceptance_failed")
            row["notes"] = "; ".join(filter(None, [row["notes"], f"MALA acceptance failed: {type(exc).__name__}: {exc}"]))
    row["problems"] = ",".join(problems)
    row["passed"], row["failure"] = judge_row(row, case.check)
    return row


def run_rows(mode: str = "quick", seed: int = S.SEED, *, cases=None, backends=None, samplers=None,
             log: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Run every row of ``mode`` and return the table (one row per case × backend × sampler)."""
    rows_plan = plan(mode, cases, backends, samplers)
    posts: dict[str, tuple[GibbsPosterior, tuple[float | None, str]]] = {}
    rows = []
    for i, (case, backend, sampler) in enumerate(rows_plan, 1):
        if case not in posts:
            post = build_posterior(S.CASES[case])
            posts[case] = (post, reference_target(S.CASES[case], post))
        post, tgt = posts[case]
        row = run_row(case, backend, sampler, seed, posterior=post, target=tgt)
        rows.append(row)
        if log:
            lam = "" if row.get("llc") is None else f"λ̂ = {row['llc']:.4f} ± {row['mcse']:.4f}"
            status = "ok" if row["passed"] else f"FAIL ({row['failure']})"
            log(f"[{i}/{len(rows_plan)}] {case} {backend}/{sampler}: {lam} R-hat {row.get('rhat', math.nan):.4f} "
                f"{row['wall_s']:.1f}s {status} {row['error']}")
    return pd.DataFrame(rows).reindex(columns=ROW_COLUMNS)


def run_curves(mode: str = "quick", seed: int = S.SEED, *, log: Callable[[str], None] | None = print,
               dense: int = 25) -> pd.DataFrame:
    """λ̂ against nβ for the curve cases: estimates (kind "estimate") and exact targets ("target")."""
    rows = []
    for curve in (S.QUICK_CURVES if mode == "quick" else S.CURVES):
        case = S.CASES[curve.case]
        base = build_posterior(case)
        lam = base.model.lam
        grid = np.geomspace(min(curve.n_betas) / 2, max(curve.n_betas) * 2, dense)
        for nb in grid:
            value, source = reference_target(case, base.with_(n_beta=float(nb)))
            if value is not None:
                rows.append(dict(case=curve.case, model=case.label(), kind="target", n_beta=nb, value=value,
                                 mcse=math.nan, lambda_exact=lam, source=source))
        for nb in curve.n_betas:
            post = base.with_(n_beta=float(nb))
            t0 = time.perf_counter()
            tr = sample(post, backend=curve.backend, sampler=curve.sampler, keep_params=False, progress_bar=False,
                        seed=row_seed(seed, "curve", curve.case, str(nb)), **curve.run.kwargs())
            diag = diagnose(tr, target=reference_target(case, post)[0])
            est = diag.estimate
            rows.append(dict(case=curve.case, model=case.label(), kind="estimate", n_beta=nb, value=est.llc,
                             mcse=est.mcse, z=diag.z, rhat=est.rhat, lambda_exact=lam,
                             source=f"{curve.backend}/{curve.sampler}", problems=",".join(diag.problem_codes()),
                             wall_s=time.perf_counter() - t0))
            if log:
                log(f"curve {curve.case} nβ={nb:g}: λ̂ = {est.llc:.4f} ± {est.mcse:.4f} R-hat {est.rhat:.4f} "
                    f"({time.perf_counter() - t0:.1f}s)")
    return pd.DataFrame(rows)


def check_rows(table: pd.DataFrame) -> list[str]:
    """One message per row that fails its check (empty when every row passes)."""
    bad = table[~table["passed"].astype(bool)]
    return [f"{r.case} {r.backend}/{r.sampler}: {r.failure} {r.error}".strip() for r in bad.itertuples()]


# ----------------------------------------------------------------------- report
def write_report(table: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path, *, mode: str, seed: int,
                 wall_s: float) -> Path:
    """Write ``report.md`` and the figures (``figures/*.png``) into ``out_dir`` (validation/report.py)."""
    return R.write_report(table, curves, out_dir, settings=S, mode=mode, seed=seed, wall_s=wall_s)


def run_validation(mode: str = "quick", seed: int = S.SEED, out_dir: str | Path | None = None, *, cases=None,
                   backends=None, samplers=None, curves: bool = True, log: Callable[[str], None] | None = print):
    """Run the rows (and curves), write the report; returns (table, curves, report path or None)."""
    t0 = time.perf_counter()
    table = run_rows(mode, seed, cases=cases, backends=backends, samplers=samplers, log=log)
    curve_table = run_curves(mode, seed, log=log) if curves else pd.DataFrame()
    path = None
    if out_dir is not None:
        path = write_report(table, curve_table, out_dir, mode=mode, seed=seed, wall_s=time.perf_counter() - t0)
    return table, curve_table, path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_validation", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the CI subset (< 5 minutes)")
    p.add_argument("--seed", type=int, default=S.SEED, help=f"run seed (default {S.SEED})")
    p.add_argument("--out", default=None,
                   help="directory for report.md and figures/ (default: validation/ for the full run, "
                        "validation/out/quick/ for --quick, so a quick run never overwrites the full report)")
    p.add_argument("--cases", nargs="+", choices=list(S.CASES), help="only these cases")
    p.add_argument("--backends", nargs="+", choices=["numpyro", "pyro"], help="only these backends")
    p.add_argument("--samplers", nargs="+", choices=list(S.SAMPLER_ORDER), help="only these samplers")
    p.add_argument("--no-curves", action="store_true", help="skip the λ̂-against-nβ curves")
    p.add_argument("--check", action="store_true", help="exit with status 1 if any row fails its check")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    mode = "quick" if a.quick else "full"
    plan(mode, a.cases, a.backends, a.samplers)  # argument errors before any sampling
    out = a.out if a.out is not None else (HERE / "out" / "quick" if a.quick else HERE)
    table, _, path = run_validation(mode, a.seed, out, cases=a.cases, backends=a.backends, samplers=a.samplers,
                                    curves=not a.no_curves)
    failures = check_rows(table)
    print(f"report: {path}")
    for f in failures:
        print(f"FAIL {f}")
    return 1 if (a.check and failures) else 0


if __name__ == "__main__":
    raise SystemExit(main())
