"""Every ```python and ```bash block of README.md runs as written and shows what it claims.

The python blocks run in order in one namespace (one subprocess with the venv's python);
each bash block's commands run through bash, with ``.venv/bin/`` reached through a link
``tmp_path/.venv`` to the repository's venv. Everything runs with cwd = tmp_path, so the
files the blocks write (trace.nc, compare.csv, ...) land there.

Skipped: the first block (``make run`` / ``make test``): ``make test`` would run this test
again (recursion), and ``make run`` is the README's ``compare`` command, which runs here
(``test_make_run_is_the_readme_compare`` checks that the two agree).

Sizes are reduced through ``SUBSTITUTIONS`` (README text → text run here), the only change
made to any block; each entry must occur in the README, so the table cannot go stale. The
claims checked (fixed seeds; tolerances from the MCSE against exact targets):

- tanh: the exact finite-nβ target is 0.3235 at nβ = 144.8, λ = 1/2, m = 2; λ̂ within
  4 MCSE of the target; diagnose() healthy (NUTS, target_accept 0.99);
- two_solutions: χ of the mass on solution A and of the component loss of ``a`` with
  respect to the channel-2 probe are nonzero (|χ| > 4 se), χ(A) > 0;
- patterning: the plan predicts +0.1 on A by weighting channel 1 down and channel 2 up, and
  verify's realized change is within 4 combined standard errors of the prediction;
- CLI: ``llc`` exits 0 (healthy) and prints the target; ``--json`` carries ``findings`` and
  ``incomplete`` and the trace file is written; ``compare`` writes its CSV and plot with
  every row within 4 MCSE of the target; ``chi`` is healthy, χ(wide, loss_b) > 10 se, and
  writes its matrix and plot.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

#: README text → the reduced text run here (each must occur in the README).
SUBSTITUTIONS: dict[str, str] = {
    # python: the tanh NUTS run, and the two_solutions NUTS runs (baseline and verification)
    "num_draws=1000,": "num_draws=300,",
    "num_draws=2000,": "num_draws=600,",
    # bash: compare (Pyro NUTS runs its chains one after another). The llc and chi commands run
    # at full size: NumPyro MALA/SGLD take seconds, and shorter runs would not be healthy.
    "--draws 500 --option mala.thinning=10": "--draws 200 --burnin 300 --option mala.thinning=10",
}
TIMEOUT_S = 240


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced code block of README.md, in order."""
    return [(lang, text) for lang, text in BLOCK.findall(README.read_text(encoding="utf-8"))]


def reduce(text: str) -> str:
    for old, new in SUBSTITUTIONS.items():
        text = text.replace(old, new)
    return text


