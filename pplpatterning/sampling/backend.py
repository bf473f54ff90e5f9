"""The backend protocol and the registry of backends by name.

A backend is a small object that knows one framework: it compiles the posterior and runs the
chains, evaluating every kept draw's record (:mod:`.record`) inside its sampling loop;
everything else (validation, the memory check, the
check at the centre, the keep-what-completed policy, the incomplete-run attrs and the
Trace) happens once, in :func:`pplpatterning.sampling.core.sample`. Backends are imported
lazily by name (``import pplpatterning`` never imports JAX or torch); each backend package
exposes its object as ``BACKEND``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pplpatterning.sampling.evaluation import Evaluation
from pplpatterning.sampling.record import DrawRecord
from pplpatterning.samplers.settings import SamplerSettings
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.spec.probes import ProbePlan

__all__ = ["Backend", "FunctionBackend", "RunResult", "BACKENDS", "get_backend", "check_backend_name", "register_backend",
           "unregister_backend"]


@dataclass
class RunResult:
    """What a backend's ``run`` returns.

    ``draws``: the kept draws per parameter name, NumPy arrays (chain, draw, ...), every
    chain with the same number of completed draws (empty unless ``run`` was asked to keep
    them); ``stats``: the sampler's per-draw
    statistics (chain, draw), in the order they should appear in ``sample_stats`` after
    ``loss`` and ``loss_delta``; ``stop_reason``: None for a complete run, else why it stopped
    early (the draws completed before that are kept); ``dtype``: the floating precision of
    the run; ``values``: the record of every completed draw, evaluated in the loop (None
    when the record asks for nothing).
    """

    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    stop_reason: str | None
    dtype: str
    seconds: float = 0.0
    values: Evaluation | None = field(default=None, repr=False)

    @property
    def num_draws(self) -> int:
        """Completed draws per chain (from the draws, or the statistics when no draw was kept)."""
        # the statistics first: the parameters may be kept at every k-th draw only
        series = self.stats or ({"loss": self.values.loss} if self.values is not None and
                                self.values.loss is not None else {}) or self.draws
        return int(next(iter(series.values())).shape[1]) if series else 0


class Backend(Protocol):
    """The methods ``sample()`` calls, in this order."""

    name: str
    #: distribution names whose versions are recorded in the Trace's attrs
    packages: tuple[str, ...]

    def evaluate_at_centre(self, posterior: GibbsPosterior, fn: Callable[..., Any]) -> np.ndarray:
        """``fn(params, consts, xp)`` once, eagerly, at w* (all parameters, backend arrays)."""

    def run(self, posterior: GibbsPosterior, settings: SamplerSettings, *, record: DrawRecord,
            plan: ProbePlan | None, keep_params: bool) -> RunResult:
        """Compile and run the chains (raise only when no draw was kept), evaluating ``record``
        at every kept draw inside the loop (:func:`pplpatterning.sampling.record.draw_values`,
        :func:`~pplpatterning.sampling.record.record_rows`; ``plan`` holds the probe data).
        The draws' parameters are stored only with ``keep_params``."""

    def potential_and_grad(self, posterior: GibbsPosterior, params: Mapping[str, Any]) -> tuple[float, dict]:
        """U(v) and ∇U(v) at one point, as the backend's samplers see them (float64 NumPy);
        used by checks and by ``calibrate``'s acceptance estimate."""

    #: Optional: ``(settings) -> (device name, free bytes)`` when the run's arrays live on an
    #: accelerator (``sample()`` checks its memory estimate against it), or None (host memory);
    #: raises ValueError naming ``device`` when ``settings.device`` is unavailable.
    device_memory: Callable[[SamplerSettings], tuple[str, int] | None] | None


@dataclass
class FunctionBackend:
    """A :class:`Backend` made of a framework's functions (what both built-in backends are):
    ``evaluate_at_centre(posterior, fn)``, ``run(posterior, settings, *, record, plan,
    keep_params)`` and ``potential_and_grad(posterior, params)``."""

    name: str
    packages: tuple[str, ...]
    evaluate_at_centre: Callable[..., np.ndarray]
    run: Callable[..., RunResult]
    potential_and_grad: Callable[..., tuple[float, dict]]
    device_memory: Callable[[SamplerSettings], tuple[str, int] | None] | None = None


_REGISTRY: dict[str, tuple[str, str]] = {
    "numpyro": ("pplpatterning.backends.numpyro", "numpyro"),
    "pyro": ("pplpatterning.backends.pyro", "pyro"),
}
#: The built-in backends' names.
BACKENDS = ("numpyro", "pyro")


def register_backend(name: str, module: str, extra: str | None = None) -> None:
    """Make ``sample(..., backend=name)`` use ``importlib.import_module(module).BACKEND``;
    ``extra`` names the pip extra that installs its dependencies (for the error message)."""
    if name in _REGISTRY:
        raise ValueError(f"A backend named {name!r} exists already; choose another `name`.")
    _REGISTRY[name] = (module, extra or name)


def unregister_backend(name: str) -> None:
    """Remove a backend added by :func:`register_backend`."""
    if name in BACKENDS:
        raise ValueError(f"{name!r} is built in and cannot be unregistered.")
    _REGISTRY.pop(name, None)


def check_backend_name(name: Any) -> str:
    """``name`` if a backend is registered under it, else a ValueError listing the names."""
    if name not in _REGISTRY:
        raise ValueError(f"`backend` must be one of {list(_REGISTRY)}, got {name!r}.")
    return name


def get_backend(name: str) -> Backend:
    """The backend object registered as ``name`` (its package imported on first use)."""
    module, extra = _REGISTRY[check_backend_name(name)]
    try:
        return importlib.import_module(module).BACKEND
    except ModuleNotFoundError as exc:
        raise ImportError(
            f"The {name!r} backend needs packages that are not installed ({exc.name}); "
            f"install them with `pip install 'pplpatterning[{extra}]' -c constraints.txt`."
        ) from exc
