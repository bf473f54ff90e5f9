"""Workflows that call ``sample()`` again: the cross-framework comparison (``compare``), the
step-size calibration (``calibrate``), with the MALA-acceptance check it judges ε by (``acceptance``),
and LLC trajectories over training checkpoints (``trajectory.llc_trajectory``) with their stage
boundaries (``stages.detect_stages``), and the weight- and data-refined LLCs of every component
in one call (``refined.refined_llcs``)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["llc_trajectory", "detect_stages", "refined_llcs"]

_LAZY = {"llc_trajectory": "trajectory", "detect_stages": "stages", "refined_llcs": "refined"}


def __getattr__(name: str) -> Any:  # PEP 562: importing the package loads no workflow
    if name not in _LAZY:
        raise AttributeError(f"module 'pplpatterning.workflows' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
