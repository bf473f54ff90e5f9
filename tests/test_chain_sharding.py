"""Chains sharded over devices give the draws of one device (issue 11, item 3).

JAX reads ``XLA_FLAGS`` when it is first imported, so each configuration runs in its own
process: ``--xla_force_host_platform_device_count=4`` splits the CPU into 4 devices, and
the NumPyro driver (backends/numpyro/driver.py) then places the 4 chains' state and the
per-sample accumulator on a 4-device mesh (``PartitionSpec("chain")``). The same runs in a
1-device process must give the same draws, sample_stats, observables, probe losses and
per-sample groups. The 4-device process also checks, through the driver's ``on_segment``
hook, that the carry really is split over 4 devices after the burn-in and every segment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter: sys.argv = [script, out.npz].
SCRIPT = r'''
import json, sys
import jax
import numpy as np

import pplpatterning as pp
from pplpatterning.backends.numpyro import driver, run
from pplpatterning.models import get_model
from pplpatterning.spec.observables import param
from pplpatterning.spec.probes import Probes

layouts = []


def check(state, acc):
    """The number of devices each chain-axis leaf of the carry lives on."""
    leaves = jax.tree.leaves((state, acc))
    chain = [x for x in leaves if x.ndim >= 1 and x.shape[0] == 4]
    layouts.append(sorted({len(x.sharding.device_set) for x in chain}))


real = run.run_segmented
run.run_segmented = lambda *a, **kw: real(*a, on_segment=check, **kw)

model = get_model("rrr", M=2, H=2, N=2, r=1)
post = pp.GibbsPosterior(model, model.generate(40, seed=3), gamma=10.0)
obs = {"a0": param("A", (0, 0)), "b1": param("B", (1, 0))}
probes = {"shift": {k: v[:10] + 0.5 for k, v in post.data.items()}}
RUNS = [("sgld", True, dict(step_size=1e-4, batch_size=10)), ("sgld", False, dict(step_size=1e-4, batch_size=10)),
        ("mala", True, {}), ("mala", False, {}), ("nuts", True, {}), ("nuts", False, {})]
out = {}
for sampler, stream, kw in RUNS:
    tr = pp.sample(post, sampler=sampler, num_chains=4, num_draws=20, num_burnin=10, seed=7, progress_bar=False,
                   observables=obs, keep_params=True,
                   probes=Probes(datasets=probes, per_sample="all", stream=stream), **kw)
    for node in tr.subtree:
        for name, var in node.dataset.data_vars.items():
            out[f"{sampler}.{stream}.{node.path}/{name}"] = np.asarray(var)
np.savez(sys.argv[1], **out)
print(json.dumps({"devices": len(jax.local_devices()), "layouts": layouts}))
'''


def run_in(devices: int, path: Path) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(path)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharding")
    procs = {n: run_in(n, tmp / f"dev{n}.npz") for n in (1, 4)}
    result = {}
    for n, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-4000:]
        with np.load(tmp / f"dev{n}.npz") as f:
            result[n] = (json.loads(stdout.strip().splitlines()[-1]), dict(f))
    return result


def test_four_devices_shard_the_carry(runs):
    info, _ = runs[4]
    assert info["devices"] == 4
    # six runs × (burn-in + 20 draws in 20 segments), every chain-axis leaf on 4 devices
    assert len(info["layouts"]) == 6 * 21
    assert all(layout == [4] for layout in info["layouts"])
    one, _ = runs[1]
    assert one["devices"] == 1 and all(layout == [1] for layout in one["layouts"])


def test_same_draws_and_records_as_one_device(runs):
    (_, four), (_, one) = runs[4], runs[1]
    assert sorted(four) == sorted(one)
    groups = {k.split(".", 2)[2].rsplit("/", 1)[0] for k in one}
    assert {"/posterior", "/sample_stats", "/observables", "/per_sample_losses", "/per_sample_moments"} <= groups
    for name, value in one.items():
        np.testing.assert_array_equal(four[name], value, err_msg=name)
