"""Argument pieces every command shares: exit codes, the help formatter, the posterior and
sampler flags, ``KEY=VALUE`` parsing, the output-path checks, and building the posterior
(and the sampler settings) from the parsed arguments.

Exit codes (the same for every command):

====  ==========================================================================
0     healthy
1     unexpected error (a traceback)
2     bad usage or bad input: a one-line message on stderr, before any sampling
3     the run is incomplete (interrupted, stopped, evaluation failed); what was
      sampled is still saved when ``--save`` was given
4     the run completed but ``diagnose()`` reports an error or warning (stuck,
      diverged, off target, R-hat, ...); ``llc`` always, ``compare``, ``chi`` and
      ``pattern`` with ``--strict``
====  ==========================================================================

Module-level imports stay light (stdlib and pplpatterning's dependency-free modules) so that
``pplpatterning --help`` starts in well under a second. The model zoo (scipy), the posterior
and observables (xarray, pandas) and the comparison workflow are imported inside the
functions that need them: the legitimate kind of function-level import, used throughout
the cli modules.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
from pathlib import Path
from typing import Any

from pplpatterning.samplers.settings import SAMPLERS, SamplerSettings

__all__ = [
    "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INCOMPLETE", "EXIT_FINDINGS", "BACKEND_NAMES", "TRACE_FORMATS",
    "CSV_FORMAT", "PLOT_FORMATS", "FOLDER", "HelpFormatter", "add_command", "key_value_arg", "literal_or_text",
    "model_name_arg", "add_posterior_args", "add_sampler_args", "add_strict_arg", "is_installed", "check_output_path",
    "check_output_folder", "check_outputs", "build_posterior", "finite_target", "sample_kwargs", "sampler_settings",
    "observables_from_specs",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_FINDINGS = 4

# The names of pplpatterning.sampling.core.BACKENDS, repeated here because importing
# pplpatterning.sampling.core loads xarray; tests/test_cli_trust.py checks that they agree.
BACKEND_NAMES = ("numpyro", "pyro")

# Output formats: suffix -> the package that writes it (None: always available).
TRACE_FORMATS = {".nc": "netCDF4", ".zarr": "zarr"}
CSV_FORMAT = {".csv": None}
PLOT_FORMATS = {".png": "matplotlib"}
FOLDER = None  # an output folder (created if missing) instead of a file


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to every flag's help unless the help already says its default.

    Switches get "(default: off)". Flags whose default is ``None`` or an empty repeatable
    list must explain it in their own words; tests/test_cli_trust.py checks that every flag
    has help and states its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if isinstance(action, argparse._StoreTrueAction) and "default" not in text.lower():
            return text + " (default: off)"
        d = action.default
        if "default" in text.lower() or action.required or d is None or d is False or d is argparse.SUPPRESS or d == []:
            return text
        return super()._get_help_string(action)


def add_command(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """``subparsers.add_parser`` with the project's help formatter."""
    return subparsers.add_parser(name, formatter_class=HelpFormatter, **kwargs)


# ----------------------------------------------------------------------- arguments
def key_value_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, value), the value read as a Python literal when it is one, else kept as text.

    The argparse ``type`` of ``--model-arg``, ``--option`` and the per-sampler ``SAMPLER=VALUE`` flags.
    """
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--model-arg expects KEY=VALUE, got {text!r} (e.g. --model-arg d=3).")
    key, value = text.split("=", 1)
    return key.strip(), literal_or_text(value)


def literal_or_text(text: str) -> Any:
    """``text`` read as a Python literal (number, tuple, ...) when it is one, else ``text`` itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def model_name_arg(text: str) -> str:
    """A built-in model name (checked here rather than by ``choices``, which argparse would list in
    ``--help`` by importing the zoo, and with it scipy: too slow for ``--help``)."""
    from pplpatterning.models import MODELS

    if text not in MODELS:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(sorted(MODELS))}; "
                                         "`pplpatterning models` describes them).")
    return text


