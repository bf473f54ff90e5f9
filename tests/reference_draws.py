"""Reference draws recorded before the sampling-core redesign (issue 10).

``python -m tests.reference_draws record`` writes tests/data/reference_draws.npz: for every
backend × sampler, a short run on a multi-leaf model (rrr, parameters A and B) with the
draws and every sample_stats variable. tests/test_reference_draws.py compares a fresh run
against it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PATH = Path(__file__).parent / "data" / "reference_draws.npz"
BACKENDS = ("numpyro", "pyro")
SAMPLERS = ("nuts", "hmc", "mala", "sgld", "rmsprop_sgld", "sgnht")
STEP = {"nuts": None, "hmc": None, "mala": None, "sgld": 1e-4, "rmsprop_sgld": 1e-3, "sgnht": 1e-4}


def posterior():
    import pplpatterning as pp
    from models import get_model

    model = get_model("rrr", M=2, H=2, N=2, r=1)
    return pp.GibbsPosterior(model, model.generate(60, seed=3), gamma=10.0)


def run(backend: str, sampler: str, post=None):
    import pplpatterning as pp

    post = posterior() if post is None else post
    kw = {"batch_size": 20} if sampler in ("sgld", "rmsprop_sgld", "sgnht") else {}
    return pp.sample(post, backend=backend, sampler=sampler, num_chains=2, num_draws=20, num_burnin=20,
                     step_size=STEP[sampler], seed=11, progress_bar=False, **kw)


def arrays(trace) -> dict[str, np.ndarray]:
    out = {f"posterior/{k}": np.asarray(v) for k, v in trace["posterior"].data_vars.items()}
    out.update({f"sample_stats/{k}": np.asarray(v) for k, v in trace["sample_stats"].data_vars.items()})
    return out


def record() -> None:
    post = posterior()
    data = {}
    for backend in BACKENDS:
        for sampler in SAMPLERS:
            for k, v in arrays(run(backend, sampler, post)).items():
                data[f"{backend}.{sampler}.{k}"] = v
    PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(PATH, **data)
    print(f"wrote {len(data)} arrays to {PATH}")


if __name__ == "__main__" and sys.argv[1:] == ["record"]:
    record()
