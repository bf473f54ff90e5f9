"""The CLI never loses work and never calls a bad run healthy (issue 9).

- every output path is checked before the posterior is built (exit 2, one line naming the flag);
- exit codes (C6): 3 incomplete (what was sampled still saved), 4 findings, 0 healthy; every
  --json output carries incomplete / incomplete_reason / findings;
- `compare --exclude`, `--strict`; help text and defaults on every flag; `pplpatterning models`;
- `import pplpatterning.cli.main` loads none of xarray/pandas/matplotlib/scipy/JAX/torch.

Runs are synthetic Traces (trace.build_trace + run_attrs) put in place of the sampling call,
so the exit codes are tested against exactly known draws, in well under a second each.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pplpatterning
import pplpatterning.workflows.compare as comparison
import pplpatterning.models as zoo
import pplpatterning.sampling.core as sampling
from pplpatterning.cli import arguments as cli_args
from pplpatterning.cli import main as cli
from pplpatterning.cli import models as cli_models
from pplpatterning.cli.main import EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, main
from pplpatterning.samplers.settings import SamplerSettings
from pplpatterning.trace import build_trace, load_trace, run_attrs

FAST = ["--model", "regular", "--n", "100", "--gamma", "0", "--no-progress"]


# ------------------------------------------------------------------ synthetic runs
def synthetic_trace(post, *, sampler="mala", num_chains=4, num_draws=1000, num_burnin=0, seed=0, shift=0.0,
                    constant=False, incomplete_reason=None, **_):
    """A Trace whose nβ·ΔL draws are iid N(target + shift, 1) (or constant at the target).

    With an incomplete_reason, the second half of every chain is NaN (the draws never made).
    """
    settings = SamplerSettings(sampler=sampler, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin,
                               seed=seed)
    target = comparison.finite_target(post)
    shape = (num_chains, num_draws)
    rng = np.random.default_rng(12345)
    scaled = np.full(shape, target) if constant else target + shift + rng.standard_normal(shape)
    delta = scaled / post.n_beta
    if incomplete_reason:
        delta[:, num_draws // 2:] = np.nan
    attrs = run_attrs(post, settings, backend="numpyro", dtype="float64", packages=(),
                      incomplete_reason=incomplete_reason, sampling_seconds=0.0, evaluation_seconds=0.0)
    return build_trace(posterior={}, sample_stats={"loss": post.loss_at_centre + delta, "loss_delta": delta},
                       attrs=attrs)


@pytest.fixture
def fake_sampling(monkeypatch):
    """Replace sampling by synthetic traces; ``fake_sampling(**kw)`` sets how they look."""
    options: dict = {}

    def fake(post, **kw):
        return synthetic_trace(post, **{**kw, **options})

    monkeypatch.setattr(sampling, "sample", fake)
    monkeypatch.setattr(comparison, "sample", fake)
    return options.update


def run_json(capsys, argv):
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------ exit codes: llc
def test_llc_healthy_run_exits_0(capsys, fake_sampling):
    code, out = run_json(capsys, ["llc", *FAST, "--sampler", "mala", "--json"])
    assert code == EXIT_OK, out["findings"]
    assert out["incomplete"] is False and out["findings"] == [] and abs(out["z"]) < 3


def test_llc_incomplete_run_exits_3_and_saves_what_exists(capsys, tmp_path, fake_sampling):
    fake_sampling(incomplete_reason="interrupted (KeyboardInterrupt) after draw 500")
    path = tmp_path / "partial.nc"
    code, out = run_json(capsys, ["llc", *FAST, "--sampler", "mala", "--json", "--save", str(path)])
    assert code == EXIT_INCOMPLETE
    assert out["incomplete"] is True and "KeyboardInterrupt" in out["incomplete_reason"]
    assert "incomplete" in out["findings"] and out["exit_code"] == EXIT_INCOMPLETE
    saved = load_trace(path)
    assert int(saved.attrs["incomplete"]) == 1 and saved["sample_stats"]["loss_delta"].shape == (4, 1000)


def test_llc_incomplete_run_says_so_in_the_table(capsys, fake_sampling):
    fake_sampling(incomplete_reason="evaluation failed at draw 500: FloatingPointError: boom")
    assert main(["llc", *FAST, "--sampler", "mala"]) == EXIT_INCOMPLETE
    out = capsys.readouterr().out
    assert out.startswith("INCOMPLETE RUN (exit 3): evaluation failed at draw 500")
    assert "No problems found" not in out and "healthy" not in out


def test_llc_stuck_chains_exit_4(capsys, fake_sampling):
    """λ̂ = target ± 0 from constant chains (HMC with no steps) is a finding, not a pass."""
    fake_sampling(constant=True)
    code, out = run_json(capsys, ["llc", *FAST, "--sampler", "hmc", "--json"])
    assert code == EXIT_FINDINGS
    assert {"stuck_chain", "nan_diagnostic"} & set(out["findings"]), out["findings"]
    assert out["diagnosis"]["ok"] is False


def test_llc_off_target_exits_4(capsys, fake_sampling):
    fake_sampling(shift=0.5)  # MCSE ≈ 1/√4000 = 0.016, so z ≈ 30
    code, out = run_json(capsys, ["llc", *FAST, "--sampler", "mala", "--json"])
    assert code == EXIT_FINDINGS
    assert "off_target" in out["findings"] and out["z"] > 3
    assert main(["llc", *FAST, "--sampler", "mala"]) == EXIT_FINDINGS
    text = capsys.readouterr().out
    assert "PROBLEMS FOUND (exit 4): off_target" in text and "[error] off_target" in text


# ------------------------------------------------------------------ exit codes: compare
CMP = ["compare", *FAST, "--backends", "numpyro", "--samplers", "mala", "sgld", "--draws", "1000", "--burnin", "0"]


def test_compare_marks_off_target_and_exits_4_only_when_strict(capsys, fake_sampling):
    fake_sampling(shift=0.5)
    code, rows = run_json(capsys, [*CMP, "--json"])
    assert code == EXIT_OK
    assert [r["status"] for r in rows] == ["OFF TARGET", "OFF TARGET"]
    assert all("off_target" in r["findings"] and r["incomplete"] is False and "incomplete_reason" in r for r in rows)
    assert main([*CMP, "--strict"]) == EXIT_FINDINGS
    text = capsys.readouterr().out
    assert "OFF TARGET" in text and "PROBLEMS in 2 of 2 runs" in text


def test_compare_incomplete_run_exits_3(capsys, fake_sampling):
    fake_sampling(incomplete_reason="interrupted")
    code, rows = run_json(capsys, [*CMP, "--json"])
    assert code == EXIT_INCOMPLETE
    assert all(r["incomplete"] and r["status"] == "INCOMPLETE" for r in rows)


def test_compare_exclude_skips_a_pair(capsys, fake_sampling):
    code, rows = run_json(capsys, [*CMP, "--exclude", "numpyro.sgld", "--json"])
    assert code == EXIT_OK and [(r["backend"], r["sampler"]) for r in rows] == [("numpyro", "mala")]


@pytest.mark.parametrize("pair", ["jax.nuts", "numpyro.langevin", "numpyro"])
def test_compare_exclude_unknown_names_is_a_usage_error(capsys, pair):
    with pytest.raises(SystemExit) as exc:
        main([*CMP, "--exclude", pair])
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--exclude" in err and "BACKEND.SAMPLER" in err


def test_compare_exclude_everything_exits_2(capsys, monkeypatch):
    monkeypatch.setattr(comparison, "sample", lambda *a, **k: pytest.fail("ran despite the bad --exclude"))
    assert main([*CMP, "--exclude", "numpyro.mala", "--exclude", "numpyro.sgld"]) == EXIT_USAGE
    assert "no backend × sampler pair" in capsys.readouterr().err


# ------------------------------------------------------------------ exit codes: chi, pattern
@pytest.fixture
def interrupted(monkeypatch):
    """Real (tiny) runs whose traces are then marked as interrupted."""
    real = sampling.sample

    def run(post, **kw):
        trace = real(post, **kw)
        trace.attrs.update(incomplete=1, incomplete_reason="interrupted (KeyboardInterrupt)")
        return trace

    monkeypatch.setattr(sampling, "sample", run)


SMALL = ["--model", "regular", "--n", "60", "--gamma", "5", "--sampler", "mala", "--chains", "2", "--draws", "100",
         "--burnin", "50", "--no-progress"]


def test_chi_incomplete_exits_3_with_the_fields(capsys, tmp_path, interrupted):
    path = tmp_path / "chi.nc"
    code, out = run_json(capsys, ["chi", *SMALL, "--json", "--save", str(path)])
    assert code == EXIT_INCOMPLETE and out["incomplete"] is True and "incomplete" in out["findings"]
    assert out["incomplete_reason"] == "interrupted (KeyboardInterrupt)" and path.exists()


def test_pattern_incomplete_baseline_exits_3_without_verifying(capsys, interrupted):
    code, out = run_json(capsys, ["pattern", *SMALL, "--observable", "param:w:0", "--target", "w_0=0.01",
                                  "--verify", "--json"])
    assert code == EXIT_INCOMPLETE and out["incomplete"] is True and "incomplete" in out["findings"]
    assert "verification" not in out and list(out["runs"]) == ["baseline"]
    assert out["runs"]["baseline"]["incomplete_reason"].startswith("interrupted")


def test_chi_json_always_has_the_fields(capsys):
    code, out = run_json(capsys, ["chi", *SMALL, "--json"])
    assert {"incomplete", "incomplete_reason", "findings", "diagnosis"} <= set(out)
    assert out["incomplete"] is False
    assert code == EXIT_OK  # findings (short run) are reported, not an exit code, without --strict
    assert main(["chi", *SMALL, "--json", "--strict"]) == (EXIT_FINDINGS if out["findings"] else EXIT_OK)


def test_calibrate_json_has_the_fields(capsys, monkeypatch):
    """The sweep's JSON carries the fields too: findings = the union of the rows' reasons."""
    import types

    import pandas as pd

    import pplpatterning.workflows.calibrate as cal

    table = pd.DataFrame({"step_size": [1e-3, 1e-2], "reasons": ["", "nan,low_acceptance"]})
    fake = types.SimpleNamespace(model="regular", backend="numpyro", sampler="sgld", threshold=0.9, lambda_exact=1.0,
                                 recommended=pd.DataFrame({"step_size": [1e-3], "reason": ["passes"]}), table=table)
    monkeypatch.setattr(cal, "calibrate", lambda *a, **k: fake)
    code, out = run_json(capsys, ["calibrate", "--model", "regular", "--n", "50", "--json"])
    assert code == EXIT_OK
    assert out["incomplete"] is False and out["incomplete_reason"] is None
    assert out["findings"] == ["low_acceptance", "nan"]


# ------------------------------------------------------------------ output paths before any work
COMMANDS = {
    "llc": ["llc", "--model", "regular"],
    "chi": ["chi", "--model", "regular"],
    "pattern": ["pattern", "--model", "regular", "--target", "loss=0.1", "--verify"],
    "compare": ["compare", "--model", "regular"],
    "calibrate": ["calibrate", "--model", "regular"],
}
FLAGS = [("llc", "--save", ".nc"), ("chi", "--save", ".nc"), ("chi", "--save-matrix", ".csv"),
         ("chi", "--plot", ".png"), ("pattern", "--save-weights", ".npy"), ("pattern", "--plot", ".png"),
         ("compare", "--csv", ".csv"), ("compare", "--plot", ".png"), ("calibrate", "--csv", ".csv"),
         ("calibrate", "--plot", ".png")]


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fail the test if the posterior is built or a backend is reached."""
    monkeypatch.setattr(zoo, "get_model", lambda *a, **k: pytest.fail("built the posterior before checking outputs"))
    monkeypatch.setattr(sampling, "get_backend", lambda *a, **k: pytest.fail("reached the backend"))


