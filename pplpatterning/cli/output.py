"""What every command reports about run health: the ``--json`` status fields, the exit code,
and the human summary of :func:`~pplpatterning.diagnose`'s findings.

Every ``--json`` output carries ``incomplete``, ``incomplete_reason`` and ``findings``
(finding codes; see :func:`pplpatterning.diagnose`). Imports only the stdlib and
:mod:`pplpatterning.cli.arguments`; the diagnoses are passed in.
"""

from __future__ import annotations

import json
from typing import Any

from pplpatterning.cli.arguments import EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_OK

__all__ = ["trace_status", "runs_status", "exit_code", "status_lines", "format_number", "print_json"]


def trace_status(diag) -> dict[str, Any]:
    """The fields every --json output carries, from a :class:`~pplpatterning.Diagnosis`."""
    return {
        "incomplete": bool(diag.incomplete),
        "incomplete_reason": diag.incomplete_reason,
        "findings": [f.code for f in diag.findings],
        "diagnosis": diag.to_dict(),
    }


def runs_status(diags: dict[str, Any]) -> dict[str, Any]:
    """The --json fields of a command with several runs: any incomplete, the union of the codes, each run's own."""
    reasons = [f"{name}: {d.incomplete_reason}" for name, d in diags.items() if d.incomplete]
    codes = [f.code for d in diags.values() for f in d.findings]
    return {
        "incomplete": bool(reasons),
        "incomplete_reason": "; ".join(reasons) or None,
        "findings": sorted(set(codes), key=codes.index),
        "runs": {name: trace_status(d) for name, d in diags.items()},
    }


def exit_code(*diags, strict: bool = True) -> int:
    """3 when any run is incomplete, 4 (if ``strict``) on any error or warning finding, else 0."""
    if any(d.incomplete for d in diags):
        return EXIT_INCOMPLETE
    if strict and not all(d.ok for d in diags):
        return EXIT_FINDINGS
    return EXIT_OK


def status_lines(diag, *, strict: bool = True) -> list[str]:
    """Human summary: incompleteness first, then every finding; 'healthy' only when there is neither."""
    lines = []
    if diag.incomplete:
        lines.append(f"INCOMPLETE RUN (exit {EXIT_INCOMPLETE}): {diag.incomplete_reason}; the results use only "
                     "the draws that were made.")
    problems = [f for f in diag.findings if f.severity in ("error", "warning")]
    if problems:
        codes = ", ".join(f.code for f in problems)
        tail = f" (exit {EXIT_FINDINGS})" if strict and not diag.incomplete else ""
        lines.append(f"PROBLEMS FOUND{tail}: {codes}")
    lines.extend(f"  {f}" for f in diag.findings)
    if not lines:
        lines.append("healthy: diagnose() found no problems.")
    return lines


def format_number(x: float | None, spec: str = ".4f") -> str:
    """``x`` formatted with ``spec``, or "—" when it is None or NaN."""
    return "—" if x is None or x != x else format(x, spec)


def print_json(result: Any) -> None:
    """Print ``result`` as indented JSON (numpy scalars as floats)."""
    print(json.dumps(result, indent=2, default=float))
