"""Each custom sampler's update rule is ONE function, used by both backends (issue 10).

The same rule, fed the same energy (a quadratic written against the array API), the same
noise and the same step counter, gives the same next state and the same statistics on
NumPy, JAX and torch to 1e-12; and both backends drive exactly that rule (they import it
from pplpatterning.samplers and define no update of their own).
"""

from pathlib import Path

import numpy as np
import pytest

from pplpatterning.samplers import registry
from pplpatterning.samplers.rule import Energy
from pplpatterning.samplers.settings import SamplerSettings

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
import array_api_compat.torch as xp_torch  # noqa: E402
import jax.numpy as jnp  # noqa: E402

C, D = 3, 4
A = np.diag([1.0, 2.0, 0.5, 3.0])


def namespaces():
    return {"numpy": (np, np.asarray), "jax": (jnp, lambda a: jnp.asarray(a, dtype=jnp.float64)),
            "torch": (xp_torch, lambda a: torch.as_tensor(np.array(a), dtype=torch.float64))}


def quadratic(xp):
    """U(z) = ½ zᵀ A z per chain, with a made-up loss (the batch index does not matter here)."""
    a = xp.asarray(np.diag(A).copy())

    def energy(z):
        grad = a * z
        potential = 0.5 * xp.sum(z * grad, axis=-1)
        return Energy(potential, grad, potential / 7.0, potential / 11.0)
    return energy


def run_rule(name, xp, asarray, steps=6, step_size=None, **options):
    settings = SamplerSettings(sampler=name, num_chains=C, num_draws=5, num_burnin=3, progress_bar=False,
                               step_size=step_size, options=options)
    rule = registry.rule_for(settings)
    rng = np.random.default_rng(0)
    energy = quadratic(xp)
    z0 = asarray(rng.normal(size=(C, D)))
    state = rule.init(z0, energy, {s: asarray(rng.normal(size=(C, D))) for s in rule.init_streams}, xp)
    infos = []
    for t in range(steps):
        noise = {"noise": asarray(rng.normal(size=(C, D))), "uniform": asarray(rng.uniform(size=C))}
        state, info = rule.step(state, energy, {s: noise[s] for s in rule.streams}, asarray(np.int64(t)), xp)
        infos.append(info)
    return state, infos


def to_numpy(tree):
    leaves = []
    for x in tree:
        if isinstance(x, tuple):
            leaves += to_numpy(x)
        else:
            leaves.append(np.asarray(x.detach() if hasattr(x, "detach") else x, dtype=np.float64))
    return leaves


@pytest.mark.parametrize("name,kw", [
    ("sgld", dict(step_size=0.05)),
    ("rmsprop_sgld", dict(step_size=0.05)),
    ("rmsprop_sgld", dict(step_size=0.05, adapt="always")),
    ("sgnht", dict(step_size=0.05)),
    ("mala", dict(step_size=0.3)),
])
def test_one_rule_same_next_state_on_numpy_jax_torch(name, kw):
    with jax.enable_x64(True):
        results = {lib: run_rule(name, xp, asarray, **kw) for lib, (xp, asarray) in namespaces().items()}
    ref_state, ref_infos = results["numpy"]
    assert np.isfinite(to_numpy(ref_state)[0]).all()
    for lib in ("jax", "torch"):
        state, infos = results[lib]
        for got, want in zip(to_numpy(state), to_numpy(ref_state)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=f"{name} state on {lib}")
        for info, ref_info in zip(infos, ref_infos):
            assert info._fields == ref_info._fields
            for got, want in zip(to_numpy(info), to_numpy(ref_info)):
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=f"{name} info on {lib}")


def test_mala_adapts_during_burnin_then_freezes():
    _, infos = run_rule("mala", np, np.asarray, steps=6, step_size=0.3)
    eps = np.array([i.step_size for i in infos])
    assert not np.allclose(eps[0], 0.3) and np.all(eps[3:] == eps[2])


def test_backends_define_no_update_rule_of_their_own():
    """The custom samplers' updates live in pplpatterning/samplers only: the backends hold
    no module per sampler and name each rule class only through the registry."""
    root = Path(__file__).resolve().parents[1] / "backends"
    names = {"mala.py", "sgld.py", "rmsprop_sgld.py", "sgnht.py"}
    assert not [p for p in root.rglob("*.py") if p.name in names]
    for p in root.rglob("*.py"):
        text = p.read_text()
        for cls in ("class MALA", "class SGLD", "class RMSPropSGLD", "class SGNHT", "dual_averaging(",
                    "(2.0 * u - 1.0)"):
            assert cls not in text, (p, cls)