def refused(capsys, argv, flag):
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pplpatterning {argv[0]}: error: {flag} "), err
    return err


@pytest.mark.parametrize("command, flag, suffix", FLAGS)
def test_output_in_a_missing_folder(capsys, tmp_path, nothing_runs, command, flag, suffix):
    err = refused(capsys, [*COMMANDS[command], flag, str(tmp_path / "nope" / f"out{suffix}")], flag)
    assert "does not exist" in err


@pytest.mark.parametrize("command, flag, suffix", FLAGS)
def test_output_that_is_a_folder(capsys, tmp_path, nothing_runs, command, flag, suffix):
    folder = tmp_path / f"dir{suffix}"
    folder.mkdir()
    assert "is a folder" in refused(capsys, [*COMMANDS[command], flag, str(folder)], flag)


@pytest.mark.parametrize("command, flag, suffix", FLAGS)
def test_output_with_an_unknown_extension(capsys, tmp_path, nothing_runs, command, flag, suffix):
    assert "use a file ending in" in refused(capsys, [*COMMANDS[command], flag, str(tmp_path / "out.txt")], flag)


@pytest.mark.parametrize("command", ["llc", "chi"])
def test_zarr_without_zarr_installed(capsys, tmp_path, monkeypatch, nothing_runs, command):
    monkeypatch.setattr(cli_args, "is_installed", lambda package: package != "zarr")
    err = refused(capsys, [*COMMANDS[command], "--save", str(tmp_path / "t.zarr")], "--save")
    assert "needs the 'zarr' package" in err and "use .nc" in err


