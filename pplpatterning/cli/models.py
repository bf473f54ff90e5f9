"""``pplpatterning models``: list the built-in models, or describe one model's arguments.

    pplpatterning models
    pplpatterning models dln

The model zoo (which loads scipy) is imported inside the functions, so that building the
parser stays light.
"""

from __future__ import annotations

import argparse
import inspect

from pplpatterning.cli.arguments import EXIT_OK, add_command

__all__ = ["add_models_parser", "cmd_models", "zoo_table"]


def zoo_table() -> dict[str, tuple[str, str]]:
    """{name: (factory arguments, λ formula)} from the table in pplpatterning.models' docstring."""
    import pplpatterning.models as zoo

    lines = (zoo.__doc__ or "").splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("=====")]
    if len(rules) < 3:
        return {}
    spans, start = [], 0
    for chunk in lines[rules[0]].split(" "):
        if chunk:
            spans.append((start, start + len(chunk)))
        start += len(chunk) + 1
    spans[-1] = (spans[-1][0], None)
    out = {}
    for line in lines[rules[1] + 1: rules[2]]:
        cells = [line[lo:hi].strip() for lo, hi in spans]
        if cells[0]:
            out[cells[0]] = (cells[1], cells[2])
    return out


def cmd_models(a: argparse.Namespace) -> int:
    """Print every model (no NAME) or one model's docstring, arguments and λ."""
    from pplpatterning.models import MODELS

    table = zoo_table()
    if not a.name:
        width = max(map(len, MODELS))
        lam_width = max(len(lam) for _, lam in table.values()) if table else 1
        print("Built-in models (`pplpatterning models NAME` shows one's arguments):\n")
        print(f"  {'name':<{width}}  {'exact λ at the default centre':<{lam_width}}  description")
        for name, factory in MODELS.items():
            lam = table.get(name, ("", "?"))[1]
            print(f"  {name:<{width}}  {lam:<{lam_width}}  {inspect.getdoc(factory).splitlines()[0]}")
        return EXIT_OK
    if a.name not in MODELS:
        raise ValueError(f"models: unknown model {a.name!r}; valid models are: {', '.join(MODELS)}.")
    factory = MODELS[a.name]
    print(f"{a.name}: {inspect.getdoc(factory)}")
    print()
    print("arguments (pass with --model-arg KEY=VALUE):")
    for p in inspect.signature(factory).parameters.values():
        default = "required" if p.default is inspect.Parameter.empty else f"default {p.default!r}"
        print(f"  {p.name:<12} {default}")
    if a.name in table:
        print(f"\nexact λ at the default centre: {table[a.name][1]}")
    model = factory()
    print(f"with the defaults: λ = {model.lam:g}, m = {model.multiplicity}; exact finite-nβ target: "
          f"{'yes' if model.target_fn is not None else 'none'}")
    return EXIT_OK


def add_models_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``models`` on the top-level parser's subparsers."""
    p = add_command(subparsers, "models", help="list the built-in models, or one model's arguments")
    p.add_argument("name", nargs="?", default=None, metavar="NAME",
                   help="a model to describe (default: list every model)")
    p.set_defaults(func=cmd_models)
    return p
