"""The record of the after-sampling evaluation of kept draws, shared by every backend.

A backend evaluates the loss, the observables and the probe losses of the kept draws in
blocks of draws; when a block raises, the draws evaluated before it are kept and the rest
are NaN (issue 9: whatever is evaluated after sampling must keep the draws already made).
This module defines that policy's data once: the :class:`Evaluation` record, how blocks are
joined back into (chain, draw, ...) arrays, and the one-line reason written to the trace's
``incomplete_reason``. NumPy only.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

__all__ = ["Evaluation", "join_draw_blocks", "describe_exception", "evaluation_failure", "incomplete_reason"]


class Evaluation(NamedTuple):
    """The values of the kept draws, (chain, draw, ...) each; NaN from draw ``failed_at`` on
    when the evaluation failed, and ``failure`` = "evaluation failed at draw K: ExcType: msg"."""

    loss: np.ndarray | None
    delta: np.ndarray | None
    observables: dict[str, np.ndarray]
    dataset_losses: dict[str, np.ndarray]
    per_sample: np.ndarray | None  # (chain, thinned draw, sample)
    failed_at: int | None = None
    failure: str | None = None


def join_draw_blocks(parts: list, C: int, total: int, tail: tuple[int, ...] = ()) -> np.ndarray:
    """Blocks of shape (C, D_b, ...) joined along the draw axis and cut to ``total`` draws;
    when fewer were evaluated, the rest is NaN (float64). ``tail`` is the trailing shape
    used when no block was evaluated."""
    got = np.concatenate([np.asarray(p) for p in parts], axis=1)[:, :total] if parts else None
    if got is not None and got.shape[1] == total:
        return got
    shape = (C, total) + (got.shape[2:] if got is not None else tail)
    out = np.full(shape, np.nan)
    if got is not None:
        out[:, :got.shape[1]] = got
    return out


def describe_exception(exc: BaseException) -> str:
    """"ExcType: message", one line. JAX re-raises an exception from inside a callback with
    the whole traceback as its message; its last line is the original "ExcType: message"."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    name = type(exc).__name__
    if not lines:
        return name
    msg = lines[-1] if len(lines) > 1 and any("Traceback" in ln for ln in lines) else " ".join(lines)
    msg = msg[:500]
    return msg if msg.startswith(f"{name}: ") else f"{name}: {msg}"


def evaluation_failure(draw: int, exc: BaseException) -> str:
    """The ``incomplete_reason`` of an evaluation that failed in the block starting at ``draw``."""
    return f"evaluation failed at draw {draw}: {describe_exception(exc)}"


def incomplete_reason(stop_reason: str | None, ev: Evaluation, num_draws: int) -> str | None:
    """The trace's ``incomplete_reason``: the sampling stop reason (if any) joined by "; " with
    the evaluation failure (if any). A failed evaluation also warns (RuntimeWarning), since
    the run then keeps every draw's parameters whatever ``keep_params`` said."""
    if ev.failure is None:
        return stop_reason
    warnings.warn(f"After sampling, {ev.failure}. The trace keeps all {num_draws} draws' parameters "
                  f"(even with keep_params=False) and marks the run incomplete; the evaluated values "
                  f"(loss, observables, probes) are NaN from draw {ev.failed_at} on.",
                  RuntimeWarning, stacklevel=4)
    return ev.failure if stop_reason is None else f"{stop_reason}; {ev.failure}"
