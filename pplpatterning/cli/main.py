"""Command line: ``pplpatterning llc --model product --backend numpyro --sampler nuts``.

This module only builds the parser from the commands and dispatches; each command lives in
its own module (:mod:`~pplpatterning.cli.llc`, :mod:`~pplpatterning.cli.compare`,
:mod:`~pplpatterning.cli.models`, :mod:`~pplpatterning.cli.chi`,
:mod:`~pplpatterning.cli.pattern`, :mod:`~pplpatterning.cli.validate`,
:mod:`~pplpatterning.cli.calibrate`), the arguments they share in
:mod:`pplpatterning.cli.arguments` and the run-health report in :mod:`pplpatterning.cli.output`.

Every argument, output paths included, is checked before anything is compiled or sampled.

Exit codes (the same for every command; see :mod:`pplpatterning.cli.arguments`): 0 healthy,
1 unexpected error, 2 bad usage or bad input (before any sampling), 3 incomplete run, 4
``diagnose()`` found an error or warning (``llc`` always, others with ``--strict``).

Importing this module and building the parser stay light so that ``pplpatterning --help``
starts in well under a second: xarray, pandas, scipy, matplotlib, JAX and torch are imported
inside the command functions that need them.
"""

from __future__ import annotations

import argparse
import sys

from pplpatterning.cli import calibrate, chi, compare, llc, models, pattern, validate
from pplpatterning.cli.arguments import (
    EXIT_ERROR, EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, check_outputs,
)

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INCOMPLETE", "EXIT_FINDINGS"]

# Each command module's ``add_<command>_parser``, in the order of ``pplpatterning --help``.
COMMANDS = (
    llc.add_llc_parser, compare.add_compare_parser, models.add_models_parser, chi.add_chi_parser,
    pattern.add_pattern_parser, validate.add_validate_parser, calibrate.add_calibrate_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``pplpatterning`` parser with every command of :data:`COMMANDS`."""
    p = argparse.ArgumentParser(
        prog="pplpatterning", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="SLT estimators (LLC, susceptibilities, patterning) on NumPyro and Pyro.",
        epilog="exit codes: 0 healthy, 1 unexpected error, 2 bad input (before any sampling), 3 incomplete run, "
               "4 diagnose() found problems (llc; others with --strict).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in COMMANDS:
        add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), check the output paths, run the command; return the exit code."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        check_outputs(a)  # before building the posterior or sampling
        return a.func(a)
    except BrokenPipeError:  # e.g. `pplpatterning llc ... --json | head`
        sys.stderr.close()
        return EXIT_OK
    except (ValueError, TypeError, ImportError) as exc:
        message = " ".join(str(exc).split())  # one line
        print(f"pplpatterning {a.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
