"""pplpatterning: local learning coefficients, susceptibilities and patterning for SLT.

A backend-neutral :class:`GibbsPosterior` compiles to NumPyro (JAX) or Pyro (PyTorch);
the chains come back as one Trace (an ArviZ DataTree) from which :func:`llc`,
:func:`diagnose`, :func:`susceptibility` and :func:`attribution` compute, with numpy/xarray
only. Observables live in :mod:`pplpatterning.observables`, probes in :class:`Probes`.

The public names are imported lazily (PEP 562): ``import pplpatterning`` loads nothing
heavy, so the command line starts fast; ``from pplpatterning import llc`` imports the
defining module on first use.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_LAZY: dict[str, str] = {
    "compare": "comparison",
    "Diagnosis": "diagnostics", "Finding": "diagnostics", "diagnose": "diagnostics",
    "LLCEstimate": "llc", "llc": "llc", "wbic": "llc",
    "Model": "model",
    "PatternPlan": "patterning", "pattern": "patterning",
    "Verification": "patterning_verify", "verify": "patterning_verify",
    "GibbsPosterior": "posterior",
    "Probes": "probes",
    "components": "refined", "refine": "refined",
    "principal_directions": "response", "response_matrix": "response",
    "SAMPLERS": "samplers", "SamplerSettings": "samplers",
    "sample": "sampling",
    "attribution": "susceptibility", "component_susceptibility": "susceptibility",
    "susceptibility": "susceptibility",
    "load_trace": "trace", "save_trace": "trace",
}

__all__ = [
    "Model", "GibbsPosterior", "sample", "SamplerSettings", "SAMPLERS",
    "llc", "wbic", "LLCEstimate", "diagnose", "Diagnosis", "Finding",
    "save_trace", "load_trace", "compare",
    "Probes", "susceptibility", "attribution", "component_susceptibility", "response_matrix",
    "principal_directions", "refine", "components", "pattern", "PatternPlan", "verify", "Verification",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pplpatterning' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps ``pplpatterning.llc`` and ``pplpatterning.susceptibility`` the functions.

    Importing a submodule binds it as an attribute of its package; where a submodule and
    a public function share a name (``llc``, ``susceptibility``) that would shadow the
    function, so the function defined in that submodule is bound instead (what the former
    eager ``from .llc import llc`` did).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
