"""Workflows that call ``sample()`` again: the cross-framework comparison (``compare``), the
step-size calibration (``calibrate``), with the MALA-acceptance check it judges ε by (``acceptance``),
and LLC trajectories over training checkpoints (``trajectory.llc_trajectory``) with their stage
boundaries (``stages.detect_stages``)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["llc_trajectory", "detect_stages"]

_LAZY = {"llc_trajectory": "trajectory", "detect_stages": "stages"}


def __getattr__(name: str) -> Any:  # PEP 562: importing the package loads no workflow
    if name not in _LAZY:
        raise AttributeError(f"module 'pplpatterning.workflows' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
