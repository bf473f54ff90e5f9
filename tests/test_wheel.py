"""A built wheel installs on its own and exposes pplpatterning.backends and .models (issue 2, point 1)."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_subpackages(tmp_path):
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist),
                            str(ROOT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = dist.glob("pplpatterning-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pplpatterning/backends/numpyro/run.py" in names
    assert "pplpatterning/models/dln.py" in names
    assert not any(n.startswith(("backends/", "models/")) for n in names), "generic top-level names leaked"

    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
                                str(target), str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    probe = (
        "import sys, pplpatterning, pplpatterning.models, pplpatterning.backends.numpyro;"
        "assert pplpatterning.__file__.startswith(sys.argv[1]), pplpatterning.__file__;"
        "assert pplpatterning.models.__file__.startswith(sys.argv[1]);"
        "print(sorted(pplpatterning.models.MODELS))"
    )
    # -I: isolated mode, so neither the repo checkout nor an editable install can shadow the wheel
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, sys.argv[1]); {probe}",
                          str(target)], check=True, capture_output=True, text=True)
    assert "dln" in out.stdout
