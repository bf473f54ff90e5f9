"""Plots people would rather look at than read: PNG files drawn on matplotlib's Agg canvas
(``Figure`` + ``FigureCanvasAgg``), so the user's global matplotlib backend is never switched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["plot_comparison", "plot_principal_directions", "new_figure", "save_figure"]


def new_figure(figsize):
    """A matplotlib Figure attached to an Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def plot_comparison(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """λ̂ ± 2 MCSE per (backend, sampler) row, with the finite-nβ target and the exact λ."""
    ok = table[table["error"].fillna("") == ""]
    labels = [f"{b} / {s}" for b, s in zip(ok["backend"], ok["sampler"])]
    y = np.arange(len(ok))
    fig = new_figure((7, 1.2 + 0.45 * max(len(ok), 1)))
    ax = fig.subplots()
    colors = ["tab:blue" if b == "numpyro" else "tab:orange" for b in ok["backend"]]
    for yi, (m, se, c) in enumerate(zip(ok["llc"], ok["mcse"], colors)):
        ax.errorbar(m, yi, xerr=2 * se, fmt="o", color=c, capsize=3)
    target = table["target"].dropna()
    if len(target):
        ax.axvline(float(target.iloc[0]), color="k", lw=1.2, label=f"finite-nβ target {float(target.iloc[0]):.4g}")
    lam = table["lambda_exact"].dropna()
    if len(lam):
        ax.axvline(float(lam.iloc[0]), color="gray", ls="--", lw=1, label=f"λ = {float(lam.iloc[0]):.4g}")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("λ̂ ± 2 MCSE")
    ax.set_title(title)
    if len(target) or len(lam):
        ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def plot_principal_directions(pcs: xr.Dataset, path: str | Path, *, title: str | None = None,
                              max_labels: int = 30) -> Path:
    """Save the first two principal susceptibility directions to a PNG (two panels).

    Left: each row's (probe's or sample's) scores on PC1 and PC2, labelled when there are
    at most ``max_labels`` rows. Right: the observables' loadings on PC1 and PC2 (the
    directions, unit circle). ``pcs`` is the output of
    :func:`pplpatterning.response.principal_directions`.
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
