"""diagnose() never calls a broken run healthy (issue 9): incomplete, stuck, NaN-diagnostic and
off-target runs each give their named finding, on synthetic Traces built by the backends' own
builders (trace.build_trace + trace.run_attrs; no sampling) and on one real stuck NumPyro run."""

import json
import math
import warnings

import numpy as np
import pytest

from pplpatterning import GibbsPosterior, diagnose, llc, sample
from pplpatterning.estimators.diagnose import OFF_TARGET_Z
from pplpatterning.models import get_model
from pplpatterning.samplers.settings import SamplerSettings
from pplpatterning.trace import build_trace, run_attrs


@pytest.fixture(scope="module")
def post():
    model = get_model("regular", d=2)
    return GibbsPosterior(model, model.generate(200, seed=0))


def make_trace(post, loss_delta, *, params=None, incomplete_reason=None, sampler="nuts", **stats):
    """A Trace as a backend builds it, with the given per-draw loss_delta (chain, draw)."""
    loss_delta = np.asarray(loss_delta, dtype=np.float64)
    settings = SamplerSettings(sampler=sampler, num_chains=loss_delta.shape[0], num_draws=loss_delta.shape[1])
    attrs = run_attrs(post, settings, backend="numpyro", dtype="float64", packages=(),
                      incomplete_reason=incomplete_reason, sampling_seconds=1.0, evaluation_seconds=0.1)
    return build_trace(posterior=params or {}, attrs=attrs,
                       sample_stats={"loss": post.loss_at_centre + loss_delta, "loss_delta": loss_delta, **stats})


def healthy(post, mean=1.0, shape=(4, 1000), seed=0):
    """iid draws of nβ·ΔL with the given mean and sd 0.2: λ̂ ≈ mean ± 0.2/√N."""
    rng = np.random.default_rng(seed)
    return (mean + 0.2 * rng.normal(size=shape)) / post.n_beta


def test_a_healthy_trace_passes_and_reports_z(post):
    d = diagnose(make_trace(post, healthy(post)), target=1.0)
    assert d.ok and d.findings == () and not d.incomplete and d.incomplete_reason is None
    assert d.z == pytest.approx((d.estimate.llc - 1.0) / d.estimate.mcse, rel=1e-12) and abs(d.z) < OFF_TARGET_Z
    assert str(d) == "No problems found."
    out = json.loads(json.dumps(d.to_dict()))
    assert out == {"ok": True, "incomplete": False, "incomplete_reason": None, "z": d.z, "findings": []}


def test_off_target_is_an_error_with_z(post):
    tr = make_trace(post, healthy(post, mean=1.05))  # MCSE ≈ 0.2/√4000 ≈ 0.0032: z ≈ +16 against 1.0
    d = diagnose(tr, target=1.0)
    assert not d.ok and "off_target" in d.codes() and d.z > OFF_TARGET_Z
    f = next(f for f in d.findings if f.code == "off_target")
    assert f.severity == "error" and f"z = {d.z:+.1f}" in f.message
    # Against its own mean it is on target, and without a target nothing is said about it.
    assert diagnose(tr, target=d.estimate.llc).ok and diagnose(tr).ok and diagnose(tr).z is None
    assert OFF_TARGET_Z == 3.0


def test_incomplete_run_is_an_error_with_reason_and_draws_kept(post):
    delta = healthy(post)
    delta[:, 400:] = np.nan  # the evaluated prefix survives (contract C3)
    reason = "evaluation failed at draw 400: RuntimeError: boom"
    d = diagnose(make_trace(post, delta, incomplete_reason=reason))
    assert not d.ok and d.incomplete and d.incomplete_reason == reason
    assert d.findings[0].code == "incomplete" and d.findings[0].severity == "error"
    assert reason in d.findings[0].message and "1000 draws per chain" in d.findings[0].message
    assert "first 400" in d.findings[0].message
    assert {"incomplete", "nan_loss"} <= d.codes()
    assert d.estimate.num_draws_used == 400 and np.isfinite(d.estimate.llc)
    assert d.to_dict()["incomplete"] is True and d.to_dict()["incomplete_reason"] == reason
    # Interrupted with every kept draw finite: still not ok.
    d2 = diagnose(make_trace(post, healthy(post), incomplete_reason="interrupted (KeyboardInterrupt) at draw 1000"))
    assert not d2.ok and d2.codes() == {"incomplete"}


