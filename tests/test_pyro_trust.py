"""Pyro backend, issue 9: full-integer seeds, evaluate_at_centre (C1), integer data kept (C2),
and traces kept when a draw's evaluation fails mid-run (C3; since issue 11 every kept draw is
evaluated as it is made, so such a failure stops the run like any other)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pplpatterning as pp
from pplpatterning.models import get_model
from pplpatterning.models.linear import linear_loss
from pplpatterning.spec.probes import Probes
from pplpatterning.trace import trace_attr

pb = pytest.importorskip("pplpatterning.backends.pyro")
from pplpatterning.backends.pyro.chains import torch_seed  # noqa: E402
from pplpatterning.backends.pyro.hmc import chain_seeds  # noqa: E402


@pytest.fixture(scope="module")
def small_post():
    model = get_model("regular", d=2)
    return pp.GibbsPosterior(model, model.generate(20, seed=1), n_beta=20.0, gamma=1.0)


# ------------------------------------------------------------------------ seeds
def test_torch_seed_uses_every_bit_of_the_seed():
    """torch's generator keeps the low 32 bits of its seed: the derived seeds must differ there."""
    low = lambda s: torch_seed(s) & 0xFFFFFFFF  # noqa: E731
    assert low(5) != low(5 + 2**32)
    assert low(2**63 - 1) != low(2**63 - 1 - 2**32)
    assert torch_seed(12345) == torch_seed(12345)
    assert [c & 0xFFFFFFFF for c in chain_seeds(5, 2)] != [c & 0xFFFFFFFF for c in chain_seeds(5 + 2**32, 2)]


@pytest.mark.parametrize("sampler", ["mala", "sgld"])
def test_seeds_differing_by_2_pow_32_give_different_draws(small_post, sampler):
    kw = {} if sampler == "mala" else {"step_size": 1e-3, "batch_size": 5}

    def draws(seed):
        tr = pp.sample(small_post, backend="pyro", sampler=sampler, num_chains=2, num_draws=10, num_burnin=5,
                       seed=seed, progress_bar=False, **kw)
        return tr["posterior"]["w"].values

    a = draws(5)
    np.testing.assert_array_equal(a, draws(5))
    assert not np.array_equal(a, draws(5 + 2**32))
    top = draws(2**63 - 1)
    assert np.all(np.isfinite(top)) and not np.array_equal(top, a)


# ----------------------------------------------------------- C1: evaluate_at_centre
def test_evaluate_at_centre_matches_numpy_and_passes_all_params():
    model = get_model("regular", d=2)
    post = pp.GibbsPosterior(model, model.generate(20, seed=1), n_beta=20.0)
    seen = {}

    def fn(params, consts, xp):
        seen.update(keys=set(params), consts=set(consts), xp=xp, dtype=params["w"].dtype)
        return xp.sum(params["w"] * params["w"]) + 1.0

    threads, default = torch.get_num_threads(), torch.get_default_dtype()
    out = pb.evaluate_at_centre(post, fn)
    assert torch.get_num_threads() == threads and torch.get_default_dtype() == default
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == ()
    assert out == pytest.approx(float(np.sum(post.centre["w"] ** 2)) + 1.0, rel=1e-12)
    import array_api_compat.torch as xp_torch

    assert seen == {"keys": set(model.param_shapes), "consts": set(model.consts), "xp": xp_torch,
                    "dtype": torch.float64}
    assert pb.evaluate_at_centre(post, lambda p, c, xp: p["w"]).shape == (2,)  # the core checks shapes

    def broken(params, consts, xp):
        raise ZeroDivisionError("bad observable")

    with pytest.raises(ZeroDivisionError, match="bad observable"):  # never caught here
        pb.evaluate_at_centre(post, broken)


# -------------------------------------------------------------- C2: integer data
SEEN_DTYPES: list = []


