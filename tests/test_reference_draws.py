"""Same seed → the same draws as before the sampling-core redesign (issue 10).

tests/data/reference_draws.npz was recorded by ``python -m tests.reference_draws record``
on the code before the redesign. Every backend × sampler must reproduce its draws and its
sample_stats. Measured on the recording machine they agree bit for bit; the tolerance
(1e-12 relative) allows for a different CPU's floating-point summation order only.
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
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-12, atol=1e-300, err_msg=f"{prefix}{name}")
