"""``pplpatterning chi``: susceptibilities of a built-in model, with error bars.

    pplpatterning chi --model regular --model-arg d=3 --probe shift:w_true=(1,0,0) \\
        --probe head:rows=0-99 --observable loss --observable param:w:0 --per-sample all \\
        --save-matrix chi.csv --plot pcs.png

Probes (``--probe NAME[:KEY=VALUE...]``, repeatable):

- ``NAME``: fresh data from the model's own generator (same distribution, new seed);
- ``rows=I-J``: the training rows I..J-1 (a sub-population of the training set);
- ``n=N``, ``seed=S``: size and seed of generated probe data (defaults: --n, a new seed);
- ``file=PATH.npz``: arrays from an .npz file with the training data's keys;
- any other ``KEY=VALUE``: a model factory argument for the probe's generator, e.g.
  ``w_true=(1,0)`` or ``sigma=2`` (data from a shifted distribution q').

Observables (``--observable``, repeatable; default ``loss`` plus one component loss per
parameter): ``loss`` (L(w) - L(w*)), ``component:NAME[,NAME]`` (the component loss of
those parameters), ``param:NAME[:I[,J...]]`` (one coordinate).

Every argument is checked before anything is compiled or sampled. The estimators, the
sampler, the model zoo and the plots (xarray, scipy, matplotlib, JAX or torch) are
imported inside the functions that use them, so that building the parser stays light.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from pplpatterning.cli.arguments import (
    PLOT_FORMATS, TRACE_FORMATS, add_command, add_posterior_args, add_sampler_args, add_strict_arg, build_posterior,
    finite_target, literal_or_text, observables_from_specs, sample_kwargs, sampler_settings,
)
from pplpatterning.cli.output import exit_code, print_json, status_lines, trace_status

__all__ = ["add_chi_parser", "cmd_chi"]


def _probe_arg(text: str) -> tuple[str, dict[str, Any]]:
    name, *items = text.split(":")
    if not name or "/" in name:
        raise argparse.ArgumentTypeError(f"--probe needs NAME[:KEY=VALUE...], got {text!r}.")
    opts = {}
    for item in items:
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"--probe {text!r}: {item!r} is not KEY=VALUE (e.g. rows=0-99, n=200).")
        key, value = item.split("=", 1)
        opts[key.strip()] = value if key.strip() in ("rows", "file") else literal_or_text(value)
    return name, opts


def _index_list(text: str, n: int, what: str) -> np.ndarray:
    """'all', 'I-J' (I..J-1) or 'i,j,k' → indices."""
    if text == "all":
        return np.arange(n)
    try:
        if "-" in text:
            lo, hi = (int(t) for t in text.split("-", 1))
            return np.arange(lo, hi)
        return np.array([int(t) for t in text.split(",")])
    except ValueError:
        raise ValueError(f"{what} must be 'all', 'I-J' or 'i,j,k', got {text!r}.") from None


def _probe_data(a: argparse.Namespace, post, k: int, name: str, opts: dict[str, Any]) -> dict[str, np.ndarray]:
    from pplpatterning.models import get_model

    if "rows" in opts:
        extra = set(opts) - {"rows"}
        if extra:
            raise ValueError(f"--probe {name}: rows= takes no other keys, got {sorted(extra)}.")
        idx = _index_list(opts["rows"], post.n, f"--probe {name}: rows")
        if idx.size == 0 or idx.min() < 0 or idx.max() >= post.n:
            raise ValueError(f"--probe {name}: rows must lie in [0, {post.n}), got {opts['rows']!r}.")
        return {key: v[idx] for key, v in post.data.items()}
    if "file" in opts:
        path = Path(opts["file"])
        if not path.exists():
            raise ValueError(f"--probe {name}: no file {str(path)!r}.")
        with np.load(path) as f:
            return {key: f[key] for key in f.files}
    size = int(opts.pop("n", a.n))
    seed = int(opts.pop("seed", a.data_seed + 1000 + k))
    if size < 1:
        raise ValueError(f"--probe {name}: n must be positive, got {size}.")
    model = get_model(a.model, **{**dict(a.model_arg), **opts}) if opts else post.model
    return model.generate(size, seed=seed)


def _fmt_pm(x: float, se: float) -> str:
    return f"{x: .4e} ± {se:.1e}"


def cmd_chi(a: argparse.Namespace) -> int:
    """Sample with probes, estimate χ (and χ_z with --per-sample), write the outputs, print; return the exit code."""
    from pplpatterning.estimators.diagnose import diagnose
    from pplpatterning.sampling.core import sample
    from pplpatterning.estimators.susceptibility import attribution, susceptibility
    from pplpatterning.trace.io import save_trace

    post = build_posterior(a)
    observables, per_sample, probes = _probes(a, post)
    t0 = time.perf_counter()
    try:
        trace = sample(post, observables=observables, probes=probes, **sample_kwargs(a))
    except NotImplementedError as exc:
        raise ValueError(str(exc)) from None
    wall = time.perf_counter() - t0
    saved = str(save_trace(trace, a.save)) if a.save else None  # before anything that could fail
    diag = diagnose(trace, target=finite_target(post))
    code = exit_code(diag, strict=a.strict)
    result: dict[str, Any] = {
        "model": post.model.name, "backend": a.backend, "sampler": a.sampler, "n": post.n,
        "n_beta": post.n_beta, "gamma": post.gamma, "wall_seconds": wall, **trace_status(diag), "exit_code": code,
    }
    if saved:
        result["saved_to"] = saved
    try:
        chi = susceptibility(trace)
        att = attribution(trace) if per_sample is not None else None
    except Exception as exc:
        if not diag.incomplete:
            raise
        return _report_unusable(result, diag, exc, a)  # an incomplete trace may not support χ
    result["chi"] = chi.to_dataframe().reset_index().to_dict(orient="records")
    every = att is not None and att.sizes["sample"] == post.n  # Σ_z χ_z = 0 holds over the whole training set
    if every:
        result["sum_chi_z"] = {k: float(att["chi"].sel(observable=k).sum()) for k in att.observable.values}
    _write_outputs(a, post, att if att is not None else chi, result)
    if a.json:
        print_json(result)
        return code
    if diag.incomplete:
        print(status_lines(diag)[0])
    print(f"model {post.model.name} (d={post.sampled_dim}, n={post.n}), nβ={post.n_beta:.4g} "
          f"[{post.n_beta_source}], γ={post.gamma:g}; {a.backend}/{a.sampler} {a.chains}×{a.draws} draws, "
          f"{wall:.1f} s")
    _print_estimates(chi, att, every)
    for key in ("saved_to", "matrix_saved_to", "plot_saved_to"):
        if key in result:
            print(f"{key.replace('_', ' ')}: {result[key]}")
    print()
    print("\n".join(status_lines(diag, strict=a.strict)))
    return code


def _probes(a: argparse.Namespace, post) -> tuple[dict[str, Any], np.ndarray | None, Any]:
    """(observables, per-sample indices, resolved Probes) from the flags, every one checked before compiling."""
    from pplpatterning.spec.observables import validate_observables
    from pplpatterning.spec.probes import Probes

    probe_specs = list(a.probe) or [("fresh", {})]
    names = [n for n, _ in probe_specs]
    if len(set(names)) != len(names):
        raise ValueError(f"--probe names must be distinct, got {names}.")
    datasets = {name: _probe_data(a, post, k, name, dict(opts)) for k, (name, opts) in enumerate(probe_specs)}
    observables = observables_from_specs(a.observable, post)
    validate_observables(observables, post)
    per_sample = None if a.per_sample is None else _index_list(a.per_sample, post.n, "--per-sample")
    held = post.model.generate(a.held_out, seed=a.data_seed + 999) if a.held_out else None
    probes = Probes(datasets=datasets, per_sample=per_sample, held_out=held, thinning=a.probe_thinning,
                    stream={"auto": "auto", "yes": True, "no": False}[a.stream])
    if a.plot:
        rows = len(datasets) if per_sample is None else per_sample.size
        if rows < 2 or len(observables) < 2:
            raise ValueError(f"--plot needs at least 2 rows (probes, or --per-sample samples) and 2 observables; "
                             f"got {rows} and {len(observables)}.")
    probes.resolve(post, sampler_settings(a))  # memory and shapes, before compiling
    return observables, per_sample, probes


def _write_outputs(a: argparse.Namespace, post, matrix_source, result: dict[str, Any]) -> None:
    """``--save-matrix`` and ``--plot`` (of the per-sample matrix when recorded); their paths go into ``result``."""
    from pplpatterning.estimators.response import principal_directions, response_matrix

    if a.save_matrix:
        path = Path(a.save_matrix)
        if path.suffix == ".csv":
            matrix_source[["chi", "se", "jacobian", "jacobian_se"]].to_dataframe().to_csv(path)
        else:
            matrix_source.to_netcdf(path)
        result["matrix_saved_to"] = str(path)
    if a.plot:
        from pplpatterning.plots import plot_principal_directions

        pcs = principal_directions(response_matrix(matrix_source))
        result["plot_saved_to"] = str(plot_principal_directions(pcs, a.plot, title=f"{post.model.name}: principal "
                                                                "susceptibility directions"))


def _print_estimates(chi, att, every: bool) -> None:
    """The χ and J table, then each observable's largest per-sample χ_z."""
    print("χ = -Cov(φ, ΔL), J = nβ·χ = d/dh E_h[φ]; ± standard errors from the ESS of (φ-φ̄)(ΔL-ΔL̄)")
    header = f"{'probe':<12} {'observable':<16} {'χ ± se':<24} {'J ± se':<24} {'ESS':>8}"
    print(header)
    print("-" * len(header))
    for p in chi.probe.values:
        for o in chi.observable.values:
            r = chi.sel(probe=p, observable=o)
            print(f"{str(p):<12} {str(o):<16} {_fmt_pm(float(r.chi), float(r.se)):<24} "
                  f"{_fmt_pm(float(r.jacobian), float(r.jacobian_se)):<24} {float(r.ess):>8.0f}")
    if att is None:
        return
    print(f"\nper-sample χ_z over {att.sizes['sample']} training samples "
          f"({att.attrs['num_draws']} draws per chain); largest |χ_z|/se:")
    for o in att.observable.values:
        sel = att.sel(observable=o)
        z = np.abs(sel.chi.values) / np.where(sel.se.values > 0, sel.se.values, np.inf)
        top = np.argsort(-z)[:5]
        items = ", ".join(f"z{int(sel['sample'].values[i])}: {float(sel.chi.values[i]):.3e}" for i in top)
        total = f"   (Σ_z χ_z = {float(sel.chi.sum()):.1e})" if every else ""
        print(f"  {str(o):<16} {items}{total}")


