"""The package's layers (issue 10): no import cycle inside pplpatterning/, nothing after the
Trace imports JAX or torch, no private name imported across modules, and the recipes of
docs/architecture.md work (a throwaway sampler registered here runs on both backends)."""

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pplpatterning.samplers.langevin import langevin_step
from pplpatterning.samplers.registry import register_sampler, unregister_sampler
from pplpatterning.samplers.rule import Rule, grad_norm
from pplpatterning.samplers.sgld import MinibatchInfo, SGLDState
from pplpatterning.sampling.backend import FunctionBackend, RunResult, register_backend, unregister_backend
from pplpatterning.sampling.evaluation import Evaluation

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pplpatterning"
HEAVY = ("jax", "jaxlib", "numpyro", "torch", "pyro")
AFTER_THE_TRACE = ("estimators", "trace", "patterning")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names imported, line) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


def package_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target, names, _ in imports_of(path):
            for cand in [f"{target}.{n}" for n in names] + [target]:
                if cand in modules and cand != name:
                    deps.add(cand)
                    break
        graph[name] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first search, as the cycle it closes."""
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    return cycles


def test_the_cycle_finder_finds_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_inside_the_package():
    cycles = find_cycles(package_graph())
    # a package __init__ importing its own submodules is not a cycle of modules
    cycles = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") or c[0].startswith(m + ".")
                                           for m in c)]
    assert not cycles, cycles


@pytest.mark.parametrize("layer", AFTER_THE_TRACE)
def test_nothing_after_the_trace_imports_jax_or_torch(layer):
    bad = [(p.relative_to(ROOT), target, line) for p in (PKG / layer).rglob("*.py")
           for target, _, line in imports_of(p) if target.split(".")[0] in HEAVY]
    assert not bad, bad


def test_no_private_name_is_imported_across_modules():
    files = [p for d in ("pplpatterning", "backends", "models", "validation") for p in (ROOT / d).rglob("*.py")]
    bad = [(p.relative_to(ROOT), line, n) for p in files for target, names, line in imports_of(p)
           for n in names if n.startswith("_") and not n.startswith("__")]
    assert not bad, bad


# -- the "adding a sampler" recipe of docs/architecture.md ------------------------------------
@dataclass(frozen=True)
class DampedLangevin(Rule):
    """A throwaway rule: an SGLD step with the drift halved (deliberately not a correct sampler)."""

    step_size: float
    Info = MinibatchInfo  # the statistics it records

    def init(self, z, energy, noise, xp):
        return SGLDState(z)

    def step(self, state, energy, noise, t, xp):
        e = energy(state.z)
        z = langevin_step(state.z, 0.5 * e.grad, noise["noise"], self.step_size, xp)
        return SGLDState(z), MinibatchInfo(e.loss, e.loss_delta, grad_norm(e.grad, xp))


@pytest.fixture
def registered():
    register_sampler("damped_langevin", DampedLangevin)
    yield "damped_langevin"
    unregister_sampler("damped_langevin")


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_a_registered_sampler_runs_on_both_backends(registered, backend):
    pytest.importorskip("jax" if backend == "numpyro" else "torch")
    import pplpatterning as pp
    from models import get_model

    model = get_model("regular", d=2)
    post = pp.GibbsPosterior(model, model.generate(50, seed=0))
    tr = pp.sample(post, backend=backend, sampler=registered, num_chains=2, num_draws=30, num_burnin=10,
                   step_size=1e-3, batch_size=20, seed=1, progress_bar=False)
    assert tr.attrs["sampler"] == registered and tr.attrs["incomplete"] == 0
    w = tr["posterior"]["w"].values
    assert w.shape == (2, 30, 2) and np.isfinite(w).all() and np.ptp(w[0, :, 0]) > 0
    assert set(tr["sample_stats"].data_vars) >= {"loss", "loss_delta", "minibatch_loss", "grad_norm"}


def test_registering_refuses_clashes_and_unknown_options():
    with pytest.raises(ValueError, match="exists already"):
        register_sampler("sgld", DampedLangevin)
    with pytest.raises(ValueError, match="Unknown option name"):
        register_sampler("x_new", DampedLangevin, {"bogus": 1})


# -- the docs the code cites exist ----------------------------------------------------------
def _sources():
    return [p for d in ("pplpatterning", "backends", "models", "validation", "tests") for p in (ROOT / d).rglob("*.py")]


def test_every_math_reference_resolves_to_a_section_of_docs_math():
    headings = set(re.findall(r"^#{2,3} (§[0-9.]+) ", (ROOT / "docs" / "math.md").read_text(), flags=re.M))
    cited = {(p.relative_to(ROOT), ref) for p in _sources() + [ROOT / "README.md"]
             for ref in re.findall(r"docs/math\.md,? (§[0-9]+(?:\.[0-9]+)?)", p.read_text())}
    assert cited, "no references found: the pattern is out of date"
    assert not [(p, ref) for p, ref in cited if ref not in headings]


def test_every_code_path_named_in_the_docs_exists():
    for doc in ("math.md", "architecture.md"):
        text = (ROOT / "docs" / doc).read_text()
        paths = set(re.findall(r"`((?:pplpatterning|backends|models|validation|tests)/[\w/]+\.py)", text))
        missing = sorted(p for p in paths if not (ROOT / p).exists())
        assert not missing, (doc, missing)


# -- the "adding a backend" recipe: a backend registered by name runs under sample() ----------
def _echo_run(posterior, settings, *, record, plan, keep_params):
    """A stand-in framework: every draw sits at the centre w* (no sampling at all), and its
    record is the loss there."""
    C, D = settings.num_chains, settings.num_draws
    draws = {k: np.broadcast_to(np.asarray(v), (C, D) + np.shape(v)).copy() for k, v in posterior.centre.items()}
    values = Evaluation(np.full((C, D), posterior.loss_at_centre), np.zeros((C, D)), {}, {}, None)
    return RunResult(draws if keep_params else {}, {"accept_prob": np.ones((C, D))}, None, "float64", values=values)


BACKEND = FunctionBackend("echo", (), lambda posterior, fn: np.asarray(0.0), _echo_run,
                          lambda posterior, params: (0.0, {}))


def test_a_registered_backend_runs_under_sample(tiny_model, tiny_data):
    import pplpatterning as pp

    register_backend("echo", __name__)
    try:
        tr = pp.sample(pp.GibbsPosterior(tiny_model, tiny_data), backend="echo", sampler="mala", num_chains=2,
                       num_draws=5, num_burnin=0, progress_bar=False)
    finally:
        unregister_backend("echo")
    assert tr.attrs["backend"] == "echo" and tr.attrs["incomplete"] == 0
    assert tr["sample_stats"]["loss_delta"].shape == (2, 5) and float(abs(tr["sample_stats"]["loss_delta"]).max()) == 0
    assert pp.llc(tr).llc == 0.0
    with pytest.raises(ValueError, match="`backend` must be one of"):
        pp.sample(pp.GibbsPosterior(tiny_model, tiny_data), backend="echo")
