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

os.environ.setdefault("PPLPATTERNING_JAX_CACHE", "1")


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