@pytest.mark.parametrize("command, flag, suffix", FLAGS)
def test_output_in_a_read_only_folder(capsys, tmp_path, monkeypatch, nothing_runs, command, flag, suffix):
    folder = tmp_path / "ro"
    folder.mkdir()
    real = os.access  # the tests may run as root, who can write anywhere: deny access to this folder only
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder else real(p, mode, **kw))
    err = refused(capsys, [*COMMANDS[command], flag, str(folder / f"out{suffix}")], flag)
    assert "not writable" in err


def test_two_flags_on_one_file(capsys, tmp_path, nothing_runs):
    path = str(tmp_path / "x.nc")
    assert "name the same file" in refused(capsys, [*COMMANDS["chi"], "--save", path, "--save-matrix", path],
                                           "--save-matrix")


def test_validate_out_that_is_a_file(capsys, tmp_path, monkeypatch):
    import pplpatterning.cli.validate as cv

    monkeypatch.setattr(cv, "load_validation_runner", lambda root: pytest.fail("ran before checking --out"))
    path = tmp_path / "report"
    path.write_text("")
    assert "is a file" in refused(capsys, ["validate", "--out", str(path)], "--out")


def test_good_output_paths_pass(tmp_path):
    for suffix, formats in ((".nc", cli_args.TRACE_FORMATS), (".csv", cli_args.CSV_FORMAT), (".png", cli_args.PLOT_FORMATS)):
        assert cli_args.check_output_path(str(tmp_path / f"a{suffix}"), "--x", formats) == tmp_path / f"a{suffix}"
    assert cli_args.check_output_folder(str(tmp_path / "new" / "deeper"), "--out") == tmp_path / "new" / "deeper"


