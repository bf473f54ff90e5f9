"""The Trace: one ArviZ DataTree per run, whatever the backend, and its file format.

Everything after the Trace (estimators, patterning, workflows) reads it with NumPy and
xarray only.
"""

from pplpatterning.trace.build import build_trace, check_schema, load_trace, run_attrs, save_trace, trace_attr

__all__ = ["build_trace", "run_attrs", "trace_attr", "save_trace", "load_trace", "check_schema"]
