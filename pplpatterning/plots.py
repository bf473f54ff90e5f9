"""Plots people would rather look at than read: PNG files drawn on matplotlib's Agg canvas
(``Figure`` + ``FigureCanvasAgg``), so the user's global matplotlib backend is never switched.

matplotlib's drawing modules are imported inside the functions that draw, not with this
module: ``matplotlib.figure`` and what it pulls in take about half a second to import, which
a process that imports this module without drawing (a command whose plot was not asked
for) should not pay.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "plot_comparison", "plot_principal_directions", "new_figure", "save_figure", "plot_calibration",
    "plot_posterior_shift", "plot_linear_response", "problem_codes", "FINDING_COLOR",
]


def new_figure(figsize):
    """A matplotlib Figure attached to an Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Lay out ``fig`` tightly and write it to ``path`` (format from the suffix); returns the path."""
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


#: Colour of rows with a diagnose() finding (off target, stuck, incomplete, R-hat, ...).
FINDING_COLOR = "tab:red"


def problem_codes(table: pd.DataFrame) -> list[str]:
    """Each row's problem codes ("" when healthy), with ``incomplete`` added when flagged."""
    probs = table["problems"] if "problems" in table else [""] * len(table)
    incomplete = table["incomplete"] if "incomplete" in table else [False] * len(table)
    out = []
    for p, inc in zip(probs, incomplete):
        codes = [c for c in p.split(",") if c] if isinstance(p, str) else []
        if inc is True or (isinstance(inc, (int, float, np.bool_)) and not pd.isna(inc) and bool(inc)):
            if "incomplete" not in codes:
                codes.insert(0, "incomplete")
        out.append(",".join(codes))
    return out


