"""The specification of a tempered, localized Gibbs posterior (docs/math.md §1).

Backend-neutral, NumPy only: a :class:`~.model.Model` (loss, parameter shapes, constants,
a data generator), the :class:`~.posterior.GibbsPosterior` built on it (data, weights ρ,
nβ, γ, the centre w*, frozen parameters), observables φ(w), probe data sets and the
restricted or refined posteriors of :mod:`.refine`. Everything downstream (samplers,
backends) reads these objects and never changes them.
"""

from pplpatterning.spec.model import Model
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.spec.probes import Probes
from pplpatterning.spec.refine import components, refine

__all__ = ["Model", "GibbsPosterior", "Probes", "refine", "components"]
