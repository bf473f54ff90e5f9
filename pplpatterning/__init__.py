"""pplpatterning: local learning coefficients, susceptibilities and patterning for SLT.

A backend-neutral :class:`GibbsPosterior` compiles to NumPyro (JAX) or Pyro (PyTorch);
the chains come back as one Trace (an ArviZ DataTree) from which :func:`llc`,
:func:`diagnose`, :func:`susceptibility` and :func:`attribution` compute, with numpy/xarray
only. Observables live in :mod:`pplpatterning.observables`, probes in :class:`Probes`.
"""

from .comparison import compare
from .diagnostics import Diagnosis, Finding, diagnose
from .llc import LLCEstimate, llc, wbic
from .model import Model
from .patterning import PatternPlan, pattern
from .patterning_verify import Verification, verify
from .posterior import GibbsPosterior
from .probes import Probes
from .refined import components, refine
from .response import principal_directions, response_matrix
from .samplers import SAMPLERS, SamplerSettings
from .sampling import sample
from .susceptibility import attribution, component_susceptibility, susceptibility
from .trace import load_trace, save_trace

__version__ = "0.1.0"

__all__ = [
    "Model", "GibbsPosterior", "sample", "SamplerSettings", "SAMPLERS",
    "llc", "wbic", "LLCEstimate", "diagnose", "Diagnosis", "Finding",
    "save_trace", "load_trace", "compare",
    "Probes", "susceptibility", "attribution", "component_susceptibility", "response_matrix",
    "principal_directions", "refine", "components", "pattern", "PatternPlan", "verify", "Verification",
]