def bash_commands(text: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments dropped."""
    joined = text.replace("\\\n", " ")
    return [line.split(" #", 1)[0].strip() for line in joined.splitlines() if line.strip()
            and not line.lstrip().startswith("#")]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def blocks() -> list[tuple[str, str]]:
    return readme_blocks()


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    (tmp_path / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    return tmp_path


def test_substitutions_match_the_readme():
    text = README.read_text(encoding="utf-8")
    missing = [old for old in SUBSTITUTIONS if old not in text]
    assert not missing, f"SUBSTITUTIONS entries no longer in README.md: {missing}"


def test_first_block_is_the_two_setup_commands(blocks):
    lang, text = blocks[0]
    assert lang == "bash"
    assert [c.split()[:2] for c in bash_commands(text)] == [["make", "run"], ["make", "test"]]
    assert {lang for lang, _ in blocks[1:]} == {"python", "bash"}   # every block is run below


def test_every_bash_command_is_checked(blocks):
    """The bash tests below each take one subcommand; a README command of another kind fails here."""
    commands = [c for lang, t in blocks[1:] if lang == "bash" for c in bash_commands(t)]
    kinds = [shlex.split(c)[:2] for c in commands]
    assert all(k[0] == ".venv/bin/pplpatterning" for k in kinds), commands
    assert sorted(k[1] for k in kinds) == ["chi", "compare", "llc", "llc"], commands


# After each python block (by position), a snippet recording what the test checks; the README
# text itself runs unchanged apart from SUBSTITUTIONS.
RECORDERS = [
    "_out['tanh'] = dict(target=float(target), lam=model.lam, m=model.multiplicity, n_beta=post.n_beta, "
    "llc=llc(trace).llc, mcse=llc(trace).mcse, ok=diagnose(trace, target=target).ok, "
    "problems=diagnose(trace, target=target).problem_codes())",
    "_out['chi'] = {o: dict(chi=float(chi['chi'].sel(probe='channel2', observable=o)), "
    "se=float(chi['se'].sel(probe='channel2', observable=o))) for o in ('A', 'a')}",
    "_v = check.table.loc['A']\n"
    "_out['pattern'] = dict(predicted=float(_v['predicted']), predicted_se=float(_v['predicted_se']), "
    "realized=float(_v['realized']), realized_se=float(_v['realized_se']), target=float(plan.target.sel(observable='A')), "
    "channel1=float(plan.weights[post.data['x'][:, 0] != 0].mean()), "
    "channel2=float(plan.weights[post.data['x'][:, 1] != 0].mean()))",
    "_out['scale'] = dict(llc=llc(trace).llc, mcse=llc(trace).mcse, target=float(model.target_fn(post)), "
    "dtype=trace.attrs['dtype'], params=len(trace['posterior'].data_vars), groups=sorted(trace.children), "
    "rows=int(attribution(trace).sizes['sample']))",
]


def test_python_blocks(blocks, workdir):
    code = [reduce(text) for lang, text in blocks if lang == "python"]
    assert len(code) == len(RECORDERS), "README python blocks changed: update RECORDERS"
    script = ["import json", "_out = {}"]
    for text, recorder in zip(code, RECORDERS):
        script += [text, recorder]
    script.append("print('@@RESULT@@' + json.dumps(_out))")
    proc = run([str(VENV_PYTHON), "-c", "\n".join(script)], workdir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.rsplit("@@RESULT@@", 1)[1])

    t = out["tanh"]
    assert t["lam"] == 0.5 and t["m"] == 2
    assert math.isclose(t["n_beta"], 144.8, abs_tol=0.05)
    assert math.isclose(t["target"], 0.3235, abs_tol=5e-4)        # the README's number
    assert abs(t["llc"] - t["target"]) <= 4 * t["mcse"], t
    assert t["ok"], t["problems"]

    chi = out["chi"]
    assert chi["A"]["chi"] > 0, chi
    for name in ("A", "a"):
        assert abs(chi[name]["chi"]) > 4 * chi[name]["se"], (name, chi[name])

    p = out["pattern"]
    assert math.isclose(p["target"], 0.1) and math.isclose(p["predicted"], 0.1, rel_tol=1e-6), p
    assert p["channel1"] < 1 < p["channel2"], p                   # "channel 1 down, channel 2 up"
    err = math.hypot(p["realized_se"], p["predicted_se"])
    assert abs(p["realized"] - p["predicted"]) <= 4 * err, p

    s = out["scale"]
    assert math.isclose(s["target"], 2.499, abs_tol=5e-4), s     # the README's number
    assert abs(s["llc"] - s["target"]) <= 4 * s["mcse"], s
    assert s["dtype"] == "float32" and s["params"] == 0 and s["rows"] == 20_000, s
    assert "per_sample_moments" in s["groups"] and "per_sample_losses" not in s["groups"], s


def bash_block(blocks, word: str) -> list[str]:
    found = [bash_commands(reduce(text)) for lang, text in blocks[1:] if lang == "bash" and word in text]
    assert len(found) == 1, f"expected one README bash block with {word!r}"
    return found[0]


def run_command(command: str, workdir: Path) -> subprocess.CompletedProcess:
    assert command.startswith(".venv/bin/"), command
    return run(["bash", "-c", command], workdir)


def test_bash_llc_block(blocks, workdir):
    first, second = bash_block(blocks, "pplpatterning llc")
    proc = run_command(first, workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "finite-nβ target  0.3235" in proc.stdout and "healthy" in proc.stdout, proc.stdout
    proc = run_command(second, workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(proc.stdout)
    assert record["findings"] == [] and record["incomplete"] is False, record
    assert (workdir / "trace.nc").stat().st_size > 0


def test_bash_compare_block(blocks, workdir):
    (command,) = bash_block(blocks, "pplpatterning compare")
    proc = run_command(command, workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = pd.read_csv(workdir / "compare.csv")
    assert len(table) == 6 and set(table["backend"]) == {"numpyro", "pyro"}
    assert table["error"].isna().all(), table["error"].tolist()
    assert (table["z"].abs() <= 4).all(), table[["backend", "sampler", "llc", "mcse", "target", "z"]]
    assert (workdir / "compare.png").stat().st_size > 0


def test_bash_chi_block(blocks, workdir):
    (command,) = bash_block(blocks, "pplpatterning chi")
    proc = run_command(command, workdir)
    assert proc.returncode == 0 and "healthy" in proc.stdout, proc.stdout + proc.stderr
    row = re.search(r"^wide\s+loss_b\s+(\S+) ± (\S+)", proc.stdout, re.M)
    assert row, proc.stdout
    assert float(row[1]) / float(row[2]) > 10, row[0]          # the README says ≈ 20 se
    matrix = pd.read_csv(workdir / "chi.csv")
    assert len(matrix) == 1000 * 3                                 # per-sample χ_z: samples × observables
    assert (workdir / "pcs.png").stat().st_size > 0


def _compare_args(command: str) -> list[str]:
    args = shlex.split(command.split(" #", 1)[0])
    args = [a.replace("out/", "") for a in args]
    return args[args.index("compare"):]


def test_make_run_is_the_readme_compare(blocks):
    """README says its compare command is what `make run` runs: same arguments, paths aside."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = text.split("\nrun: venv\n", 1)[1].split("\n\n", 1)[0]
    make_cmd = next(c for c in bash_commands(recipe.replace("\t", "")) if "pplpatterning compare" in c)
    (readme_cmd,) = [c for lang, t in blocks[1:] if lang == "bash" and "pplpatterning compare" in t
                     for c in bash_commands(t)]
    assert _compare_args(make_cmd) == _compare_args(readme_cmd)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
