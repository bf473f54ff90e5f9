"""The Trace: one ArviZ DataTree per run, whatever the backend, and its file format.

:mod:`.build` assembles it, :mod:`.attrs` writes and reads its root attrs, :mod:`.io`
saves, loads and checks it, :mod:`.access` reads the arrays the estimators take.
Everything after the Trace (estimators, patterning, workflows) reads it with NumPy and
xarray only.
"""

from pplpatterning.trace.access import (finite_prefix, loss_delta, observable_array, probe_deltas, sample_deltas,
                                        sample_moments, training_loss, uses_sample_moments)
from pplpatterning.trace.attrs import run_attrs, trace_attr
from pplpatterning.trace.build import build_trace
from pplpatterning.trace.io import check_schema, load_trace, save_trace

__all__ = ["build_trace", "run_attrs", "trace_attr", "save_trace", "load_trace", "check_schema",
           "loss_delta", "finite_prefix", "training_loss", "observable_array", "probe_deltas", "sample_deltas",
           "sample_moments", "uses_sample_moments"]