def plot_comparison(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """λ̂ ± 2 MCSE per (backend, sampler) row, with the finite-nβ target and the exact λ.

    Healthy rows are blue (numpyro) or orange (pyro); rows with a diagnose() finding (the
    ``problems`` column: off_target, stuck_chain, incomplete, rhat, ...) are drawn red with
    their codes written next to them, and the legend says "finding".
    """
    ok = table[table["error"].fillna("") == ""]
    problems = problem_codes(ok)
    labels = [f"{b} / {s}" for b, s in zip(ok["backend"], ok["sampler"])]
    y = np.arange(len(ok))
    fig = new_figure((7.5, 1.2 + 0.45 * max(len(ok), 1)))
    ax = fig.subplots()
    flagged = False
    for yi, (m, se, b, probs) in enumerate(zip(ok["llc"], ok["mcse"], ok["backend"], problems)):
        c = FINDING_COLOR if probs else ("tab:blue" if b == "numpyro" else "tab:orange")
        se = float(se) if np.isfinite(float(se)) else 0.0
        ax.errorbar(m, yi, xerr=2 * se, fmt="s" if probs else "o", color=c, capsize=3,
                    label="finding (problems column)" if probs and not flagged else None)
        if probs:
            flagged = True
            ax.annotate(probs, (m, yi), xytext=(6, 5), textcoords="offset points", fontsize=7, color=c)
    target = table["target"].dropna()
    if len(target):
        ax.axvline(float(target.iloc[0]), color="k", lw=1.2, label=f"finite-nβ target {float(target.iloc[0]):.4g}")
    lam = table["lambda_exact"].dropna()
    if len(lam):
        ax.axvline(float(lam.iloc[0]), color="gray", ls="--", lw=1, label=f"λ = {float(lam.iloc[0]):.4g}")
    ax.set_yticks(y, labels)
    for tick, probs in zip(ax.get_yticklabels(), problems):
        if probs:
            tick.set_color(FINDING_COLOR)
    ax.invert_yaxis()
    ax.set_xlabel("λ̂ ± 2 MCSE")
    ax.set_title(title)
    if len(target) or len(lam) or flagged:
        ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def plot_principal_directions(pcs: xr.Dataset, path: str | Path, *, title: str | None = None,
                              max_labels: int = 30) -> Path:
    """Save the first two principal susceptibility directions to a PNG (two panels).

    Left: each row's (probe's or sample's) scores on PC1 and PC2, labelled when there are
    at most ``max_labels`` rows. Right: the observables' loadings on PC1 and PC2 (the
    directions, unit circle). ``pcs`` is the output of
    :func:`pplpatterning.estimators.response.principal_directions`.
    """
    if not isinstance(pcs, xr.Dataset) or "score" not in pcs or pcs.sizes.get("component", 0) < 2:
        raise ValueError("`pcs` must come from principal_directions with at least two components "
                         "(needs ≥ 2 observables and ≥ 2 rows).")
    row = [d for d in pcs["score"].dims if d != "component"][0]
    scores = pcs["score"].values[:, :2]
    loadings = pcs["loading"].values[:2].T  # (observable, 2)
    ex = pcs["explained"].values
    labels = (f"PC1 ({100 * ex[0]:.1f} % of variance)", f"PC2 ({100 * ex[1]:.1f} % of variance)")
    fig = new_figure((11, 4.8))
    ax, axl = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
    ax.scatter(scores[:, 0], scores[:, 1], s=14, alpha=0.7)
    if scores.shape[0] <= max_labels:
        for label, (x, y) in zip(pcs[row].values, scores):
            ax.annotate(str(label), (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_title(f"scores of {scores.shape[0]} {row}s")
    for name, (lx, ly) in zip(pcs["observable"].values, loadings):
        axl.annotate("", xy=(lx, ly), xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="tab:red", lw=1.2))
        axl.annotate(str(name), (lx, ly), color="tab:red", fontsize=9, xytext=(3, 3), textcoords="offset points")
    t = np.linspace(0, 2 * np.pi, 200)
    axl.plot(np.cos(t), np.sin(t), color="0.85", lw=0.8)
    axl.set_xlim(-1.15, 1.15)
    axl.set_ylim(-1.15, 1.15)
    axl.set_aspect("equal")
    axl.set_title("loadings of the observables")
    for a in (ax, axl):
        a.axhline(0, color="0.8", lw=0.8)
        a.axvline(0, color="0.8", lw=0.8)
        a.set_xlabel(labels[0])
        a.set_ylabel(labels[1])
    fig.suptitle(title or "Principal susceptibility directions")
    return save_figure(fig, path, dpi=110)


def plot_calibration(result, path: str | Path, title: str | None = None) -> Path:
    """A step-size calibration (:class:`pplpatterning.workflows.calibrate.Calibration`) against ε, log x-axis.

    Top: λ̂ ± 2 MCSE per ε (filled markers pass the recommendation rule, hollow ones fail),
    the finite-nβ target where known and the exact λ. Bottom: MALA acceptance ± 2 se with the
    threshold. The recommended ε of each (nβ, γ) is a dotted vertical line.
    """
    import matplotlib

    table = result.table
    fig = new_figure((7, 6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    groups = list(table.groupby(["n_beta", "gamma"], sort=False))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((nb, g), grp) in enumerate(groups):
        label = f"nβ={nb:.4g}, γ={g:g}" if len(groups) > 1 else None
        _calibration_group(ax1, ax2, grp.sort_values("step_size"), colors[i % len(colors)], label,
                           result.recommended, nb, g)
    if result.lambda_exact is not None:
        ax1.axhline(result.lambda_exact, color="gray", ls="--", lw=1, label=f"λ = {result.lambda_exact:.4g}")
    _mark_far_estimates(ax1, table, result.lambda_exact)
    ax2.axhline(result.threshold, color="k", ls="--", lw=1, label=f"threshold {result.threshold:g}")
    ax1.set_xscale("log")
    ax1.set_ylabel("λ̂ ± 2 MCSE")
    ax2.set_ylabel("MALA acceptance")
    ax2.set_xlabel("step size ε")
    ax2.set_ylim(-0.02, 1.02)
    ax1.legend(loc="best", fontsize=8)
    ax2.legend(loc="lower left", fontsize=8)
    ax1.set_title(title or f"{result.model}: {result.backend}/{result.sampler} step-size calibration "
                           "(hollow = rejected)")
    return save_figure(fig, path)


def _calibration_group(ax1, ax2, grp: pd.DataFrame, c, label, recommended: pd.DataFrame, nb, g) -> None:
    """One (nβ, γ) group of :func:`plot_calibration` in colour ``c``: λ̂ and acceptance per ε
    (hollow when rejected), its target and its recommended ε."""
    for ok, marker_face in ((True, c), (False, "none")):
        sel = grp[grp["ok"] == ok]
        sel = sel[np.isfinite(sel["llc"].astype(float))]
        if len(sel):
            ax1.errorbar(sel["step_size"], sel["llc"], yerr=2 * sel["mcse"].astype(float), fmt="o", color=c,
                         mfc=marker_face, capsize=3, label=label if ok else None)
        acc = grp[grp["ok"] == ok]
        acc = acc[np.isfinite(acc["acceptance"].astype(float))]
        if len(acc):
            ax2.errorbar(acc["step_size"], acc["acceptance"], yerr=2 * acc["acceptance_se"].astype(float),
                         fmt="o", color=c, mfc=marker_face, capsize=3)
    ax1.plot(grp["step_size"], grp["llc"], color=c, lw=0.8, alpha=0.6)
    ax2.plot(grp["step_size"], grp["acceptance"], color=c, lw=0.8, alpha=0.6)
    target = grp["target"].dropna()
    if len(target):
        ax1.axhline(float(target.iloc[0]), color=c, lw=1.2, ls="-", alpha=0.8,
                    label=f"finite-nβ target {float(target.iloc[0]):.4g}")
    rec = recommended[(recommended["n_beta"] == nb) & (recommended["gamma"] == g)]
    if len(rec) and np.isfinite(rec["step_size"].iloc[0]):
        eps = float(rec["step_size"].iloc[0])
        for ax in (ax1, ax2):
            ax.axvline(eps, color=c, ls=":", lw=1.5)
        ax2.annotate(f"recommended ε = {eps:.3g}", (eps, 0.02), xycoords=("data", "axes fraction"),
                     rotation=90, fontsize=8, color=c, ha="right", va="bottom")


def _mark_far_estimates(ax1, table: pd.DataFrame, lambda_exact) -> None:
    """Keep the scale of the sensible rows: estimates far above (a diverging ε) are drawn as ▲ at the top."""
    ref = [float(v) for v in table.loc[table["ok"], "llc"].dropna()] + [float(v) for v in table["target"].dropna()]
    if lambda_exact is not None:
        ref.append(float(lambda_exact))
    finite = table["llc"].astype(float)
    finite = finite[np.isfinite(finite)]
    if ref and len(finite) and finite.max() > 3 * max(max(ref), 1e-12):
        top = 3 * max(ref)
        ax1.set_ylim(min(0.0, float(finite.min()) * 1.1), top)
        for eps, v in zip(table["step_size"], table["llc"].astype(float)):
            if np.isfinite(v) and v > top:
                ax1.plot([eps], [top], marker="^", color="k", clip_on=False)
                ax1.annotate(f"{v:.3g}", (eps, top), textcoords="offset points", xytext=(4, -10), fontsize=7)


# --------------------------------------------------------------------------- patterning
def plot_posterior_shift(before: xr.DataTree, after: xr.DataTree, path: str | Path, *,
                         params: tuple[str, str] = ("a", "b"),
                         lines: dict[str, tuple[tuple[float, float], tuple[float, float]]] | None = None,
                         masses: pd.DataFrame | None = None, max_points: int = 4000,
                         title: str | None = None) -> Path:
    """Posterior draws of two scalar parameters before and after a re-weighting, plus mass fractions.

    Left and middle: scatter of the draws of ``params`` (x, y) of ``before`` and ``after``
    (at most ``max_points`` each, evenly thinned) on common axes, with the solution sets in
    ``lines`` ({label: ((x0, y0), (x1, y1))}) drawn as labelled segments. Right (when
    ``masses`` is given): bars of the mass fractions, one group per row of ``masses``
    (index = solution label) with columns ``before``, ``after`` and optional ``before_se``,
    ``after_se`` (drawn as ±2 se), ``exact_before``, ``exact_after`` (black markers).
    """
    xy0, xy1 = _thinned_draws(before, params, max_points), _thinned_draws(after, params, max_points)
    both = np.concatenate([xy0, xy1])
    lo, hi = np.quantile(both, 0.002, axis=0), np.quantile(both, 0.998, axis=0)
    pad = 0.08 * (hi - lo)
    ncols = 3 if masses is not None else 2
    fig = new_figure((4.6 * ncols, 4.4))
    axes = fig.subplots(1, ncols, gridspec_kw={"width_ratios": [1, 1, 0.8][:ncols]})
    for ax, xy, label, color in ((axes[0], xy0, "before", "tab:blue"), (axes[1], xy1, "after", "tab:orange")):
        ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.25, color=color, rasterized=True)
        for k, (name, (p0, p1)) in enumerate((lines or {}).items()):
            ax.plot([p0[0], p1[0]], [p0[1], p1[1]], color=["tab:green", "tab:purple", "tab:red", "k"][k % 4],
                    lw=1.6, label=name)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_xlabel(params[0])
        ax.set_ylabel(params[1])
        ax.set_title(f"posterior draws, {label} re-weighting")
        if lines:
            ax.legend(loc="upper right", fontsize=8)
    if masses is not None:
        _mass_bars(axes[2], masses)
    fig.suptitle(title or "Posterior before and after patterning")
    return save_figure(fig, path, dpi=110)


def _thinned_draws(trace: xr.DataTree, params: tuple[str, str], max_points: int) -> np.ndarray:
    """The draws of two scalar parameters as (draws, 2), evenly thinned to at most ~``max_points``."""
    post = trace["posterior"]
    for p in params:
        if p not in post.data_vars:
            raise ValueError(f"The trace has no parameter {p!r}; sample with keep_params=True.")
    xy = np.stack([post[p].values.reshape(-1) for p in params], axis=1)
    step = max(1, xy.shape[0] // max_points)
    return xy[::step]


def _mass_bars(ax, masses: pd.DataFrame) -> None:
    """The mass-fraction panel of :func:`plot_posterior_shift`: before/after bars (± 2 se) per solution."""
    names = [str(i) for i in masses.index]
    x = np.arange(len(names))
    for off, col, color in ((-0.18, "before", "tab:blue"), (0.18, "after", "tab:orange")):
        se = masses.get(f"{col}_se")
        ax.bar(x + off, masses[col].values, width=0.34, color=color, alpha=0.8, label=col,
               yerr=None if se is None else 2 * se.values, capsize=3)
        exact = masses.get(f"exact_{col}")
        if exact is not None:
            ax.scatter(x + off, exact.values, color="k", marker="_", s=300, zorder=3,
                       label="exact" if col == "before" else None)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("posterior mass fraction (± 2 se)")
    ax.set_title("mass on each solution")
    ax.legend(loc="upper right", fontsize=8)


def plot_linear_response(table: pd.DataFrame, path: str | Path, *, title: str | None = None,
                         xlabel: str = "predicted change α β X s", ylabel: str = "realized change E_new - E_old") -> Path:
    """Realized against predicted changes (± 2 se each), with the line realized = predicted.

    ``table`` has columns ``predicted``, ``realized`` and optional ``predicted_se``,
    ``realized_se``, ``exact`` (the exact realized change, drawn as black crosses) and
    ``label`` (annotations), one row per verified plan (or observable).
    """
    fig = new_figure((5.6, 5.0))
    ax = fig.subplots()
    p, r = table["predicted"].to_numpy(float), table["realized"].to_numpy(float)
    pse = table["predicted_se"].to_numpy(float) if "predicted_se" in table else None
    rse = table["realized_se"].to_numpy(float) if "realized_se" in table else None
    ax.errorbar(p, r, xerr=None if pse is None else 2 * np.nan_to_num(pse), yerr=None if rse is None else 2 * rse,
                fmt="o", color="tab:blue", capsize=3, label="realized (± 2 se)")
    if "exact" in table:
        ax.scatter(p, table["exact"].to_numpy(float), marker="x", color="k", zorder=3, label="exact realized")
    if "label" in table:
        for label, xi, yi in zip(table["label"], p, r):
            ax.annotate(str(label), (xi, yi), fontsize=8, xytext=(4, -10), textcoords="offset points")
    span = np.concatenate([p, r])
    lo, hi = float(np.min(span)), float(np.max(span))
    pad = 0.1 * (hi - lo if hi > lo else 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, ls="--", label="realized = predicted")
    ax.axhline(0, color="0.85", lw=0.8)
    ax.axvline(0, color="0.85", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "Linear response: realized vs predicted")
    return save_figure(fig, path, dpi=110)