# ------------------------------------------------------------------ help, defaults, models
def _subparsers(parser):
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_every_flag_has_help_and_states_its_default():
    commands = _subparsers(cli.build_parser())
    assert {"llc", "compare", "chi", "pattern", "calibrate", "validate", "models"} <= set(commands)
    for name, parser in commands.items():
        formatter = parser._get_formatter()
        assert isinstance(formatter, cli_args.HelpFormatter), name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{label} has no help text"
            text = formatter._get_help_string(action)
            if not action.required:
                assert "default" in text.lower(), f"{label}: the help does not state the default: {text!r}"


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["llc", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "number of data points (default: 1000)" in out and "(default: nuts)" in out


def test_models_lists_every_model(capsys):
    assert main(["models"]) == EXIT_OK
    out = capsys.readouterr().out
    for name in zoo.MODELS:
        assert f"  {name} " in out, name
    assert "exact λ at the default centre" in out and " d/2 " in out


def test_models_describes_one(capsys):
    assert main(["models", "dln"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "widths       default (2, 3, 3, 2)" in out and "r            default 0" in out
    assert "exact λ at the default centre: Aoyagi 2024" in out
    assert "λ = 2, m = 3" in out and "exact finite-nβ target: none" in out


def test_models_table_covers_the_zoo():
    table = cli_models.zoo_table()
    assert set(table) == set(zoo.MODELS)
    assert table["regular"] == ("d=2, sigma=1.0, w_true=None (zeros), split=None", "d/2")


def test_models_unknown_name_exits_2(capsys):
    assert main(["models", "nope"]) == EXIT_USAGE
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_unknown_model_lists_the_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["llc", "--model", "nope"])
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "regular" in err


# ------------------------------------------------------------------ fast start, lazy package
HEAVY = ("xarray", "pandas", "arviz_base", "arviz_stats", "matplotlib", "scipy", "jax", "torch", "numpyro", "pyro")


def test_the_cli_imports_nothing_heavy():
    code = ("import sys, pplpatterning.cli.main as c; c.build_parser(); "
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_lazy_package_keeps_every_public_name():
    code = ("import sys, pplpatterning as pp; assert 'numpy' not in sys.modules; "
            "from pplpatterning import *; import pplpatterning.estimators.llc, pplpatterning.estimators.susceptibility; "
            "assert callable(pp.llc) and callable(pp.susceptibility), (pp.llc, pp.susceptibility); "
            "assert pp.llc.__module__ == 'pplpatterning.estimators.llc'; "
            "assert all(getattr(pp, n) is globals()[n] for n in pp.__all__)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert set(pplpatterning.__all__) <= set(dir(pplpatterning))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pplpatterning.nope  # noqa: B018


def test_backend_names_agree_with_sampling():
    assert cli_args.BACKEND_NAMES == sampling.BACKENDS
