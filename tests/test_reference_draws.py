"""Same seed → the same draws as before the sampling-core redesign (issue 10).

tests/data/reference_draws.npz was recorded by ``python -m tests.reference_draws record``
on the code before the redesign. Every backend × sampler must reproduce its draws and its
sample_stats. Measured on the recording machine after the redesign: NUTS and HMC on both
backends, and Pyro's SGLD, RMSProp-SGLD and SGNHT, agree bit for bit; NumPyro's SG samplers
within 2e-13 relative (the update now runs on the flat (chains, d) array, so XLA fuses it
differently). The tolerance is 1e-12 relative, except for MALA (1e-10), whose update changed
on purpose: the two backends had two algebraically equal forms of the acceptance ratio
(Pyro: (‖·‖²_fwd - ‖·‖²_bwd)/4ε; NumPyro: leaf-by-leaf sums) and now share one (per-chain sums
over the flat vector, NumPyro's order of terms), which moves the draws by ≤ 1e-11 relative
over these 40 steps.
"""

import numpy as np
import pytest

from tests import reference_draws as ref


@pytest.fixture(scope="module")
def recorded():
    with np.load(ref.PATH) as f:
        return dict(f)


@pytest.fixture(scope="module")
def post():
    return ref.posterior()


@pytest.mark.parametrize("backend", ref.BACKENDS)
@pytest.mark.parametrize("sampler", ref.SAMPLERS)
def test_same_seed_same_draws_as_before(recorded, post, backend, sampler):
    got = ref.arrays(ref.run(backend, sampler, post))
    prefix = f"{backend}.{sampler}."
    want = {k.removeprefix(prefix): v for k, v in recorded.items() if k.startswith(prefix)}
    assert sorted(got) == sorted(want)
    rtol = 1e-10 if sampler == "mala" else 1e-12
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=1e-300, err_msg=f"{prefix}{name}")
