"""The samplers by name: the frameworks' own (NUTS, HMC) and the update rules written once
against the array API (MALA, SGLD, RMSProp-SGLD, SGNHT), which both backends drive.

To add a sampler: write a rule (see :mod:`.rule`: ``init``/``step``, ``Info``, ``streams``,
``minibatch``, ``from_settings``) in its own module and register it here, or at run time
with :func:`register_sampler` (docs/architecture.md, "Adding a sampler").
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pplpatterning.samplers.mala import MALA
from pplpatterning.samplers.rmsprop_sgld import RMSPropSGLD
from pplpatterning.samplers.settings import OPTION_CHECKS, SAMPLERS, SamplerSettings, add_sampler, remove_sampler
from pplpatterning.samplers.sgld import SGLD
from pplpatterning.samplers.sgnht import SGNHT

__all__ = ["RULES", "FRAMEWORK_SAMPLERS", "rule_for", "register_sampler", "unregister_sampler"]

#: Samplers whose transition kernel is the framework's own (NumPyro's / Pyro's NUTS and HMC).
FRAMEWORK_SAMPLERS = ("nuts", "hmc")

_RULES: dict[str, type] = {"mala": MALA, "sgld": SGLD, "rmsprop_sgld": RMSPropSGLD, "sgnht": SGNHT}
#: sampler name -> its update rule class (one definition, used by every backend).
RULES: Mapping[str, type] = MappingProxyType(_RULES)


def rule_for(settings: SamplerSettings):
    """The update rule of ``settings.sampler``, built from the validated settings."""
    return _RULES[settings.sampler].from_settings(settings)


def register_sampler(name: str, rule: type, options: Mapping[str, Any] | None = None, *,
                     stochastic_gradient: bool | None = None) -> None:
    """Make ``sample(..., sampler=name)`` run the update rule class ``rule`` on every backend.

    ``options`` maps option names (each must be one of :data:`OPTION_CHECKS`, so that it is
    validated like the built-in ones) to defaults; ``stochastic_gradient`` defaults to
    ``rule.minibatch`` (minibatch gradients, a ``step_size`` default and ``batch_size``).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"`name` must be an identifier-like string, got {name!r}.")
    if name in SAMPLERS:
        raise ValueError(f"A sampler named {name!r} exists already; choose another `name`.")
    missing = [a for a in ("init", "step", "from_settings", "Info", "streams", "minibatch") if not hasattr(rule, a)]
    if missing:
        raise TypeError(f"`rule` must define {missing} (see pplpatterning.samplers.rule).")
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTION_CHECKS))
    if unknown:
        raise ValueError(f"Unknown option name(s) {unknown}; options must be among {sorted(OPTION_CHECKS)}.")
    sg = bool(rule.minibatch) if stochastic_gradient is None else bool(stochastic_gradient)
    add_sampler(name, options, stochastic_gradient=sg)
    _RULES[name] = rule


def unregister_sampler(name: str) -> None:
    """Remove a sampler added by :func:`register_sampler` (the built-in ones stay)."""
    if name in FRAMEWORK_SAMPLERS or name in ("mala", "sgld", "rmsprop_sgld", "sgnht"):
        raise ValueError(f"{name!r} is built in and cannot be unregistered.")
    _RULES.pop(name, None)
    remove_sampler(name)
