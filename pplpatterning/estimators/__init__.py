"""Estimators: functions of a Trace alone (NumPy, xarray, arviz-stats; never JAX or torch).

The LLC λ̂ and WBIC (:mod:`.llc`), the convergence diagnostics and the health report
(:mod:`.convergence`, :mod:`.diagnose`), susceptibilities χ (:mod:`.susceptibility`) and
the response matrix of a patterning problem (:mod:`.response`); docs/math.md §2–§4, §9.
"""
