"""The validation report: validation/report.md and its figures, from the table of rows.

:func:`write_report` writes ``report.md`` (date, seed, settings, the cases, every row with
its check and diagnose() findings, the failing and flagged rows, the λ̂-against-nβ curves)
and the figures ``figures/llc_vs_target.png`` and ``figures/nbeta_curves.png``
(:func:`plot_target_ratios`, :func:`plot_nbeta_curves`, drawn with the helpers of
:mod:`pplpatterning.plots`, called through that module; matplotlib's ``Line2D`` is imported
where it is drawn, as there). The
settings module (validation/settings.py) is passed in by the runner, which loads it
(validation/run_validation.py); this module loads nothing itself.
"""

from __future__ import annotations

import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from pplpatterning.estimators.diagnose import OFF_TARGET_Z
from pplpatterning.models import MODELS
import pplpatterning.plots as plots

__all__ = ["write_report", "fmt", "markdown_table", "plot_target_ratios", "plot_nbeta_curves"]


def fmt(v: Any, spec: str = ".4f") -> str:
    """``format(v, spec)``, or "—" for None and non-finite floats."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return format(v, spec)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table of string cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _header(table: pd.DataFrame, S: ModuleType, *, mode: str, seed: int, wall_s: float) -> list[str]:
    """Title, date, machine, counts, how to reproduce, and what the checks mean."""
    now = datetime.now(timezone.utc)
    n_fail = int((~table["passed"].astype(bool)).sum())
    n_find = int((table["problems"].fillna("") != "").sum())
    return [
        f"# pplpatterning validation report ({mode})",
        "",
        f"- Date: {now:%Y-%m-%d %H:%M} UTC; seed {seed}; wall time {wall_s / 60:.1f} min on "
        f"{platform.machine()} ({os.cpu_count() or 1} cores), Python {platform.python_version()}.",
        f"- Rows: {len(table)}; failing their check: {n_fail}; with a diagnose() finding: {n_find}.",
        f"- Reproduce: `.venv/bin/python validation/run_validation.py {'--quick ' if mode == 'quick' else ''}"
        f"--seed {seed}` (settings: validation/settings.py).",
        "",
        "Checks (validation/settings.py): **target** = |λ̂ - E[λ̂]| ≤ 4 MCSE against the exact finite-nβ target; "
        f"**lambda15** = |λ̂/λ - 1| ≤ {S.LAMBDA_TOLERANCE:g}; **report** = no assertion. Every row must also have "
        f"R-hat ≤ {S.R_HAT_MAX}. z = (λ̂ - target)/MCSE. MALA acc. = acceptance of the SG sampler's ε at its draws "
        "(pplpatterning.workflows.acceptance). Findings = diagnose(trace, target=target)'s error and warning codes "
        f"(off_target: |z| > {OFF_TARGET_Z:g}; see pplpatterning.estimators.diagnose); rows with a finding are red in the "
        "figure and marked ⚠ in the table.",
        "",
        "## Cases",
        "",
    ]


def _cases_table(table: pd.DataFrame, S: ModuleType) -> str:
    """One line per case of the run: model, n, nβ, γ, data, check and why."""
    case_rows = []
    for name in dict.fromkeys(table["case"]):
        c = S.CASES[name]
        sub = table[table["case"] == name].iloc[0]
        case_rows.append([name, c.label(), f"{c.n}", fmt(sub["n_beta"], ".4g"), f"{c.gamma:g}", c.data, c.check,
                          c.why])
    return markdown_table(["case", "model", "n", "nβ", "γ", "data", "check", "why"], case_rows)


def _results_table(table: pd.DataFrame) -> str:
    """One line per row: λ, target, λ̂ ± MCSE, z, λ̂/λ, R-hat, ESS, MALA acceptance, time, status."""
    res_rows = []
    for r in table.itertuples():
        lam = fmt(r.lambda_exact, ".4g") + ("" if pd.isna(r.multiplicity) else f" (m={int(r.multiplicity)})")
        tgt = fmt(r.target) + (" †" if r.target_source and r.target_source != "target_fn" else "")
        est = "error" if r.error else f"{r.llc:.4f} ± {r.mcse:.4f}"
        status = "✓" if r.passed else f"✗ {r.failure}"
        findings = f"⚠ {r.problems}" if isinstance(r.problems, str) and r.problems else ""
        res_rows.append([r.case, r.backend, r.sampler, lam, tgt, est, fmt(r.z, "+.2f"), fmt(r.ratio_lambda, ".3f"),
                         fmt(r.rhat), fmt(r.ess_bulk, ".0f"), fmt(r.mala_acceptance, ".3f"), fmt(r.wall_s, ".1f"),
                         r.check, status, findings, r.settings])
    return markdown_table(
        ["case", "backend", "sampler", "λ", "target", "λ̂ ± MCSE", "z", "λ̂/λ", "R-hat", "ESS", "MALA acc.",
         "time (s)", "check", "status", "findings", "settings"], res_rows)


def _notes(table: pd.DataFrame, S: ModuleType) -> list[str]:
    """The footnote on reference targets, failing and flagged rows, missing zoo models, errors."""
    lines: list[str] = []
    if (table["target_source"].fillna("") == "singular-value quadrature").any():
        lines += ["", "† exact E[λ̂] by singular-value quadrature "
                      "(pplpatterning.models.null_targets.rrr_null_target), not a model target_fn."]
    failing = table[~table["passed"].astype(bool)]
    if len(failing):
        lines += ["", "### Rows failing their check", ""]
        lines += [f"- {r.case} {r.backend}/{r.sampler}: {r.failure}" + (f" ({r.problems})" if r.problems else "")
                  for r in failing.itertuples()]
    flagged = table[(table["problems"].fillna("") != "") & table["passed"].astype(bool)]
    if len(flagged):
        lines += ["", "### Rows passing their check with a diagnose() finding", ""]
        lines += [f"- {r.case} {r.backend}/{r.sampler}: {r.problems}"
                  + (f" — {r.notes}" if isinstance(r.notes, str) and r.notes else "") for r in flagged.itertuples()]
    missing = sorted(set(MODELS) - {S.CASES[c].model for c in table["case"]})
    if missing:
        lines += ["", f"Zoo models without a row in this run: {', '.join(missing)}."]
    errors = table[table["error"].fillna("") != ""]
    if len(errors):
        lines += ["", "### Errors", ""] + [f"- {r.case} {r.backend}/{r.sampler}: {r.error}" for r in errors.itertuples()]
    return lines


def _curves_section(curves: pd.DataFrame, figure: Path) -> list[str]:
    """λ̂ against nβ: the figure and a table of the estimates."""
    lines = ["", "## λ̂ against nβ", "",
             "Exact finite-nβ target curves (lines), estimates ± 2 MCSE (points) and the exact λ (dashed). "
             "Null data (validation/settings.py) remove the data term, so the curves show the approach to λ "
             "itself: fast for m = 1, ~(m-1)/log nβ for m = 2.", "", f"![λ̂ against nβ](figures/{figure.name})",
             ""]
    est = curves[curves["kind"] == "estimate"]
    lines.append(markdown_table(
        ["case", "nβ", "λ̂ ± MCSE", "z", "R-hat", "sampler", "findings"],
        [[r.case, fmt(r.n_beta, "g"), f"{r.value:.4f} ± {r.mcse:.4f}", fmt(getattr(r, "z", None), "+.2f"),
          fmt(r.rhat), r.source, f"⚠ {r.problems}" if isinstance(getattr(r, "problems", ""), str)
          and getattr(r, "problems", "") else ""]
         for r in est.itertuples()]))
    return lines


def write_report(table: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path, *, settings: ModuleType,
                 mode: str, seed: int, wall_s: float) -> Path:
    """Write ``report.md`` and the figures (``figures/*.png``) into ``out_dir``; returns the report's path.

    ``settings`` is the loaded validation/settings.py (its cases, tolerances and docstring).
    """
    out = Path(out_dir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    fig_ratio = plot_target_ratios(table, figs / "llc_vs_target.png",
                                   title=f"λ̂ ± 2 MCSE per row; solid = exact finite-nβ target, dashed = λ ({mode} run, seed {seed})")
    fig_curves = plot_nbeta_curves(curves, figs / "nbeta_curves.png") if len(curves) else None

    lines = _header(table, settings, mode=mode, seed=seed, wall_s=wall_s)
    lines.append(_cases_table(table, settings))
    lines += ["", "## Results", "", f"![λ̂ per row](figures/{fig_ratio.name})", ""]
    lines.append(_results_table(table))
    lines += _notes(table, settings)
    if fig_curves is not None:
        lines += _curves_section(curves, fig_curves)
    doc = Path(settings.__file__).read_text().split('"""')[1].strip()
    lines += ["", "## Settings", "", "```", doc, "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def plot_target_ratios(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Every row of a validation table as λ̂ ± 2 MCSE, one panel per case .

    Rows are (backend, sampler), numpyro blue and pyro orange; rows with a diagnose()
    finding (``problems``: off_target for |z| > 3, stuck_chain, incomplete, ...) are red with
    red tick labels, rows failing their check are crosses. The solid line is the exact
    finite-nβ target (``target``) where known, the dashed line the exact λ; cases checked
    against λ (``check == "lambda15"``) shade λ ± 15 %. Failed runs are left out.
    """
    from matplotlib.lines import Line2D

    ok = table[table["error"].fillna("") == ""]
    cases = list(dict.fromkeys(ok["case"]))
    ncol = min(3, max(len(cases), 1))
    nrow = max(1, -(-len(cases) // ncol))
    per_panel = max([int((ok["case"] == c).sum()) for c in cases] or [1])
    fig = plots.new_figure((4.2 * ncol, (0.9 + 0.22 * per_panel) * nrow + 0.4))
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    for ax, case in zip(axes, cases):
        sub = ok[ok["case"] == case]
        y = np.arange(len(sub))
        probs = plots.problem_codes(sub)
        for yi, r, p in zip(y, sub.itertuples(), probs):
            c = plots.FINDING_COLOR if p else ("tab:blue" if r.backend == "numpyro" else "tab:orange")
            se = float(r.mcse) if np.isfinite(float(r.mcse)) else 0.0
            ax.errorbar(r.llc, yi, xerr=2 * se, fmt="o" if r.passed else "x", color=c, capsize=2, ms=4)
        first = sub.iloc[0]
        if pd.notna(first["target"]):
            ax.axvline(float(first["target"]), color="k", lw=1.2)
        lam = first["lambda_exact"]
        if pd.notna(lam):
            ax.axvline(float(lam), color="gray", ls="--", lw=1)
            if first.get("check") == "lambda15":
                ax.axvspan(0.85 * lam, 1.15 * lam, color="gray", alpha=0.12, lw=0)
        ax.set_yticks(y, [f"{'np' if b == 'numpyro' else 'pyro'}/{s}" for b, s in zip(sub["backend"], sub["sampler"])],
                      fontsize=7)
        for tick, p in zip(ax.get_yticklabels(), probs):
            if p:
                tick.set_color(plots.FINDING_COLOR)
        ax.invert_yaxis()
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{first['model']}\nnβ={first['n_beta']:.4g}, γ={first['gamma']:g}", fontsize=8)
    for ax in axes[len(cases):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=plots.FINDING_COLOR, marker="o", ls="", label="finding (problems column)"),
               Line2D([], [], color="0.4", marker="x", ls="", label="failed its check")]
    fig.legend(handles=handles, loc="lower right", fontsize=8)
    fig.suptitle(title or "λ̂ ± 2 MCSE: solid = exact finite-nβ target, dashed = λ (× = failed its check, "
                          "red = diagnose() finding)", fontsize=9)
    return plots.save_figure(fig, path)


def plot_nbeta_curves(curves: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """λ̂ against nβ per case: exact target curve, estimates ± 2 MCSE, and the exact λ (log x-axis).

    ``curves`` has columns case, model, kind ("target" or "estimate"), n_beta, value, mcse,
    lambda_exact (as written by validation/run_validation.run_curves).
    """
    cases = list(dict.fromkeys(curves["case"]))
    ncol = min(2, max(len(cases), 1))
    nrow = max(1, -(-len(cases) // ncol))
    fig = plots.new_figure((5 * ncol, 3.4 * nrow))
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    for ax, case in zip(axes, cases):
        sub = curves[curves["case"] == case]
        tgt = sub[sub["kind"] == "target"].sort_values("n_beta")
        est = sub[sub["kind"] == "estimate"].sort_values("n_beta")
        if len(tgt):
            ax.plot(tgt["n_beta"], tgt["value"], color="k", lw=1.3, label="exact finite-nβ E[λ̂]")
        if len(est):
            ax.errorbar(est["n_beta"], est["value"], yerr=2 * est["mcse"], fmt="o", color="tab:blue", capsize=3,
                        label="λ̂ ± 2 MCSE")
        lam = sub["lambda_exact"].dropna()
        if len(lam):
            ax.axhline(float(lam.iloc[0]), color="gray", ls="--", lw=1, label=f"λ = {float(lam.iloc[0]):.4g}")
        ax.set_xscale("log")
        ax.set_xlabel("nβ")
        ax.set_ylabel("λ̂")
        ax.set_title(str(sub["model"].iloc[0]), fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes[len(cases):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)
