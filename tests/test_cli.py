"""The llc command: table, --json, --save, and clear errors before any sampling."""

import json

import pytest

from pplpatterning import load_trace
from pplpatterning.cli.main import EXIT_FINDINGS, EXIT_OK, main

FAST = ["--draws", "300", "--burnin", "200", "--no-progress", "--n", "200"]


def test_llc_json_reports_target_and_estimate(capsys, tmp_path):
    """A healthy run (MALA, 4 × 1000 draws on a regular model): exit 0, no findings, z vs the exact target."""
    path = tmp_path / "t.nc"
    code = main(["llc", "--model", "regular", "--sampler", "mala", "--gamma", "0", "--json", "--save", str(path),
                 *FAST, "--draws", "1000"])
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK, out["findings"]
    assert out["incomplete"] is False and out["incomplete_reason"] is None and out["findings"] == []
    assert out["exit_code"] == EXIT_OK and out["diagnosis"]["ok"] is True
    assert out["z"] == pytest.approx((out["llc"] - 1.0) / out["mcse"], rel=1e-9)
    assert out["lambda_exact"] == 1.0 and out["multiplicity"] == 1
    assert out["target_finite_nbeta"] == pytest.approx(1.0, rel=1e-12)
    assert abs(out["llc"] - 1.0) < 4 * out["mcse"]
    assert out["saved_to"] == str(path)
    assert load_trace(path).attrs["sampler"] == "mala"


def test_llc_forward_dtype_reaches_the_trace(capsys, tmp_path):
    path = tmp_path / "t.nc"
    main(["llc", "--model", "regular", "--sampler", "mala", "--dtype", "float32", "--forward-dtype", "bfloat16",
          "--json", "--save", str(path), *FAST])
    json.loads(capsys.readouterr().out)
    attrs = load_trace(path).attrs
    assert attrs["dtype"] == "float32" and attrs["forward_dtype"] == "bfloat16"


def test_llc_table(capsys):
    code = main(["llc", "--model", "powers", "--model-arg", "k=(1, 2)", "--sampler", "nuts", "--gamma", "0", *FAST])
    out = capsys.readouterr().out
    for label in ("exact λ", "finite-nβ target", "λ̂ ± MCSE", "z vs target", "R-hat", "ESS bulk / tail", "wall time"):
        assert label in out
    assert "0.75 (m=1)" in out
    assert "No problems found." not in out
    # the status line and the exit code agree: healthy ⇔ 0, findings ⇔ 4
    assert code == (EXIT_OK if "healthy: diagnose() found no problems." in out else EXIT_FINDINGS)
    assert (code == EXIT_FINDINGS) == ("PROBLEMS FOUND (exit 4)" in out)


@pytest.mark.parametrize("argv, message", [
    (["llc", "--model", "regular", "--sampler", "sgld", "--batch-size", "5000"], "`batch_size`=5000 exceeds"),
    (["llc", "--model", "regular", "--gamma", "-1"], "`gamma` must be finite and ≥ 0"),
    (["llc", "--model", "regular", "--model-arg", "dim=3"], "unknown keyword argument"),
    (["llc", "--model", "regular", "--option", "alpha=0.5"], r"Unknown option\(s\) \['alpha'\] for sampler 'nuts'"),
    (["llc", "--model", "regular", "--sampler", "mala", "--forward-dtype", "bfloat16"], "pass dtype='float32' as well"),
])
def test_bad_input_exits_2_with_message(capsys, argv, message):
    assert main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    import re

    assert re.search(message, err), err


def test_unknown_model_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["llc", "--model", "nope"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
