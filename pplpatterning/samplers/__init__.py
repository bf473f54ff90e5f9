"""Samplers: the option table, the validated settings and the update rules.

:mod:`.settings` holds the backend-neutral table of samplers and their options; the
update rules of the samplers the frameworks lack are written once, against the array API,
in one module per algorithm (docs/math.md §8).
"""

from pplpatterning.samplers.settings import (
    EXACT_SAMPLERS, LOSS_ESTIMATES, OPTION_CHECKS, SAMPLERS, SEED_LIMIT, SG_SAMPLERS, SamplerSettings,
    validate_options,
)

__all__ = ["SAMPLERS", "EXACT_SAMPLERS", "SG_SAMPLERS", "SamplerSettings", "LOSS_ESTIMATES", "OPTION_CHECKS",
           "SEED_LIMIT", "validate_options"]
