"""`sample`: run a GibbsPosterior on a backend and return a Trace.

Backends are imported lazily by name, so importing pplpatterning never imports JAX or
torch; nothing after the Trace needs either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import xarray as xr

from .observables import validate_observables
from .posterior import GibbsPosterior
from .probes import Probes
from .samplers import SamplerSettings

__all__ = ["sample", "BACKENDS"]

BACKENDS = ("numpyro", "pyro")


def get_backend(name: str):
    """Import the backend module ``pplpatterning.backends.<name>``."""
    if name not in BACKENDS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got {name!r}.")
    import importlib

    try:
        return importlib.import_module(f"pplpatterning.backends.{name}")
    except ModuleNotFoundError as exc:
        extra = "numpyro" if name == "numpyro" else "pyro"
        raise ImportError(
            f"The {name!r} backend needs packages that are not installed ({exc.name}); "
            f"install them with `pip install 'pplpatterning[{extra}]' -c constraints.txt`."
        ) from exc


def sample(
    posterior: GibbsPosterior,
    *,
    backend: str = "numpyro",
    sampler: str = "nuts",
    num_chains: int = 4,
    num_draws: int = 1000,
    num_burnin: int = 500,
    step_size: float | None = None,
    batch_size: int | None = None,
    thinning: int = 1,
    loss_estimate: str = "full",
    seed: int = 0,
    progress_bar: bool = True,
    observables: Mapping[str, Callable[..., Any]] | None = None,
    keep_params: bool = True,
    probes: Probes | None = None,
    **options: Any,
) -> xr.DataTree:
    """Sample ``posterior`` and return a Trace (an ArviZ DataTree).

    Every argument is validated before anything is compiled. ``observables`` maps names to
    functions ``phi(params, xp) -> scalar`` evaluated on every kept draw (builders in
    :mod:`pplpatterning.observables`). ``probes`` (a :class:`~pplpatterning.probes.Probes`)
    adds the probe data sets' losses and the per-sample losses the susceptibility
    estimators need; their memory is checked here, before sampling. Sampler-specific
    options (``target_accept``, ``alpha``, ``diffusion``, ...) are passed as keywords; see
    :data:`pplpatterning.samplers.SAMPLERS`.
    """
    if not isinstance(posterior, GibbsPosterior):
        raise TypeError(f"`posterior` must be a GibbsPosterior, got {type(posterior).__name__}.")
    settings = SamplerSettings(
        sampler=sampler, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin,
        step_size=step_size, batch_size=batch_size, thinning=thinning, loss_estimate=loss_estimate,
        seed=seed, progress_bar=progress_bar, options=options,
    )
    settings.resolved_batch_size(posterior.n)
    if observables is not None:
        validate_observables(observables, posterior)
    plan = None
    if probes is not None:
        if not isinstance(probes, Probes):
            raise TypeError(f"`probes` must be a pplpatterning.probes.Probes, got {type(probes).__name__}.")
        plan = probes.resolve(posterior, settings)
    module = get_backend(backend)
    kwargs: dict[str, Any] = {"observables": dict(observables or {}), "keep_params": keep_params}
    if plan is not None:
        import inspect

        if "probes" not in inspect.signature(module.sample).parameters:
            raise NotImplementedError(
                f"The {backend!r} backend does not record probes yet; use backend='numpyro' for susceptibilities."
            )
        kwargs["probes"] = plan
    return module.sample(posterior, settings, **kwargs)
