"""The practical limit for SGLD on a deep linear network: a hand-fused JAX loop.

    .venv/bin/python validation/bench_fused.py --width 58 --dtype float32 --json out.json

One jitted program: ``jax.lax.scan`` over steps, ``jax.vmap`` over chains, ``jax.grad`` of the
minibatch loss, the SGLD update (docs/math.md §8.1)

    w ← w - (ε/2) [nβ ∇L_batch(w) + γ (w - w*)] + √ε ξ,   ξ ~ N(0, I),

recording only the minibatch loss per step (no parameters are stored). Nothing else runs
inside the loop, so its chain-steps per second bound what any SGLD implementation on the
same framework, device and precision can reach; issue 11 measures the library against it.
The network has ``widths = [w] * 4`` (three w × w matrices, d = 3 w²), n = 10 000 inputs,
batch 256, 4 chains, nβ = n / log n, γ = 1, the teacher's weights as w* (the data of
bench_workloads.make_dln_data). With ``--ours`` the same posterior is also sampled by
``pplpatterning.sample`` (NumPyro, SGLD, minibatch loss, keep_params=False) in the same
process, and both rates are reported: the second of two runs of each, so that compilation
is excluded (``compile_s`` reports it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_workloads import make_dln_data  # noqa: E402

N, BATCH, CHAINS, GAMMA, STEP = 10_000, 256, 4, 1.0, 1e-5


def dln_loss(weights, x, y):
    """Mean over the batch of ||y - W3 W2 W1 x||² / 2 (torch Linear layout (out, in))."""
    f = x
    for w in weights:
        f = f @ w.T
    return 0.5 * jnp.mean(jnp.sum((y - f) ** 2, axis=-1))


def make_sampler(x, y, centre, n_beta: float, steps: int, cycle: bool = False):
    """A jitted function key -> minibatch losses (chains, steps) of SGLD from w*.

    Batches are drawn uniformly with replacement, or with ``cycle`` as devinterp draws them:
    consecutive slices of one fixed shuffled order of the n rows (epochs), the same for every
    chain (the recorded loss is then that of rows not stepped on since the epoch began)."""
    n = x.shape[0]
    order = jax.random.permutation(jax.random.PRNGKey(7), n)

    def potential(weights, idx):
        local = sum(jnp.sum((w - c) ** 2) for w, c in zip(weights, centre))
        loss = dln_loss(weights, x[idx], y[idx])
        return n_beta * loss + 0.5 * GAMMA * local, loss

    grad = jax.grad(potential, has_aux=True)

    def step(weights, inputs):
        t, key = inputs
        k_idx, k_noise = jax.random.split(key)
        if cycle:
            idx = order[(t * BATCH + jnp.arange(BATCH)) % n]
        else:
            idx = jax.random.randint(k_idx, (BATCH,), 0, n)
        g, loss = grad(weights, idx)
        keys = jax.random.split(k_noise, len(weights))
        new = [w - 0.5 * STEP * gw + math.sqrt(STEP) * jax.random.normal(k, w.shape, w.dtype)
               for w, gw, k in zip(weights, g, keys)]
        return new, loss

    def chain(key):
        keys = jax.random.split(key, steps)
        _, losses = jax.lax.scan(step, list(centre), (jnp.arange(steps), keys))
        return losses

    return jax.jit(lambda key: jax.vmap(chain)(jax.random.split(key, CHAINS)))


def fused_rate(width: int, dtype: str, steps: int) -> dict:
    raw = make_dln_data(N, (width,) * 4, seed=0)
    with jax.enable_x64(dtype == "float64"):
        x, y = jnp.asarray(raw["x"], dtype=dtype), jnp.asarray(raw["y"], dtype=dtype)
        centre = [jnp.asarray(w, dtype=dtype) for w in raw["weights"]]
        run = make_sampler(x, y, centre, N / math.log(N), steps)
        t = time.perf_counter()
        run(jax.random.PRNGKey(0)).block_until_ready()
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        losses = run(jax.random.PRNGKey(1)).block_until_ready()
        seconds = time.perf_counter() - t
    return {"impl": f"fused-jax-{dtype}", "width": width, "d": 3 * width**2, "steps": steps,
            "chain_steps_per_s": CHAINS * steps / seconds, "seconds": seconds, "compile_s": compile_s,
            "final_minibatch_loss": float(np.mean(np.asarray(losses)[:, -1]))}


def ours_rate(width: int, steps: int) -> dict:
    import pplpatterning as pp
    from pplpatterning.models import get_model

    raw = make_dln_data(N, (width,) * 4, seed=0)
    model = get_model("dln", widths=(width,) * 4, r=width)
    post = pp.GibbsPosterior(model, {"x": raw["x"].astype(np.float64), "y": raw["y"].astype(np.float64)},
                             centre={f"W{i + 1}": w.astype(np.float64) for i, w in enumerate(raw["weights"])},
                             n_beta=N / math.log(N), gamma=GAMMA)
    kw = dict(backend="numpyro", sampler="sgld", step_size=STEP, batch_size=BATCH, num_chains=CHAINS,
              num_draws=steps, num_burnin=0, loss_estimate="minibatch", keep_params=False, progress_bar=False)
    times = []
    for seed in (0, 1):
        t = time.perf_counter()
        pp.sample(post, seed=seed, **kw)
        times.append(time.perf_counter() - t)
    return {"impl": "pplpatterning-numpyro-float64", "width": width, "d": 3 * width**2, "steps": steps,
            "chain_steps_per_s": CHAINS * steps / times[1], "seconds": times[1], "compile_s": times[0] - times[1]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, action="append", required=True, help="w of widths [w]*4 (repeatable)")
    p.add_argument("--dtype", choices=("float32", "float64"), action="append", default=None)
    p.add_argument("--steps", type=int, default=500, help="SGLD steps per chain (all recorded)")
    p.add_argument("--ours", action="store_true", help="also time pplpatterning.sample on the same posterior")
    p.add_argument("--json", type=Path, required=True)
    a = p.parse_args(argv)
    rows = []
    for width in a.width:
        for dtype in a.dtype or ["float32", "float64"]:
            rows.append(fused_rate(width, dtype, a.steps))
            print(json.dumps(rows[-1]), flush=True)
        if a.ours:
            rows.append(ours_rate(width, a.steps))
            print(json.dumps(rows[-1]), flush=True)
    a.json.write_text(json.dumps({"rows": rows, "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]},
                                 indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