def _report_unusable(result: dict[str, Any], diag, exc: Exception, a: argparse.Namespace) -> int:
    """An incomplete run whose draws do not support the estimates: say so, exit 3."""
    result["error"] = f"{type(exc).__name__}: {exc}"
    if a.json:
        print_json(result)
    else:
        print("\n".join(status_lines(diag, strict=a.strict)))
        print(f"no estimates from the incomplete trace: {result['error']}")
        if "saved_to" in result:
            print(f"saved to: {result['saved_to']}")
    return result["exit_code"]


def add_chi_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``chi`` on the top-level parser's subparsers."""
    p = add_command(subparsers, "chi", help="susceptibilities χ of a built-in model, with error bars")
    add_posterior_args(p)
    add_sampler_args(p)
    p.add_argument("--probe", action="append", type=_probe_arg, default=[], metavar="NAME[:KEY=VALUE...]",
                   help="probe data set, repeatable: fresh data (NAME), training rows (NAME:rows=0-99), a shifted "
                        "generator (NAME:w_true=(1,0)), or NAME:file=data.npz; default one fresh probe")
    p.add_argument("--observable", action="append", default=[], metavar="SPEC",
                   help="loss | component:NAME[,NAME] | param:NAME[:I[,J]], repeatable "
                        "(default: loss and one component loss per parameter)")
    p.add_argument("--per-sample", metavar="all|I-J|i,j,k", default=None,
                   help="record per-sample losses of these training samples (per-sample χ_z; default: none)")
    p.add_argument("--held-out", type=int, default=0, metavar="N", help="also record N fresh held-out points (0 = none)")
    p.add_argument("--probe-thinning", type=int, default=1, metavar="K",
                   help="record per-sample losses at every K-th kept draw")
    p.add_argument("--stream", default="auto", choices=["auto", "yes", "no"],
                   help="stream the per-sample losses into float64 batch sums (memory independent of --draws) "
                        "instead of storing them (default auto: stream beyond 256 MiB)")
    add_strict_arg(p)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON (default: a table)")
    p.add_argument("--save", metavar="PATH", help="save the trace (.nc, or .zarr with zarr installed; default: not saved)")
    p.add_argument("--save-matrix", metavar="PATH",
                   help="save the response matrix (.csv, or .nc with errors; default: not saved)")
    p.add_argument("--plot", metavar="PATH.png",
                   help="plot the first two principal susceptibility directions (per-sample matrix if recorded; "
                        "default: not drawn)")
    p.set_defaults(func=cmd_chi, outputs={"save": TRACE_FORMATS, "save_matrix": {".csv": None, ".nc": None},
                                          "plot": PLOT_FORMATS})
    return p
