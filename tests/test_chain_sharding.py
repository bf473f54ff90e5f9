"""Chains sharded over devices give the draws of one device (issue 11, item 3).

JAX reads ``XLA_FLAGS`` when it is first imported, so each configuration runs in its own
process: ``--xla_force_host_platform_device_count=4`` splits the CPU into 4 devices, and
the NumPyro driver (backends/numpyro/driver.py) then places the 4 chains' state and the
per-sample accumulator on a 4-device mesh (``PartitionSpec("chain")``). The same runs in a
1-device process must give the same draws, sample_stats, observables, probe losses and
per-sample groups. The 4-device process also checks, through the driver's ``on_segment``
hook, that the carry really is split over 4 devices after the burn-in and every segment.

Tolerance: floating-point reproduction, not bit identity. XLA compiles the partitioned
program for each device's local shapes, here one chain per device, and simplifies a
vmapped ``dot_general`` with a batch of 1 into multiplies and adds that round differently
from the 4-chain batched product (reproduced outside the library: the gradient of
``(x @ A.T) @ B.T`` vmapped over 4 chains vs over 1 differs by 1.3e-15). Measured here:
the largest difference over an array's largest magnitude is 1.5e-16 for SGLD, 2e-14 for
NUTS and 4.4e-14 for MALA (whose accept/reject dynamics carry the rounding along the 30
steps); integer and boolean statistics (NUTS tree sizes, divergences) agree exactly.
On one device the driver's programs are those of the unsharded driver, bit for bit.
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
RTOL = 1e-12  # of each array's largest magnitude: floating-point reproduction (see above)

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
# chain_devices=1: one device even when there are four (the same programs as a 1-device process)
tr = pp.sample(post, sampler="mala", num_chains=4, num_draws=20, num_burnin=10, seed=7, progress_bar=False,
               observables=obs, keep_params=True, chain_devices=1)
for node in tr.subtree:
    for name, var in node.dataset.data_vars.items():
        out[f"pinned.x.{node.path}/{name}"] = np.asarray(var)
np.savez(sys.argv[1], **out)
split = {c: driver.chain_placement(c).num_devices for c in (1, 2, 3, 4, 5, 6, 8)}
print(json.dumps({"devices": len(jax.local_devices()), "layouts": layouts, "split": split,
                  "off": driver.chain_placement(4, max_devices=1).num_devices}))
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
    # six runs × (burn-in + 20 draws in 20 segments), every chain-axis leaf on 4 devices;
    # then the chain_devices=1 run on one
    assert len(info["layouts"]) == 7 * 21
    assert all(layout == [4] for layout in info["layouts"][:6 * 21])
    assert all(layout == [1] for layout in info["layouts"][6 * 21:])
    # the largest divisor of the chains that fits on the devices; max_devices=1 turns it off
    assert info["split"] == {"1": 1, "2": 2, "3": 3, "4": 4, "5": 1, "6": 3, "8": 4} and info["off"] == 1
    one, _ = runs[1]
    assert one["devices"] == 1 and all(layout == [1] for layout in one["layouts"])


def test_same_draws_and_records_as_one_device(runs):
    (_, four), (_, one) = runs[4], runs[1]
    assert sorted(four) == sorted(one)
    groups = {k.split(".", 2)[2].rsplit("/", 1)[0] for k in one}
    assert {"/posterior", "/sample_stats", "/observables", "/per_sample_losses", "/per_sample_moments"} <= groups
    for name, value in one.items():
        if name.startswith("pinned."):  # chain_devices=1 in the 4-device process: bit for bit
            np.testing.assert_array_equal(four[name], value, err_msg=name)
            continue
        if value.dtype.kind != "f":
            np.testing.assert_array_equal(four[name], value, err_msg=name)
            continue
        np.testing.assert_array_equal(np.isnan(four[name]), np.isnan(value), err_msg=name)
        scale = np.nanmax(np.abs(value)) if value.size and not np.isnan(value).all() else 0.0
        np.testing.assert_allclose(four[name], value, rtol=0, atol=RTOL * scale, equal_nan=True, err_msg=name)
