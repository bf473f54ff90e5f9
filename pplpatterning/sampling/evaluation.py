"""The values recorded at the kept draws, as a backend hands them to ``sample()``.

Since issue 11 a backend evaluates every kept draw's record (:mod:`.record`) inside its
sampling loop, so a failure there stops the run like any other failure mid-run: the draws
completed before it keep their values and the run's ``stop_reason`` says what happened.
This module defines the :class:`Evaluation` record, the one-line description of an
exception (:func:`describe_exception`) and the trace's ``incomplete_reason``. A backend that
evaluates after sampling instead may still report a failed evaluation (``failed_at``,
``failure``). NumPy only.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Evaluation", "describe_exception", "incomplete_reason"]


class Evaluation(NamedTuple):
    """The values of the kept draws, (chain, draw, ...) each; NaN from draw ``failed_at`` on
    when the evaluation failed, and ``failure`` = "evaluation failed at draw K: ExcType: msg"."""

    loss: np.ndarray | None
    delta: np.ndarray | None
    observables: dict[str, np.ndarray]
    dataset_losses: dict[str, np.ndarray]
    per_sample: np.ndarray | None  # stored l_z: (chain, thinned draw, sample)
    failed_at: int | None = None
    failure: str | None = None
    moments: Any = None            # streamed: pplpatterning.trace.moments.Moments (NumPy)
    moment_shifts: tuple | None = None  # (φ(w*), ΔL_z(w*)) of the streamed sums


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
