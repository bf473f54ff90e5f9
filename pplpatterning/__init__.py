"""pplpatterning: local learning coefficients, susceptibilities and patterning for SLT.

A backend-neutral :class:`GibbsPosterior` compiles to NumPyro (JAX) or Pyro (PyTorch);
the chains come back as one Trace (an ArviZ DataTree) from which :func:`llc` and
:func:`diagnose` compute, with numpy/xarray only.
"""

from .comparison import compare
from .diagnostics import Diagnosis, Finding, diagnose
from .llc import LLCEstimate, llc, wbic
from .model import Model
from .posterior import GibbsPosterior
from .samplers import SAMPLERS, SamplerSettings
from .sampling import sample
from .trace import load_trace, save_trace

__version__ = "0.1.0"

__all__ = [
    "Model", "GibbsPosterior", "sample", "SamplerSettings", "SAMPLERS",
    "llc", "wbic", "LLCEstimate", "diagnose", "Diagnosis", "Finding",
    "save_trace", "load_trace", "compare",
]
