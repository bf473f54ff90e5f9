"""``pplpatterning pattern``: find the data re-weighting that moves observables, and verify it.

    pplpatterning pattern --model two_solutions --model-arg p=0.7 --centre a=1 --centre b=1 \\
        --gamma 8 --observable A=model:on_solution_a --target A=0.1 --verify

Samples the posterior recording every training sample's loss, estimates the per-sample
susceptibilities χ_z (``attribution``), solves for the weights (``pattern``: s = X⁺ dμ,
ρ = 1 + α s) and prints the plan: the weights, the predicted change of every observable,
the residual, and the rank and conditioning of X. With ``--verify`` it re-samples the
re-weighted posterior and prints realized against predicted changes (``verify``).

Observables (``--observable [NAME=]SPEC``, repeatable; default ``loss`` plus one component
loss per parameter): ``loss``, ``component:NAME[,NAME]``, ``param:NAME[:I[,J]]`` (as in
``pplpatterning chi``), ``model:ATTR`` (a function ``phi(params, xp)`` named ATTR in the
module that defines the model, e.g. ``model:on_solution_a`` for ``two_solutions``) and
``python:MODULE:ATTR`` (any importable function). Targets: ``--target NAME=DELTA``.

Every argument is checked before anything is compiled or sampled. The estimators, the
solver, the sampler and the plots (xarray, matplotlib, JAX or torch) are imported inside
the functions that use them, so that building the parser stays light.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from pplpatterning.cli.arguments import (
    PLOT_FORMATS, add_command, add_posterior_args, add_sampler_args, add_strict_arg, build_posterior, finite_target,
    observables_from_specs, sample_kwargs, sampler_settings,
)
from pplpatterning.cli.output import exit_code, print_json, runs_status, status_lines

__all__ = ["add_pattern_parser", "cmd_pattern"]


def _key_value(text: str, flag: str, example: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{flag} expects NAME=VALUE, got {text!r} (e.g. {flag} {example}).")
    key, value = text.split("=", 1)
    if not key.strip():
        raise argparse.ArgumentTypeError(f"{flag} {text!r}: the name before '=' is empty.")
    return key.strip(), value.strip()


def _target_arg(text: str) -> tuple[str, float]:
    key, value = _key_value(text, "--target", "loss=-0.01")
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--target {text!r}: {value!r} is not a number.") from None


def _centre_arg(text: str) -> tuple[str, Any]:
    key, value = _key_value(text, "--centre", "a=1")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"--centre {text!r}: {value!r} is not a number or tuple.") from None


def _resolve_function(spec: str, post) -> Any:
    kind, _, rest = spec.partition(":")
    if kind == "model":
        module_name, attr = post.model.loss.__module__, rest
    else:  # python:MODULE:ATTR
        module_name, _, attr = rest.rpartition(":")
    if not module_name or not attr:
        raise ValueError(f"--observable {spec!r}: use model:ATTR or python:MODULE:ATTR.")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--observable {spec!r}: cannot import {attr!r} from {module_name!r} ({exc}).") from None
    if not callable(fn):
        raise ValueError(f"--observable {spec!r}: {module_name}.{attr} is not callable.")
    return fn


def _observables(specs: list[str], post) -> dict[str, Any]:
    """{name: phi} from [NAME=]SPEC items (see the module docstring)."""
    if not specs:
        return observables_from_specs([], post)
    out: dict[str, Any] = {}
    for item in specs:
        name, spec = (item.split("=", 1) if "=" in item else (None, item))
        if spec.startswith(("model:", "python:")):
            fn = _resolve_function(spec, post)
            label = name or spec.rsplit(":", 1)[-1]
        else:
            (label, fn), = observables_from_specs([spec], post).items()
            label = name or label
        if label in out:
            raise ValueError(f"--observable: the name {label!r} is used twice; give NAME=SPEC.")
        out[label] = fn
    return out


def _save_weights(path: Path, weights: np.ndarray) -> None:
    if path.suffix == ".npy":
        np.save(path, weights)
    else:
        np.savetxt(path, np.column_stack([np.arange(weights.size), weights]), delimiter=",",
                   header="sample,weight", comments="", fmt=["%d", "%.17g"])


def cmd_pattern(a: argparse.Namespace) -> int:
    """Sample recording per-sample losses, solve for the weights, verify (``--verify``), print; return the exit code."""
    from pplpatterning.estimators.diagnose import diagnose
    from pplpatterning.patterning.pattern import pattern
    from pplpatterning.patterning.verify import verify
    from pplpatterning.sampling.core import sample
    from pplpatterning.estimators.susceptibility import attribution

    post = _posterior(a)
    observables, targets, probes = _prepare(a, post)
    kw = {**sample_kwargs(a), "observables": observables}
    seed = kw.pop("seed")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        trace = sample(post, seed=seed, probes=probes, **kw)
    except NotImplementedError as exc:
        raise ValueError(str(exc)) from None
    seconds["sample"] = time.perf_counter() - t0
    diags = {"baseline": diagnose(trace, target=finite_target(post))}
    result: dict[str, Any] = {"model": post.model.name, "n": post.n, "n_beta": post.n_beta, "gamma": post.gamma,
                              "backend": a.backend, "sampler": a.sampler}
    t0 = time.perf_counter()
    try:
        chi = attribution(trace)
        seconds["chi"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        plan = pattern(chi, targets, fraction=a.fraction, max_weight_change=a.max_weight_change, ridge=a.ridge,
                       nonnegative=a.nonnegative, n=post.n)
    except Exception as exc:
        if not diags["baseline"].incomplete:
            raise
        return _report(result, diags, a, error=f"{type(exc).__name__}: {exc}")  # a partial run gave no plan
    seconds["pattern"] = time.perf_counter() - t0
    result["plan"] = plan.to_dict()
    check = None
    if a.verify and not diags["baseline"].incomplete:  # never re-sample on the strength of a partial run
        kw.pop("observables")
        t0 = time.perf_counter()
        check = verify(post, plan, observables=observables, baseline=trace,
                       seed=seed + 1 if a.verify_seed is None else a.verify_seed, **kw)
        seconds["verify"] = time.perf_counter() - t0
        result["verification"] = check.to_dict()
        diags["verify"] = diagnose(check.trace, target=finite_target(check.posterior))
    _write_outputs(a, post, plan, check, result)
    result["seconds"] = seconds
    if not a.json:
        _print_plan(a, post, plan, check, seconds, result)
    return _report(result, diags, a)


def _posterior(a: argparse.Namespace):
    """The posterior of the flags, its centre w* overridden by ``--centre``."""
    post = build_posterior(a)
    if a.centre:
        centre = {k: np.asarray(v, dtype=np.float64) for k, v in dict(post.centre).items()}
        for key, value in a.centre:
            if key not in centre:
                raise ValueError(f"--centre {key}=...: unknown parameter; the model has {list(centre)}.")
            centre[key] = np.broadcast_to(np.asarray(value, dtype=np.float64), centre[key].shape).copy()
        post = post.with_(centre=centre)
    return post


def _prepare(a: argparse.Namespace, post) -> tuple[dict[str, Any], dict[str, float], Any]:
    """(observables, targets, resolved Probes): every flag checked before compiling."""
    from pplpatterning.patterning.pattern import check_pattern_options
    from pplpatterning.spec.observables import validate_observables
    from pplpatterning.spec.probes import Probes

    observables = _observables(a.observable, post)
    validate_observables(observables, post)
    targets = dict(a.target)
    if len(targets) != len(a.target):
        raise ValueError("--target names an observable twice.")
    unknown = [k for k in targets if k not in observables]
    if unknown:
        raise ValueError(f"--target names observables {unknown} that are not among --observable {list(observables)}.")
    check_pattern_options(targets, fraction=a.fraction, max_weight_change=a.max_weight_change, ridge=a.ridge)
    if a.plot and not a.verify:
        raise ValueError("--plot draws realized against predicted changes; it needs --verify.")
    probes = Probes(per_sample="all", thinning=a.probe_thinning)
    probes.resolve(post, sampler_settings(a))  # shapes and memory, before compiling
    return observables, targets, probes


def _write_outputs(a: argparse.Namespace, post, plan, check, result: dict[str, Any]) -> None:
    """``--save-weights`` and (after a verification) ``--plot``; their paths go into ``result``."""
    if a.save_weights:
        _save_weights(Path(a.save_weights), plan.weights)
        result["weights_saved_to"] = str(a.save_weights)
    if a.plot and check is not None:
        from pplpatterning.plots import plot_linear_response

        tab = check.table[np.isfinite(check.table["predicted"])].reset_index()
        tab["label"] = tab["observable"]
        result["plot_saved_to"] = str(plot_linear_response(tab, a.plot, title=f"{post.model.name}: patterning"))


def _print_plan(a: argparse.Namespace, post, plan, check, seconds: dict[str, float], result: dict[str, Any]) -> None:
    print(f"model {post.model.name} (d={post.sampled_dim}, n={post.n}), nβ={post.n_beta:.4g} [{post.n_beta_source}], "
          f"γ={post.gamma:g}; {a.backend}/{a.sampler} {a.chains}×{a.draws} draws, per-sample losses every "
          f"{a.probe_thinning} draw(s)")
    print(plan)
    if check is not None:
        print()
        print(check)
    elif a.verify:
        print("\nverification skipped: the baseline run is incomplete.")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    for key in ("weights_saved_to", "plot_saved_to"):
        if key in result:
            print(f"{key.replace('_', ' ')}: {result[key]}")
    print()


def _report(result: dict[str, Any], diags: dict[str, Any], a: argparse.Namespace, error: str | None = None) -> int:
    """Print the --json result, or each run's health; return the exit code (3 incomplete, 4 with --strict)."""
    code = exit_code(*diags.values(), strict=a.strict)
    result.update(runs_status(diags), exit_code=code)
    if error:
        result["error"] = error
    if a.json:
        print_json(result)
        return code
    for name, diag in diags.items():
        print(f"{name} run:")
        print("\n".join("  " + line for line in status_lines(diag, strict=a.strict)))
    if error:
        print(f"no plan from the incomplete baseline run: {error}")
    return code


