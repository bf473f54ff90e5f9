"""Plots people would rather look at than read. matplotlib only, Agg backend, PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_comparison"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_comparison(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """λ̂ ± 2 MCSE per (backend, sampler) row, with the finite-nβ target and the exact λ."""
    plt = _pyplot()
    ok = table[table["error"].fillna("") == ""]
    labels = [f"{b} / {s}" for b, s in zip(ok["backend"], ok["sampler"])]
    y = np.arange(len(ok))
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * max(len(ok), 1)))
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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
