"""``pplpatterning llc``: the local learning coefficient λ̂ of a built-in model.

    pplpatterning llc --model product --backend numpyro --sampler nuts --save trace.nc

Prints λ̂ ± MCSE against the exact λ and the finite-nβ target, and exits 4 when
``diagnose()`` reports an error or warning (3 when the run is incomplete). The sampler,
the estimators and the trace writer (xarray, arviz, JAX or torch) are imported inside
:func:`cmd_llc`, so that building the parser stays light.
"""

from __future__ import annotations

import argparse
import time

from pplpatterning.cli.arguments import (
    TRACE_FORMATS, add_command, add_posterior_args, add_sampler_args, build_posterior, finite_target, sample_kwargs,
)
from pplpatterning.cli.output import exit_code, format_number, print_json, status_lines, trace_status

__all__ = ["add_llc_parser", "cmd_llc"]


def cmd_llc(a: argparse.Namespace) -> int:
    """Sample, save (``--save``), diagnose and print λ̂; return the exit code."""
    from pplpatterning.estimators.diagnose import diagnose
    from pplpatterning.sampling.core import sample
    from pplpatterning.trace.io import save_trace

    post = build_posterior(a)
    target = finite_target(post)
    t0 = time.perf_counter()
    trace = sample(post, **sample_kwargs(a))
    wall = time.perf_counter() - t0
    saved = str(save_trace(trace, a.save)) if a.save else None  # before anything that could fail
    diag = diagnose(trace, target=target)
    est = diag.estimate
    code = exit_code(diag)
    result = {
        "model": post.model.name, "backend": a.backend, "sampler": a.sampler,
        "lambda_exact": post.model.lam, "multiplicity": post.model.multiplicity,
        "target_finite_nbeta": target, "z": diag.z, **est.to_dict(), "n": post.n,
        "n_beta_source": post.n_beta_source, "wall_seconds": wall, **trace_status(diag), "exit_code": code,
    }
    if saved:
        result["saved_to"] = saved
    if a.json:
        print_json(result)
        return code
    _print_table(a, post, diag, target, wall, saved)
    return code


def _print_table(a: argparse.Namespace, post, diag, target: float | None, wall: float, saved: str | None) -> None:
    est = diag.estimate
    lam = "—" if post.model.lam is None else f"{post.model.lam:g} (m={post.model.multiplicity})"
    rows = [
        ("model", f"{post.model.name}  (d={post.sampled_dim}, n={post.n})"),
        ("posterior", f"nβ={post.n_beta:.4g} [{post.n_beta_source}], γ={post.gamma:g}"),
        ("sampler", f"{a.backend}/{a.sampler}, {est.num_chains} chains × {est.num_draws} draws, "
                    f"burn-in {a.burnin}, loss: {est.loss_estimate}"),
        ("exact λ", lam),
        ("finite-nβ target", format_number(target)),
        ("λ̂ ± MCSE", f"{est.llc:.4f} ± {est.mcse:.4f}"),
        ("z vs target", format_number(diag.z, "+.2f")),
        ("per chain", ", ".join(f"{v:.3f}" for v in est.per_chain)),
        ("R-hat", f"{est.rhat:.3f}"),
        ("ESS bulk / tail", f"{est.ess_bulk:.0f} / {est.ess_tail:.0f}"),
        ("wall time", f"{wall:.2f} s"),
    ]
    if saved:
        rows.append(("trace saved", saved))
    if diag.incomplete:
        print(status_lines(diag)[0])
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print()
    print("\n".join(status_lines(diag)))


def add_llc_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``llc`` on the top-level parser's subparsers."""
    p = add_command(subparsers, "llc", help="estimate the local learning coefficient of a built-in model")
    add_posterior_args(p)
    add_sampler_args(p)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON (default: a table)")
    p.add_argument("--save", metavar="PATH", help="save the trace (.nc, or .zarr with zarr installed; "
                                                  "default: not saved)")
    p.set_defaults(func=cmd_llc, outputs={"save": TRACE_FORMATS})
    return p