def add_pattern_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``pattern`` on the top-level parser's subparsers."""
    p = add_command(subparsers, "pattern", help="re-weight the data to move observables (patterning), and verify")
    add_posterior_args(p)
    p.add_argument("--centre", action="append", type=_centre_arg, default=[], metavar="PARAM=VALUE",
                   help="override the centre w* (the localizing prior's mean), repeatable (e.g. --centre a=1; default: the model's centre)")
    add_sampler_args(p)
    p.add_argument("--observable", action="append", default=[], metavar="[NAME=]SPEC",
                   help="loss | component:NAME[,NAME] | param:NAME[:I[,J]] | model:ATTR | python:MODULE:ATTR, "
                        "repeatable (default: loss and one component loss per parameter)")
    p.add_argument("--target", action="append", type=_target_arg, required=True, metavar="NAME=DELTA",
                   help="desired change of E[NAME], repeatable (e.g. --target A=0.1)")
    p.add_argument("--fraction", type=float, default=None, help="aim for this fraction of the target (default 1)")
    p.add_argument("--max-weight-change", type=float, default=None, metavar="C",
                   help="cap the largest weight change |ρ_j - 1| at C (scales the step; default: no cap)")
    p.add_argument("--ridge", type=float, default=0.0, help="relative ridge (times σ_max(X)²); 0 = minimum norm")
    p.add_argument("--nonnegative", action="store_true",
                   help="bounded solve keeping every weight ≥ 0 (reports the residual it had to accept)")
    p.add_argument("--probe-thinning", type=int, default=1, metavar="K",
                   help="record per-sample losses at every K-th kept draw")
    p.add_argument("--verify", action="store_true", help="re-sample with the new weights; realized vs predicted")
    p.add_argument("--verify-seed", type=int, default=None, help="seed of the re-weighted run (default --seed + 1)")
    add_strict_arg(p)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON (default: a table)")
    p.add_argument("--save-weights", metavar="PATH",
                   help="save the new weights (.npy, or .csv with sample,weight; default: not saved)")
    p.add_argument("--plot", metavar="PATH.png",
                   help="with --verify: plot realized against predicted changes (default: not drawn)")
    p.set_defaults(func=cmd_pattern, outputs={"save_weights": {".npy": None, ".csv": None}, "plot": PLOT_FORMATS})
    return p
