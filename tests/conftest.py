import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Compiling JAX programs takes seconds: no per-example deadline, fixed example order.
settings.register_profile(
    "pplpatterning", deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("pplpatterning")

# JAX's persistent compilation cache (JAX reads these when it is imported; the library never
# sets them): the same settings as the Makefile exports, so a bare `pytest` hits the cache too.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_ROOT, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def linear_loss(params, batch, consts, xp):
    """Per-sample squared error of y = w·x, used by core tests that need no model zoo."""
    return (batch["y"] - batch["x"] @ params["w"]) ** 2 / 2 + 0.0 * params["b"]


@pytest.fixture
def tiny_model():
    from pplpatterning import Model

    return Model("tiny", linear_loss, {"w": (2,), "b": ()}, {"w": np.zeros(2), "b": np.zeros(())})


@pytest.fixture
def tiny_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 2))
    return {"x": x, "y": x @ np.array([0.5, -1.0]) + rng.normal(size=20)}
