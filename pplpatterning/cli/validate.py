"""``pplpatterning validate``: run the repository's validation suite.

    pplpatterning validate --quick                  # the CI subset of validation/, < 5 minutes
    pplpatterning validate --cases rrr dln --backends numpyro

Runs validation/run_validation.py from the source tree (the validation suite is part of
the repository, not of the wheel), loaded only when the command runs. Every argument is
checked before anything is compiled or sampled.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from pplpatterning.cli.arguments import BACKEND_NAMES, FOLDER, add_command

__all__ = ["add_validate_parser", "cmd_validate", "load_validation_runner"]


def load_validation_runner(root: str | Path | None = None):
    """Import validation/run_validation.py from the repository at ``root``.

    Default root: the checkout this package was imported from (an editable install), else
    the current directory. Raises FileNotFoundError naming the path when it is missing.
    """
    candidates = [Path(root)] if root is not None else [Path(__file__).resolve().parents[2], Path.cwd()]
    for base in candidates:
        path = base / "validation" / "run_validation.py"
        if path.is_file():
            name = "_pplpatterning_validation_runner"
            if name in sys.modules and Path(sys.modules[name].__file__).resolve() == path.resolve():
                return sys.modules[name]
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
    tried = ", ".join(str(b / "validation" / "run_validation.py") for b in candidates)
    raise FileNotFoundError(
        f"`pplpatterning validate` runs the repository's validation suite, which is not installed with the "
        f"package; none of {tried} exists. Run it from a checkout of the repository or pass --root."
    )


def add_validate_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``pplpatterning validate``."""
    p = add_command(subparsers, "validate", help="run the validation suite (every model × backend × sampler) "
                                                 "and write validation/report.md")
    p.add_argument("--quick", action="store_true", help="the CI subset, < 5 minutes on 2 cores (default: the full run)")
    p.add_argument("--seed", type=int, default=None, help="run seed (default: the documented one)")
    p.add_argument("--out", default=None, help="directory for report.md and figures/ "
                                               "(default validation/, or validation/out/quick/ with --quick)")
    p.add_argument("--cases", nargs="+", default=None,
                   help="only these cases (see validation/settings.py; default: all)")
    p.add_argument("--backends", nargs="+", default=None, choices=BACKEND_NAMES, help="only these backends "
                                                                                      "(default: all)")
    p.add_argument("--samplers", nargs="+", default=None, help="only these samplers (default: all)")
    p.add_argument("--no-curves", action="store_true", help="skip the λ̂-against-nβ curves (default: drawn)")
    p.add_argument("--check", action="store_true", help="exit with status 1 if any row fails its check "
                                                        "(default: exit 0)")
    p.add_argument("--root", default=None, help="repository root holding validation/ (default: this checkout)")
    p.set_defaults(func=cmd_validate, outputs={"out": FOLDER})
    return p


def cmd_validate(a: argparse.Namespace) -> int:
    """Forward the flags to validation/run_validation.py's ``main``; return its exit status."""
    try:
        runner = load_validation_runner(a.root)
    except FileNotFoundError as exc:  # reported by pplpatterning.cli.main as a usage error (exit 2)
        raise ValueError(str(exc)) from None
    argv: list[str] = []
    if a.quick:
        argv.append("--quick")
    if a.seed is not None:
        argv += ["--seed", str(a.seed)]
    if a.out is not None:
        argv += ["--out", a.out]
    for flag, values in (("--cases", a.cases), ("--backends", a.backends), ("--samplers", a.samplers)):
        if values:
            argv += [flag, *values]
    if a.no_curves:
        argv.append("--no-curves")
    if a.check:
        argv.append("--check")
    return runner.main(argv)
