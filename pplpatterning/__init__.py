"""pplpatterning: local learning coefficients, susceptibilities and patterning for SLT.

A backend-neutral :class:`GibbsPosterior` compiles to NumPyro (JAX) or Pyro (PyTorch);
the chains come back as one Trace (an ArviZ DataTree) from which :func:`llc`,
:func:`diagnose`, :func:`susceptibility` and :func:`attribution` compute, with numpy/xarray
only. Observables live in :mod:`pplpatterning.spec.observables`, probes in :class:`Probes`.

The public names are imported lazily (PEP 562): ``import pplpatterning`` loads nothing
heavy, so the command line starts fast; ``from pplpatterning import llc`` imports the
defining module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the submodule that defines it (the folders follow the data flow:
# spec -> samplers -> sampling (backends) -> trace -> estimators -> patterning, workflows)
_LAZY: dict[str, str] = {
    "Model": "spec.model", "GibbsPosterior": "spec.posterior", "Probes": "spec.probes",
    "components": "spec.refine", "refine": "spec.refine",
    "SAMPLERS": "samplers.settings", "SamplerSettings": "samplers.settings",
    "sample": "sampling.core",
    "load_trace": "trace.io", "save_trace": "trace.io",
    "LLCEstimate": "estimators.llc", "llc": "estimators.llc", "wbic": "estimators.llc",
    "Diagnosis": "estimators.diagnose", "Finding": "estimators.diagnose", "diagnose": "estimators.diagnose",
    "attribution": "estimators.susceptibility", "component_susceptibility": "estimators.susceptibility",
    "susceptibility": "estimators.susceptibility",
    "principal_directions": "estimators.response", "response_matrix": "estimators.response",
    "PatternPlan": "patterning.pattern", "pattern": "patterning.pattern",
    "Verification": "patterning.verify", "verify": "patterning.verify",
    "compare": "workflows.compare",
    "llc_trajectory": "workflows.trajectory", "detect_stages": "workflows.stages",
    "refined_llcs": "workflows.refined",
}
# public submodules reachable as attributes (``pp.observables.param(...)``)
_MODULES: dict[str, str] = {"observables": "spec.observables"}

__all__ = [
    "Model", "GibbsPosterior", "sample", "SamplerSettings", "SAMPLERS",
    "llc", "wbic", "LLCEstimate", "diagnose", "Diagnosis", "Finding",
    "save_trace", "load_trace", "compare",
    "Probes", "susceptibility", "attribution", "component_susceptibility", "response_matrix",
    "principal_directions", "refine", "components", "pattern", "PatternPlan", "verify", "Verification",
    "llc_trajectory", "detect_stages", "refined_llcs",
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(f".{_MODULES[name]}", __name__)
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pplpatterning' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_MODULES))
