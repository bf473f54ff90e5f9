"""The toy-model zoo: models whose learning coefficient is known exactly (docs/math.md §5).

``MODELS`` maps a name to its factory; ``get_model(name, **kwargs)`` builds one with checked
arguments. Every model follows the :class:`pplpatterning.Model` contract: a module-level,
array-API per-sample loss, instance constants in ``consts``, a seeded data generator, the
exact λ and m at the default centre, and where known the exact finite-nβ target.

=================  =====================================================  ==============================
name               factory keyword arguments (defaults)                   λ at the default centre
=================  =====================================================  ==============================
regular            d=2, sigma=1.0, w_true=None (zeros), split=None        d/2
normal_crossing    k=(1, 2), sigma=1.0                                    1/(2 max k)
product            sigma=1.0                                              1/2 (m = 2)
powers             k=(1, 2), c=None (ones), split=None                    Σ 1/(2k_i)
norm_power         d=2, k=2                                               d/(2k)
tanh               H=1, sigma=1.0                                         (H+i²+i)/(4i+2), i = ⌊√H⌋
gaussian_mixture   variant="means", sigma=1.0, weight=0.5                 3/4 ("means"), 1/2 ("weight")
rrr                M=3, N=3, H=3, r=1, sigma=1.0                          Aoyagi & Watanabe 2005
dln                widths=(2, 3, 3, 2), r=0, sigma=1.0                    Aoyagi 2024
two_solutions      p=0.5, noise=0.0, sigma=1.0                            1/3 (two solution sets, patterning demo)
=================  =====================================================  ==============================

Exact finite-nβ targets (``Model.target_fn``) exist for ``regular`` (closed form, any centre,
γ, weights, restriction), ``powers`` (closed form at γ = 0, quadrature for γ > 0),
``norm_power`` (closed form at γ = 0, radial quadrature for γ > 0), ``normal_crossing`` and
``product`` (closed form or 1-D quadrature in the cases listed in :mod:`.normal_crossing`,
2-D cubature otherwise for two coordinates), and ``tanh`` and ``gaussian_mixture`` (2-D
cubature, :func:`finite_target_by_quadrature`, whenever at most two scalar coordinates are
sampled). Every target returns ``None`` where the posterior is improper (e.g. γ = 0 with a
flat direction). ``rrr`` and ``dln`` have none; for RRR with r = 0 on null data the exact
target is :func:`~.null_targets.rrr_null_target` (with :func:`~.null_targets.null_data`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from pplpatterning.spec.model import Model

from . import lambdas
from ._quad2d import finite_target_by_quadrature
from .dln import dln
from .linear import regular
from .mixture import gaussian_mixture
from .norm_power import norm_power
from .normal_crossing import normal_crossing
from .powers import powers
from .product import product
from .rrr import rrr
from .tanh import tanh
from .two_solutions import two_solutions

__all__ = [
    "MODELS", "get_model", "lambdas", "finite_target_by_quadrature", "regular", "normal_crossing", "product",
    "powers", "norm_power", "tanh", "gaussian_mixture", "rrr", "dln", "two_solutions",
]

MODELS: dict[str, Callable[..., Model]] = {
    "regular": regular,
    "normal_crossing": normal_crossing,
    "product": product,
    "powers": powers,
    "norm_power": norm_power,
    "tanh": tanh,
    "gaussian_mixture": gaussian_mixture,
    "rrr": rrr,
    "dln": dln,
    "two_solutions": two_solutions,
}


def get_model(name: str, **kwargs) -> Model:
    """Build the registry model ``name`` with the factory's keyword arguments.

    Raises ``ValueError`` naming the valid models for an unknown name, the valid keyword
    arguments for an unknown keyword, and the offending argument for an invalid value.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; valid models are: {', '.join(MODELS)}.")
    factory = MODELS[name]
    valid = list(inspect.signature(factory).parameters)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"Model {name!r} got unknown keyword argument(s) {unknown}; valid ones are: {', '.join(valid)}."
        )
    return factory(**kwargs)