def add_posterior_args(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--model-arg``, ``--n``, ``--data-seed``, ``--n-beta``, ``--gamma`` (see :func:`build_posterior`)."""
    p.add_argument("--model", required=True, type=model_name_arg, metavar="NAME",
                   help="built-in model (required; `pplpatterning models` lists them and their arguments)")
    p.add_argument("--model-arg", action="append", type=key_value_arg, default=[], metavar="KEY=VALUE",
                   help="model factory argument, repeatable (e.g. --model-arg d=3; default: the factory's defaults, "
                        "see `pplpatterning models NAME`)")
    p.add_argument("--n", type=int, default=1000, help="number of data points")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data generator")
    p.add_argument("--n-beta", type=float, default=None, help="nβ (default n/log n, the WBIC temperature)")
    p.add_argument("--gamma", type=float, default=1.0, help="localization strength γ (0 = none)")


def add_sampler_args(p: argparse.ArgumentParser) -> None:
    """The flags of one sampling run (see :func:`sample_kwargs` and :func:`sampler_settings`)."""
    p.add_argument("--backend", default="numpyro", choices=BACKEND_NAMES, help="framework that runs the chains")
    p.add_argument("--sampler", default="nuts", choices=sorted(SAMPLERS), help="MCMC sampler")
    p.add_argument("--chains", type=int, default=4, help="number of chains")
    p.add_argument("--draws", type=int, default=1000, help="kept draws per chain")
    p.add_argument("--burnin", type=int, default=500, help="burn-in steps per chain (never in the estimate)")
    p.add_argument("--step-size", type=float, default=None,
                   help="step size ε (default: adapted for NUTS/HMC/MALA, 1e-4 for SG samplers)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size of SG samplers (default min(n, 256))")
    p.add_argument("--thinning", type=int, default=1, help="keep every K-th step")
    p.add_argument("--loss-estimate", default="full", choices=["full", "minibatch", "subset"],
                   help="per-draw loss: full-batch L_n, the SG sampler's own minibatch estimate, or L on a fixed "
                        "random subset of --eval-size rows (default full)")
    p.add_argument("--eval-size", type=int, default=None, metavar="M",
                   help="rows of the evaluation subset with --loss-estimate subset (default min(n, 1024))")
    p.add_argument("--option", action="append", type=key_value_arg, default=[], metavar="KEY=VALUE",
                   help="sampler option, repeatable (e.g. --option target_accept=0.9; default: the sampler's "
                        "defaults in pplpatterning.SAMPLERS)")
    p.add_argument("--seed", type=int, default=0, help="run seed (the same seed gives the same trace)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                   help="precision of the parameters and passes (float32: MALA and SG samplers; loss differences "
                        "stay float64; default float64)")
    p.add_argument("--forward-dtype", default=None, choices=["bfloat16"],
                   help="mixed precision: the loss's forward and backward passes in bfloat16 around float32 "
                        "positions (needs --dtype float32; for accelerators; default: the --dtype)")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="where the chains run: cpu, gpu/cuda, cuda:1 (default: the framework's default device)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown unless --json)")


def add_strict_arg(p: argparse.ArgumentParser) -> None:
    """``--strict``: exit 4 on any error or warning finding."""
    p.add_argument("--strict", action="store_true",
                   help="exit 4 when diagnose() reports an error or warning (default: report it, exit 0)")


# ---------------------------------------------------------------- output paths
def is_installed(package: str) -> bool:
    """Whether ``package`` can be imported (found without importing it)."""
    return importlib.util.find_spec(package) is not None


def check_output_path(path: str, flag: str, formats: dict[str, str | None]) -> Path:
    """Refuse (ValueError naming ``flag``) a path that cannot be written in a supported format.

    Checks, before any sampling: the suffix is one of ``formats``, the package that writes
    it is installed, the path is not an existing folder (a ``.zarr`` store is one), its
    folder exists and is writable, and an existing file is writable.
    """
    p = Path(path)
    suffix = p.suffix
    if suffix not in formats:
        raise ValueError(f"{flag} {path!r}: use a file ending in {' or '.join(formats)}.")
    package = formats[suffix]
    if package is not None and not is_installed(package):
        other = [s for s, pkg in formats.items() if pkg is None or is_installed(pkg)]
        hint = f"use {' or '.join(other)}, or " if other else ""
        raise ValueError(f"{flag} {path!r}: writing {suffix} needs the {package!r} package, which is not installed; "
                         f"{hint}`pip install {package}`.")
    if p.is_dir() and suffix != ".zarr":
        raise ValueError(f"{flag} {path!r} is a folder; give a file name (e.g. {str(p / ('out' + suffix))!r}).")
    if p.exists() and not p.is_dir() and suffix == ".zarr":
        raise ValueError(f"{flag} {path!r} is a file; a .zarr store is a folder.")
    folder = p.parent
    if not folder.is_dir():
        raise ValueError(f"{flag} {path!r}: the folder {str(folder)!r} does not exist; create it first.")
    if not os.access(folder, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"{flag} {path!r}: not writable (check the permissions of {str(folder)!r}).")
    return p


def check_output_folder(path: str, flag: str) -> Path:
    """Refuse (ValueError naming ``flag``) a folder that is a file or cannot be created or written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {path!r} is a file; give a folder.")
    existing = next(q for q in (p, *p.resolve().parents) if q.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path!r}: cannot write into {str(existing)!r} (check its permissions).")
    return p


def check_outputs(a: argparse.Namespace) -> None:
    """Check every output path of the command (its ``outputs`` default: dest -> formats, or FOLDER)."""
    seen: dict[Path, str] = {}
    for dest, formats in getattr(a, "outputs", {}).items():
        path = getattr(a, dest, None)
        if not path:
            continue
        flag = "--" + dest.replace("_", "-")
        if formats is FOLDER:
            check_output_folder(path, flag)
            continue
        resolved = check_output_path(path, flag, formats).resolve()
        if resolved in seen:
            raise ValueError(f"{flag} and {seen[resolved]} name the same file {path!r}; give two different paths.")
        seen[resolved] = flag


# ---------------------------------------------------------------- posterior and run
def build_posterior(a: argparse.Namespace):
    """The :class:`~pplpatterning.GibbsPosterior` of :func:`add_posterior_args`' flags (data generated here)."""
    from pplpatterning.spec.posterior import GibbsPosterior
    from pplpatterning.models import get_model

    model = get_model(a.model, **dict(a.model_arg))
    if a.n < 2:
        raise ValueError(f"--n must be at least 2, got {a.n}.")
    data = model.generate(a.n, seed=a.data_seed)
    return GibbsPosterior(model, data, n_beta=a.n_beta, gamma=a.gamma)


def finite_target(post) -> float | None:
    """The exact finite-nβ λ target of ``post``, or None when the model has none."""
    from pplpatterning.workflows.compare import target_or_none  # lazy: keeps `--help` light

    return target_or_none(post)


def sample_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``sample()`` from :func:`add_sampler_args`' flags (progress bar off with --json)."""
    return dict(backend=a.backend, sampler=a.sampler, num_chains=a.chains, num_draws=a.draws, num_burnin=a.burnin,
                step_size=a.step_size, batch_size=a.batch_size, thinning=a.thinning, loss_estimate=a.loss_estimate,
                seed=a.seed, dtype=a.dtype, forward_dtype=a.forward_dtype, eval_size=a.eval_size, device=a.device,
                progress_bar=not (a.no_progress or a.json), **dict(a.option))


def sampler_settings(a: argparse.Namespace) -> SamplerSettings:
    """The :class:`~pplpatterning.SamplerSettings` of :func:`add_sampler_args`' flags (to resolve probes early)."""
    return SamplerSettings(sampler=a.sampler, num_chains=a.chains, num_draws=a.draws, num_burnin=a.burnin,
                           step_size=a.step_size, batch_size=a.batch_size, thinning=a.thinning,
                           loss_estimate=a.loss_estimate, seed=a.seed, options=dict(a.option), dtype=a.dtype,
                           eval_size=a.eval_size, device=a.device, forward_dtype=a.forward_dtype)


def observables_from_specs(specs: list[str], post) -> dict[str, Any]:
    """{label: phi} from ``--observable`` specs: ``loss``, ``component:NAME[,NAME]``, ``param:NAME[:I[,J]]``.

    No specs: ``loss`` plus one component loss per parameter (when there are several).
    """
    from pplpatterning.spec.observables import component_loss, full_loss, param

    shapes = post.model.param_shapes
    if not specs:
        specs = ["loss"] + ([f"component:{p}" for p in shapes] if len(shapes) > 1 else [])
    out: dict[str, Any] = {}
    for spec in specs:
        kind, _, rest = spec.partition(":")
        if kind == "loss" and not rest:
            out["loss"] = full_loss(post)
        elif kind == "component" and rest:
            names = [s.strip() for s in rest.split(",")]
            out["loss_" + "_".join(names)] = component_loss(post, names)
        elif kind == "param" and rest:
            name, _, idx = rest.partition(":")
            index = tuple(int(i) for i in idx.split(",")) if idx else None
            label = name + ("_" + "_".join(map(str, index)) if index else "")
            out[label] = param(name, index)
        else:
            raise ValueError(f"--observable {spec!r}: use 'loss', 'component:NAME[,NAME]' or 'param:NAME[:I[,J]]'.")
    return out