def embedding_loss(params, batch, consts, xp):
    """l_i = (y_i - E[ids_i])² / 2: an embedding table indexed by integer token ids."""
    SEEN_DTYPES.append(batch["ids"].dtype)
    return (batch["y"] - xp.take(params["E"], batch["ids"], axis=0)) ** 2 / 2


def _embedding_post():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, size=40)
    E = np.linspace(-1.0, 1.0, 5)
    data = {"ids": ids.astype(np.int64), "y": E[ids] + 0.1 * rng.standard_normal(40),
            "big": np.full(40, 2**53 + 1, dtype=np.int64)}  # not exact in float64
    model = pp.Model(name="embedding", loss=embedding_loss, param_shapes={"E": (5,)}, centre={"E": E})
    return pp.GibbsPosterior(model, data, n_beta=20.0, gamma=1.0)


def test_integer_data_stay_integer_to_the_loss():
    """Needs GibbsPosterior to keep integer data (contract C2, pplpatterning/posterior.py)."""
    post = _embedding_post()
    tp = pb.torch_posterior(post)
    assert tp.data["ids"].dtype == torch.int64 and tp.data["y"].dtype == torch.float64
    assert int(tp.data["big"][0]) == 2**53 + 1
    for sampler, kw in (("mala", {}), ("sgld", {"step_size": 1e-3, "batch_size": 8})):
        SEEN_DTYPES.clear()
        tr = pp.sample(post, backend="pyro", sampler=sampler, num_chains=2, num_draws=20, num_burnin=10, seed=1,
                       progress_bar=False, **kw)
        torch_dtypes = {d for d in SEEN_DTYPES if isinstance(d, torch.dtype)}
        assert torch_dtypes == {torch.int64}, (sampler, SEEN_DTYPES)
        assert np.all(np.isfinite(tr["sample_stats"]["loss"].values)), sampler
        assert trace_attr(tr, "incomplete") == 0


