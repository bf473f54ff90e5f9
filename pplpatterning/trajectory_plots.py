"""Plots of LLC trajectories over training (:func:`pplpatterning.llc_trajectory`'s Dataset):
λ̂ with its ±2 MCSE band, the training loss on a twin axis and the stage boundaries
(:func:`~pplpatterning.workflows.stages.detect_stages`); the refined λ̂ of each component.
Drawn on an Agg figure (:func:`pplpatterning.plots.new_figure`) unless ``ax`` is given.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from pplpatterning.plots import new_figure

__all__ = ["plot_llc_trajectory", "plot_rllc_trajectory"]


def _trajectory_axes(ax, figsize):
    """``ax``, or the axes of a new Agg figure."""
    if ax is None:
        ax = new_figure(figsize).subplots()
    return ax


def _log_steps(steps: np.ndarray) -> bool:
    """A log step axis when every step is positive and they span at least two decades."""
    return bool(steps.size and steps.min() > 0 and steps.max() / steps.min() >= 100)


def _band(ax, steps, mean, se, color, label):
    """λ̂ as a line with markers and a ±2 se band (the band is not a line)."""
    mean, se = np.asarray(mean, np.float64), np.nan_to_num(np.asarray(se, np.float64))
    ax.fill_between(steps, mean - 2 * se, mean + 2 * se, color=color, alpha=0.2, lw=0)
    ax.plot(steps, mean, marker="o", ms=3, color=color, label=label)


def plot_llc_trajectory(ds: xr.Dataset, ax=None, loss: bool = True, stages=True, component: str | None = None):
    """λ̂ over training with its ±2 MCSE band, the training loss and the stage boundaries.

    ``ds`` is an :func:`~pplpatterning.workflows.trajectory.llc_trajectory` result (with a
    ``component`` dim, ``component`` picks the curve, default ``"whole"``). The x axis is the
    training step, logarithmic when the steps are positive and span two decades or more.
    ``loss=True`` draws ``loss_at_centre`` on a second y axis (dashed grey). ``stages``:
    True draws the boundaries found by
    :func:`~pplpatterning.workflows.stages.detect_stages` (λ̂ and its MCSE), a sequence of
    steps draws those, False none; each is a dotted vertical line. Returns the λ̂ axes (its
    lines: λ̂, then one per boundary); the loss is on its twin, ``ax.figure.axes[-1]``.
    """
    if not isinstance(ds, xr.Dataset) or "llc" not in ds or "checkpoint" not in ds.dims:
        raise ValueError("`ds` must be an llc_trajectory Dataset (variables llc, llc_mcse over `checkpoint`).")
    sel = ds
    if "component" in ds.dims:
        name = component if component is not None else str(ds["component"].values[0])
        if name not in [str(c) for c in ds["component"].values]:
            raise ValueError(f"`component`={name!r} is not in the trajectory's components "
                             f"{[str(c) for c in ds['component'].values]}.")
        sel = ds.sel(component=name)
    ax = _trajectory_axes(ax, (7, 4))
    steps = np.asarray(ds["checkpoint"].values)
    _band(ax, steps, sel["llc"].values, sel["llc_mcse"].values, "tab:blue", "λ̂ ± 2 MCSE")
    if _log_steps(steps):
        ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("λ̂ (LLC)", color="tab:blue")
    boundaries = []
    if stages is True:
        from pplpatterning.workflows.stages import detect_stages

        mean, se = np.asarray(sel["llc"].values, np.float64), np.asarray(sel["llc_mcse"].values, np.float64)
        ok = np.isfinite(mean) & np.isfinite(se) & (se > 0)
        if ok.sum() >= 3:
            boundaries = detect_stages(steps[ok], mean[ok], se[ok])
    elif stages is not False and stages is not None:
        boundaries = [float(s) for s in stages]
    for k, b in enumerate(boundaries):
        ax.axvline(b, color="k", ls=":", lw=1.2, label="stage boundary" if k == 0 else None)
    if loss and "loss_at_centre" in ds:
        lax = ax.twinx()
        lax.plot(steps, ds["loss_at_centre"].values, color="0.45", ls="--", lw=1.2, label="training loss")
        lax.set_ylabel("training loss L_n(w*)", color="0.45")
        handles = ax.get_legend_handles_labels()
        other = lax.get_legend_handles_labels()
        ax.legend(handles[0] + other[0], handles[1] + other[1], loc="best", fontsize=8)
    else:
        ax.legend(loc="best", fontsize=8)
    ax.set_title(f"LLC over training ({ds.attrs.get('model', '')})".replace(" ()", ""))
    return ax


def plot_rllc_trajectory(ds: xr.Dataset, ax=None, components=None, whole: bool = False):
    """The refined λ̂ of each component over training: one line per component with its
    ±2 MCSE band (log step axis as in :func:`plot_llc_trajectory`).

    ``ds`` is an :func:`~pplpatterning.workflows.trajectory.llc_trajectory` result with a
    ``component`` dim; ``components`` picks and orders the curves (default: every component
    but ``"whole"``, which ``whole=True`` adds as a black line). Returns the axes.
    """
    if not isinstance(ds, xr.Dataset) or "component" not in ds.dims:
        raise ValueError("`ds` must be an llc_trajectory Dataset with a `component` dim "
                         "(run llc_trajectory with components=...).")
    names = [str(c) for c in ds["component"].values]
    chosen = [n for n in names if n != "whole"] if components is None else [str(c) for c in components]
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ValueError(f"`components` {unknown} are not in the trajectory's components {names}.")
    if whole and "whole" in names and "whole" not in chosen:
        chosen = ["whole"] + chosen
    ax = _trajectory_axes(ax, (7, 4))
    steps = np.asarray(ds["checkpoint"].values)
    import matplotlib

    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, name in enumerate(chosen):
        sel = ds.sel(component=name)
        color = "k" if name == "whole" else colors[k % len(colors)]
        _band(ax, steps, sel["llc"].values, sel["llc_mcse"].values, color, name)
    if _log_steps(steps):
        ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("refined λ̂ ± 2 MCSE")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("Refined LLC of each component over training")
    return ax