def test_constant_series_is_a_stuck_chain_not_a_pass(post):
    # λ̂ = 0 ± 0 (every chain at the centre): R-hat and ESS are NaN, which must not mean "healthy".
    d = diagnose(make_trace(post, np.zeros((4, 500))), target=1.0)
    assert not d.ok and "stuck_chain" in d.codes() and d.z is None
    assert diagnose(make_trace(post, np.full((4, 500), 0.3))).codes() == {"stuck_chain"}
    # One chain of four stuck at a non-zero loss, the others fine.
    delta = healthy(post)
    delta[2] = delta[2, 0]
    d = diagnose(make_trace(post, delta))
    assert "stuck_chain" in d.codes() and "chain 2 of 4" in str(d)


def test_frozen_parameters_are_a_stuck_chain_even_with_a_noisy_minibatch_loss(post):
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 500, 2))
    w[1] = w[1, 0]  # chain 1 never moves; its minibatch loss estimate still fluctuates
    d = diagnose(make_trace(post, healthy(post, shape=(4, 500)), params={"w": w}, sampler="sgld"))
    assert "stuck_chain" in d.codes() and "chain 1 of 4" in str(d)


def test_nan_diagnostics_are_an_error(post):
    d = diagnose(make_trace(post, healthy(post, shape=(4, 3))))  # too short for R-hat / ESS / MCSE
    assert not d.ok and "nan_diagnostic" in d.codes()
    assert "only 3 finite draws per chain" in str(d)
    with_target = diagnose(make_trace(post, healthy(post, shape=(4, 3))), target=1.0)
    assert "nan_diagnostic" in with_target.codes() and with_target.z is None
    # Diverged at draw 2 of one chain: the finite prefix is too short to judge.
    delta = healthy(post)
    delta[3, 2] = np.inf
    d = diagnose(make_trace(post, delta))
    assert {"nan_loss", "nan_diagnostic"} <= d.codes() and d.estimate.num_draws_used == 2


def test_negative_estimate_agreeing_with_a_negative_target_is_fine(post):
    tr = make_trace(post, healthy(post, mean=-0.3))
    assert "negative_llc" in diagnose(tr).codes()
    d = diagnose(tr, target=-0.3)
    assert d.ok and abs(d.z) < OFF_TARGET_Z
    assert {"negative_llc", "off_target"} <= diagnose(tr, target=1.0).codes()


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1.0", True, [1.0]])
def test_bad_target_is_refused(post, bad):
    with pytest.raises(ValueError, match="`target`"):
        diagnose(make_trace(post, healthy(post, shape=(2, 50))), target=bad)
    with pytest.raises(TypeError, match="`trace`"):
        diagnose({"sample_stats": None})


def test_llc_inside_diagnose_does_not_warn_twice(post):
    delta = healthy(post)
    delta[0, 900:] = np.nan
    tr = make_trace(post, delta)
    with pytest.warns(RuntimeWarning, match="dropped draws 900..999"):
        llc(tr)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        d = diagnose(tr)  # said by the nan_loss finding instead
    assert "uses the first 900 of 1000" in str(d)


def test_a_real_sampler_that_never_moves_is_stuck(post):
    # SGLD with ε = 1e-40 from the centre: w + 1e-20 ξ rounds back to w, so every draw is w*.
    tr = sample(post, sampler="sgld", step_size=1e-40, num_chains=2, num_draws=60, num_burnin=0, seed=0,
                progress_bar=False)
    assert np.ptp(tr["posterior"]["w"].values, axis=1).max() == 0.0
    d = diagnose(tr, target=1.0)
    assert not d.ok and "stuck_chain" in d.codes() and d.z is None
    assert "off_target" not in d.codes()  # no z from a rounding-noise MCSE