def test_module_embedding_gets_integer_ids_without_input_dtype():
    """nn.Embedding on token ids through model_from_module, on the numpy and the torch path
    (needs GibbsPosterior to keep integer data, contract C2)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(6, 2), torch.nn.Linear(2, 1)).double()
    ids = np.random.default_rng(1).integers(0, 6, size=30)
    with torch.no_grad():
        y = net(torch.as_tensor(ids)).numpy() + 0.1
    model = pb.model_from_module(net, lambda out, batch: ((out - batch["y"]) ** 2).sum(-1) / 2,
                                 example_data={"x": ids, "y": y})
    post = pp.GibbsPosterior(model, {"x": ids, "y": y}, n_beta=10.0, gamma=10.0)
    tr = pp.sample(post, backend="pyro", sampler="sgld", num_chains=2, num_draws=10, num_burnin=5, step_size=1e-4,
                   batch_size=8, seed=2, progress_bar=False)
    assert np.all(np.isfinite(tr["sample_stats"]["loss"].values)) and trace_attr(tr, "incomplete") == 0


# ---------------------------------------------- C3: failing after-sampling evaluation
class FailingLoss:
    """The linear loss, raising ``exc`` on every torch call from call number ``fuse`` on."""

    def __init__(self, exc=RuntimeError("boom")):
        self.exc, self.fuse, self.calls = exc, None, 0

    def __call__(self, params, batch, consts, xp):
        if xp is not np:
            self.calls += 1
            if self.fuse is not None and self.calls >= self.fuse:
                raise self.exc
        return linear_loss(params, batch, consts, xp)


def _failing_post(exc=RuntimeError("boom")):
    base = get_model("regular", d=2)
    loss = FailingLoss(exc)
    model = pp.Model(name="failing", loss=loss, param_shapes=base.param_shapes, centre=base.centre,
                     consts=base.consts)
    data = base.generate(20, seed=1)
    return pp.GibbsPosterior(model, data, n_beta=20.0, gamma=1.0), loss, data


def _complete_then_failing(post, loss, fuse_of, **kw):
    """A complete run (counting the loss's torch calls), then the same run with the fuse set."""
    loss.calls, loss.fuse = 0, None
    full = pp.sample(post, backend="pyro", progress_bar=False, **kw)
    loss.fuse, loss.calls = fuse_of(loss.calls), 0
    return full, kw


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_mala_failure_in_a_draws_record_keeps_the_completed_draws(exc):
    """Every kept draw is evaluated as it is made (issue 11): a loss that fails in the record
    of the last draw stops the run there; the 299 completed draws keep their values."""
    post, loss, data = _failing_post(exc)
    obs = {"w0": pp.observables.param("w", 0)}
    kw = dict(sampler="mala", num_chains=2, num_draws=300, num_burnin=20, seed=3, observables=obs,
              probes=Probes(datasets={"q": {k: v[:10] for k, v in data.items()}}))
    # the last loss call of the complete run is the probe loss in the last draw's record
    full, kw = _complete_then_failing(post, loss, lambda total: total, **kw)
    with pytest.warns(RuntimeWarning, match="Sampling stopped early"):
        tr = pp.sample(post, backend="pyro", progress_bar=False, keep_params=False, **kw)
    assert trace_attr(tr, "incomplete") == 1
    reason = trace_attr(tr, "incomplete_reason")
    assert ("boom" if isinstance(exc, RuntimeError) else "KeyboardInterrupt") in reason
    assert not tr["posterior"].data_vars and tr["sample_stats"].sizes["draw"] == 299
    for group, name in (("sample_stats", "loss"), ("sample_stats", "loss_delta"), ("observables", "w0"),
                        ("probe_losses", "q"), ("sample_stats", "accept_prob")):
        np.testing.assert_array_equal(tr[group][name].values, full[group][name].values[:, :299], err_msg=name)


def test_nuts_failure_in_a_draws_record_keeps_the_completed_draws():
    post, loss, _ = _failing_post()
    kw = dict(sampler="nuts", num_chains=1, num_draws=20, num_burnin=20, seed=4)
    full, kw = _complete_then_failing(post, loss, lambda total: total, **kw)
    with pytest.warns(RuntimeWarning, match="Sampling stopped early: RuntimeError in chain 0 of 1: boom"):
        tr = pp.sample(post, backend="pyro", progress_bar=False, keep_params=True, **kw)
    assert trace_attr(tr, "incomplete") == 1
    assert "kept the 19 completed draw(s) of chain 0" in trace_attr(tr, "incomplete_reason")
    np.testing.assert_array_equal(tr["posterior"]["w"].values, full["posterior"]["w"].values[:, :19])
    for name in ("loss", "diverging"):
        np.testing.assert_array_equal(tr["sample_stats"][name].values, full["sample_stats"][name].values[:, :19])


def test_loss_failing_during_sampling_keeps_the_sampled_draws():
    """The loss fails from call 50 on: sampling stops; the completed draws and their values survive."""
    post, loss, _ = _failing_post()
    kw = dict(sampler="mala", num_chains=2, num_draws=100, num_burnin=10, seed=5)
    full, kw = _complete_then_failing(post, loss, lambda total: 50, **kw)
    with pytest.warns(RuntimeWarning, match="stopped early"):
        tr = pp.sample(post, backend="pyro", progress_bar=False, keep_params=True, **kw)
    reason = trace_attr(tr, "incomplete_reason")
    assert trace_attr(tr, "incomplete") == 1
    assert reason.startswith("RuntimeError at step") and "boom" in reason
    D = tr["posterior"].sizes["draw"]
    assert 0 < D < 100
    np.testing.assert_array_equal(tr["posterior"]["w"].values, full["posterior"]["w"].values[:, :D])
    np.testing.assert_array_equal(tr["sample_stats"]["loss"].values, full["sample_stats"]["loss"].values[:, :D])
