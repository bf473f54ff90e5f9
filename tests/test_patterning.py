"""pattern(): the exact linear algebra, the step size, the bounded solve, group plans, errors, CLI.

No MCMC except the CLI round trip (a few seconds on the regular model).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import lsq_linear

import pplpatterning.sampling.core as sampling
from pplpatterning import GibbsPosterior
from pplpatterning.cli.main import main
from pplpatterning.models import get_model
from pplpatterning.patterning.pattern import pattern
from pplpatterning.patterning.plan import PatternPlan
from pplpatterning.patterning.solver import bounded_ridge_lstsq
from pplpatterning.patterning.verify import verify

OBS = ["a", "b", "c", "d"]


def per_sample(X: np.ndarray, n_beta: float = 20.0, weight=None) -> xr.Dataset:
    """An attribution()-shaped Dataset from a (k, N) matrix X."""
    k, N = X.shape
    ds = xr.Dataset({"chi": (("sample", "observable"), X.T), "se": (("sample", "observable"), 0.1 * np.abs(X.T))},
                    coords={"sample": np.arange(N), "observable": OBS[:k]}, attrs={"n_beta": n_beta})
    if weight is not None:
        ds["weight"] = ("sample", np.asarray(weight, dtype=np.float64))
    return ds


def per_probe(X: np.ndarray, n_beta: float = 20.0) -> xr.Dataset:
    k, P = X.shape
    return xr.Dataset({"chi": (("probe", "observable"), X.T)},
                      coords={"probe": [f"q{i}" for i in range(P)], "observable": OBS[:k]}, attrs={"n_beta": n_beta})


def centred(rng, k, N):
    X = rng.normal(size=(k, N))
    return X - X.mean(axis=1, keepdims=True)


# ------------------------------------------------------------------ exact linear algebra
@given(k=st.integers(1, 4), extra=st.integers(2, 30), seed=st.integers(0, 2**16))
def test_min_norm_reaches_targets_in_range_with_zero_sum(k, extra, seed):
    rng = np.random.default_rng(seed)
    N = k + extra
    X = centred(rng, k, N)  # 1 ∈ ker X, as for the equal-weight estimator
    dmu = X @ rng.normal(size=N)  # in the range of X
    plan = pattern(per_sample(X), dict(zip(OBS, dmu)), max_weight_change=0.5)
    s = plan.direction.values
    scale = np.abs(dmu).max()
    np.testing.assert_allclose(X @ s, dmu, atol=1e-9 * scale)  # X (X⁺ dμ) = dμ
    np.testing.assert_allclose(s, np.linalg.pinv(X) @ dmu, atol=1e-9 * np.abs(s).max())  # minimum norm
    assert abs(s.sum()) < 1e-10 * np.abs(s).sum()  # Σ s = 0 automatically
    assert plan.rank == k and np.isfinite(plan.condition)
    # the step: max |Δρ| = 0.5, predicted = α β X s = (α β) dμ, residual 0
    assert np.abs(plan.change.values).max() == pytest.approx(0.5, rel=1e-12)
    assert plan.alpha_source == "max_weight_change" and plan.scale == pytest.approx(20.0 / N)
    np.testing.assert_allclose(plan.predicted.values, plan.alpha * plan.scale * dmu, atol=1e-9 * scale)
    assert plan.residual_norm < 1e-9 * scale * plan.fraction + 1e-300
    np.testing.assert_allclose(plan.weights, 1.0 + plan.change.values, rtol=0, atol=1e-15)


def test_least_squares_when_the_target_is_outside_the_range():
    rng = np.random.default_rng(0)
    X = centred(rng, 2, 20)
    X = np.vstack([X, X[0] + 2 * X[1]])  # rank 2, three observables
    dmu = np.array([0.1, -0.2, 0.3])
    plan = pattern(per_sample(X), dict(zip(OBS, dmu)), fraction=0.01)
    assert plan.rank == 2 and plan.condition == np.inf
    ls = np.linalg.lstsq(X, dmu, rcond=None)
    np.testing.assert_allclose(plan.direction.values, ls[0], atol=1e-12)
    expected_residual = plan.fraction * (X @ ls[0] - dmu)
    np.testing.assert_allclose(plan.residual.values, expected_residual, atol=1e-14)
    assert plan.relative_residual > 0.1


def test_uncentred_matrix_still_gives_a_zero_sum_step():
    """With weights or a subset, 1 ∉ ker X: s = (X P)⁺ dμ, P = I - 11ᵀ/N, keeps Σ s = 0,
    which makes β X s the first-order change for raw weights."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2, 15)) + 0.5
    dmu = np.array([0.3, -0.1])
    plan = pattern(per_sample(X), dict(zip(OBS, dmu)), fraction=1e-3)
    s = plan.direction.values
    P = np.eye(15) - 1 / 15
    assert abs(s.sum()) < 1e-12
    np.testing.assert_allclose(s, np.linalg.pinv(X @ P) @ dmu, atol=1e-12)
    np.testing.assert_allclose(X @ s, dmu, atol=1e-12)


def test_step_from_fraction_cap_or_both():
    rng = np.random.default_rng(2)
    X = centred(rng, 1, 30)
    ds = per_sample(X, n_beta=15.0)
    beta = 15.0 / 30
    p1 = pattern(ds, {"a": 0.01})
    assert p1.alpha == pytest.approx(1 / beta) and p1.fraction == pytest.approx(1.0) and p1.alpha_source == "fraction"
    p2 = pattern(ds, {"a": 0.01}, fraction=0.25)
    assert p2.alpha == pytest.approx(0.25 / beta)
    np.testing.assert_allclose(p2.predicted.values, [0.0025], rtol=1e-10)
    p3 = pattern(ds, {"a": 0.01}, max_weight_change=0.3)
    assert np.abs(p3.change.values).max() == pytest.approx(0.3)
    both = pattern(ds, {"a": 0.01}, fraction=0.25, max_weight_change=1e-6)
    assert both.alpha_source == "max_weight_change" and both.alpha < p2.alpha


def test_negative_weights_are_refused_naming_the_largest_fraction():
    rng = np.random.default_rng(3)
    X = centred(rng, 1, 40)
    ds = per_sample(X)
    with pytest.raises(ValueError, match=r"negative.*Use fraction ≤ ([0-9.e-]+)") as exc:
        pattern(ds, {"a": 100.0})
    f_max = float(re.search(r"fraction ≤ ([0-9.e+-]+)", str(exc.value)).group(1))
    plan = pattern(ds, {"a": 100.0}, fraction=f_max * (1 - 1e-3))
    assert plan.weights.min() >= 0 and plan.weights.min() < 2e-3


def test_nonnegative_mode_keeps_weights_valid_and_reports_its_residual():
    rng = np.random.default_rng(4)
    X = centred(rng, 2, 60)
    ds = per_sample(X)
    target = {"a": 60.0, "b": -5.0}  # far beyond what ρ ≥ 0 allows
    plan = pattern(ds, target, nonnegative=True)
    w, d = plan.weights, plan.change.values
    assert plan.mode == "nonnegative" and w.min() >= 0 and np.sum(w == 0) > 0
    assert abs(d.sum()) < 1e-12 * np.abs(d).sum()
    np.testing.assert_allclose(plan.predicted.values, plan.scale * X @ d, rtol=1e-12)
    np.testing.assert_allclose(plan.residual.values, plan.predicted.values - np.array([60.0, -5.0]), rtol=1e-12)
    assert plan.relative_residual > 0.05  # it could not reach the target, and says so
    # same optimum as scipy's bounded least squares with the equality as a heavy row
    A, t = plan.scale * X, np.array([60.0, -5.0])
    r = plan.ridge * np.linalg.norm(A, 2) ** 2
    M = np.vstack([A, np.sqrt(r) * np.eye(60), 1e6 * np.ones((1, 60))])
    ref = lsq_linear(M, np.concatenate([t, np.zeros(61)]), bounds=(-np.ones(60), np.full(60, np.inf)),
                     method="bvls", tol=1e-15).x

    def obj(v):
        return 0.5 * np.sum((A @ v - t) ** 2) + 0.5 * r * v @ v

    assert obj(d) <= obj(ref) * (1 + 1e-9)
    # reachable targets: the bounded solve agrees with the minimum-norm one
    small = pattern(ds, {"a": 0.05, "b": 0.02}, nonnegative=True)
    free = pattern(ds, {"a": 0.05, "b": 0.02})
    np.testing.assert_allclose(small.change.values, free.change.values, atol=1e-6 * np.abs(free.change.values).max())
    capped = pattern(ds, target, nonnegative=True, max_weight_change=0.2)
    assert np.abs(capped.change.values).max() <= 0.2 + 1e-15


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("sum_zero", [True, False])
def test_bounded_ridge_lstsq_matches_scipy(seed, sum_zero):
    rng = np.random.default_rng(seed)
    k, N = 1 + seed % 3, 25
    A = rng.normal(size=(k, N))
    t = 5 * rng.normal(size=k)
    r = 10.0 ** rng.uniform(-6, 0)
    lo = -rng.uniform(0, 1, N)
    hi = np.where(rng.uniform(size=N) < 0.5, np.inf, rng.uniform(0, 2, N))
    d = bounded_ridge_lstsq(A, t, r, lo, hi, sum_zero=sum_zero)
    assert np.all(d >= lo - 1e-15) and np.all(d <= hi + 1e-15)
    rows = [A, np.sqrt(r) * np.eye(N)] + ([1e6 * np.ones((1, N))] if sum_zero else [])
    rhs = np.concatenate([t, np.zeros(N + (1 if sum_zero else 0))])
    ref = lsq_linear(np.vstack(rows), rhs, bounds=(lo, hi), method="bvls", tol=1e-15).x

    def obj(v):
        return 0.5 * np.sum((A @ v - t) ** 2) + 0.5 * r * v @ v

    if sum_zero:
        assert abs(d.sum()) < 1e-12 * max(np.abs(d).sum(), 1.0)
    assert obj(d) <= obj(ref) + 1e-9 * max(obj(ref), 1e-12)
    np.testing.assert_allclose(d, ref, atol=1e-5 * max(np.abs(ref).max(), 1.0))


def test_ridge_damps_small_singular_directions():
    rng = np.random.default_rng(5)
    X = centred(rng, 2, 30)
    X[1] = X[0] + 1e-4 * X[1]  # nearly collinear rows: ill-conditioned
    dmu = np.array([0.01, 0.02])
    plain = pattern(per_sample(X), dict(zip(OBS, dmu)), max_weight_change=0.5)
    ridged = pattern(per_sample(X), dict(zip(OBS, dmu)), ridge=1e-3, fraction=1e-3)
    assert plain.condition > 1e4 and ridged.mode == "ridge"
    U, S, Vt = np.linalg.svd(X, full_matrices=False)
    expected = Vt.T @ ((S / (S**2 + 1e-3 * S[0] ** 2)) * (U.T @ dmu))
    np.testing.assert_allclose(ridged.direction.values, expected, rtol=1e-10)
    assert np.linalg.norm(ridged.direction) < 1e-2 * np.linalg.norm(plain.direction)
    assert ridged.relative_residual > 0.01  # the ridge gives up the ill-conditioned part of the target


# ---------------------------------------------------------------------------- groups
def test_group_level_dh_and_mixture_posterior():
    model = get_model("regular", d=2)
    data = model.generate(50, seed=0)
    post = GibbsPosterior(model, data, gamma=1.0, n_beta=30.0)
    rng = np.random.default_rng(0)
    chi = np.array([[0.02, -0.01, 0.005], [0.0, 0.03, -0.01]])  # (observable, probe)
    dmu = np.array([0.01, 0.02])
    plan = pattern(per_probe(chi, n_beta=30.0), dict(zip(OBS, dmu)), fraction=0.5)
    assert plan.level == "group" and plan.scale == 30.0
    np.testing.assert_allclose(plan.change.values, 0.5 * np.linalg.pinv(chi) @ dmu / 30.0, rtol=1e-12)  # dh = χ⁺dμ/nβ
    np.testing.assert_allclose(plan.predicted.values, 30.0 * chi @ plan.change.values, rtol=1e-12)
    assert plan.weights is None
    # the probes as external data sets: L^ρ of the mixture posterior = (1 - Σh) L + Σ h_k L_k
    nn = pattern(per_probe(chi, n_beta=30.0), dict(zip(OBS, dmu)), fraction=0.5, nonnegative=True)
    assert np.all(nn.change.values >= 0)
    sets = {f"q{i}": model.generate(10 + i, seed=10 + i) for i in range(3)}
    mixed = nn.apply(post, datasets=sets)
    assert mixed.n_beta == post.n_beta and mixed.gamma == post.gamma
    h = dict(zip(nn.change["probe"].values, nn.change.values))
    for _ in range(3):
        w = {"w": rng.normal(size=2)}
        expect = (1 - sum(h.values())) * post.loss(w) + sum(
            v * float(np.mean(model.per_sample_loss_numpy(w, sets[p]))) for p, v in h.items())
        assert mixed.loss(w) == pytest.approx(expect, rel=1e-12)
    with pytest.raises(ValueError, match="pass `datasets`"):
        nn.apply(post)
    # the probes as training rows: per-sample weights (1 - Σh) + h_k n/|S_k| on S_k
    groups = {"q0": np.arange(0, 10), "q1": np.arange(10, 30), "q2": np.arange(25, 50)}
    gp = pattern(per_probe(chi, n_beta=30.0), dict(zip(OBS, dmu)), fraction=0.5, groups=groups, n=50)
    w_expect = np.full(50, 1 - gp.change.values.sum())
    for (p, idx), v in zip(groups.items(), gp.change.values):
        w_expect[idx] += v * 50 / idx.size
    np.testing.assert_allclose(gp.weights, w_expect, rtol=1e-12)
    assert gp.apply(post).weights is not None


# --------------------------------------------------------------------------- checks
def test_apply_checks_the_posterior():
    model = get_model("regular", d=2)
    post = GibbsPosterior(model, model.generate(30, seed=0), gamma=1.0)
    X = centred(np.random.default_rng(0), 1, 30)
    plan = pattern(per_sample(X, n_beta=post.n_beta), {"a": 0.001})
    assert np.array_equal(plan.apply(post).weights, plan.weights)
    other = GibbsPosterior(model, model.generate(40, seed=0), gamma=1.0)
    with pytest.raises(ValueError, match="n = 30"):
        plan.apply(other)
    with pytest.raises(ValueError, match="effective weights differ"):
        plan.apply(post.with_(weights=np.linspace(0.5, 1.5, 30)))


@pytest.mark.parametrize("kwargs, message", [
    ({"target": {"zz": 0.1}}, r"observables \['zz'\] that are not in `chi`"),
    ({"target": {"a": 0.0}}, "asks for no change"),
    ({"target": {"a": float("nan")}}, r"`target\['a'\]` must be a finite number"),
    ({"target": {}}, "non-empty mapping"),
    ({"fraction": -1.0}, "`fraction` must be a finite positive number"),
    ({"max_weight_change": 0}, "`max_weight_change`"),
    ({"ridge": -1e-3}, "`ridge` must be a finite number ≥ 0"),
    ({"n": 5}, "`n` must be an integer ≥ the 10 recorded"),
])
def test_bad_arguments(kwargs, message):
    ds = per_sample(centred(np.random.default_rng(0), 2, 10))
    args = {"target": {"a": 0.1}, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        pattern(ds, **args)


def test_bad_chi_inputs():
    X = centred(np.random.default_rng(0), 1, 10)
    ds = per_sample(X)
    with pytest.raises(ValueError, match="held-out points"):
        pattern(ds.rename({"sample": "held_out_sample"}), {"a": 0.1})
    bad = ds.copy(deep=True)
    bad["chi"][3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pattern(bad, {"a": 0.1})
    with pytest.raises(ValueError, match="χ is zero"):
        pattern(per_sample(np.zeros((1, 10))), {"a": 0.1})
    with pytest.raises(ValueError, match="n_beta"):
        pattern(ds.assign_attrs(n_beta=None).drop_attrs(), {"a": 0.1})
    with pytest.raises(TypeError, match="attribution"):
        pattern(ds["chi"], {"a": 0.1})
    subset = ds.assign_coords(sample=np.arange(10) * 3)
    with pytest.raises(ValueError, match="pass `n`"):
        pattern(subset, {"a": 0.1})
    plan = pattern(subset, {"a": 0.01}, n=40, fraction=0.1)
    assert plan.weights.shape == (40,) and np.all(plan.weights[np.setdiff1d(np.arange(40), np.arange(10) * 3)] == 1)
    with pytest.raises(ValueError, match="base_weights"):
        pattern(per_sample(X, weight=np.linspace(0.5, 1.5, 10)).assign_coords(sample=np.arange(10) * 3),
                {"a": 0.1}, n=40)


def test_str_table_and_dict():
    X = centred(np.random.default_rng(0), 3, 20)
    plan = pattern(per_sample(X), {"a": 0.01, "b": -0.02}, fraction=0.5)
    text = str(plan)
    for label in ("Patterning plan", "rank 2", "condition", "α =", "weights ρ", "residual", "(not targeted)",
                  "κ = β = nβ/n"):
        assert label in text, label
    tab = plan.table
    assert list(tab.index) == ["a", "b", "c"] and tab["targeted"].tolist() == [True, True, False]
    assert np.isnan(tab.loc["c", "target"]) and np.isfinite(tab.loc["c", "predicted"])
    d = json.loads(json.dumps(plan.to_dict(), default=float))
    assert d["rank"] == 2 and d["weights"]["changed"] == 20 and abs(d["sum_change"]) < 1e-14
    assert isinstance(plan, PatternPlan)


def test_verify_checks_before_sampling(monkeypatch):
    monkeypatch.setattr(sampling, "get_backend", lambda name: pytest.fail("verify sampled before checking"))
    model = get_model("regular", d=2)
    post = GibbsPosterior(model, model.generate(30, seed=0), gamma=1.0)
    plan = pattern(per_sample(centred(np.random.default_rng(0), 1, 30), n_beta=post.n_beta), {"a": 1e-3})
    phi = {"a": lambda p, xp: p["w"][0]}
    with pytest.raises(ValueError, match=r"lacks the plan's targeted observables \['a'\]"):
        verify(post, plan, observables={"b": phi["a"]})
    with pytest.raises(ValueError, match="nβ"):
        verify(post.with_(n_beta=3.0), plan, observables=phi)
    with pytest.raises(ValueError, match="n = 30"):
        verify(GibbsPosterior(model, model.generate(31, seed=0), gamma=1.0, n_beta=post.n_beta), plan,
               observables=phi)
    with pytest.raises(TypeError, match="PatternPlan"):
        verify(post, "plan", observables=phi)


# ------------------------------------------------------------------------------- CLI
FAST = ["--model", "regular", "--n", "100", "--draws", "400", "--burnin", "200", "--no-progress", "--gamma", "5",
        "--probe-thinning", "2"]


def test_cli_pattern_json_verify_and_weights(capsys, tmp_path):
    csv, png = tmp_path / "w.csv", tmp_path / "resp.png"
    code = main(["pattern", *FAST, "--observable", "param:w:0", "--observable", "loss", "--target", "w_0=0.02",
                 "--fraction", "0.5", "--verify", "--json", "--save-weights", str(csv), "--plot", str(png)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["observable"]: r for r in out["plan"]["table"]}
    assert rows["w_0"]["targeted"] and rows["w_0"]["predicted"] == pytest.approx(0.01, rel=1e-9)
    assert not rows["loss"]["targeted"] and np.isfinite(rows["loss"]["predicted"])
    ver = {r["observable"]: r for r in out["verification"]["table"]}
    assert set(ver) == {"w_0", "loss"} and ver["w_0"]["realized_se"] > 0 and ver["w_0"]["predicted_se"] > 0
    assert set(out["seconds"]) == {"sample", "chi", "pattern", "verify"}
    weights = pd.read_csv(csv)
    assert list(weights.columns) == ["sample", "weight"] and len(weights) == 100
    assert weights["weight"].sum() == pytest.approx(100.0, rel=1e-12)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_pattern_table(capsys):
    assert main(["pattern", *FAST, "--draws", "200", "--observable", "param:w:0", "--target", "w_0=0.01",
                 "--fraction", "0.2"]) == 0
    out = capsys.readouterr().out
    for label in ("Patterning plan", "rank 1", "weights ρ", "w_0", "seconds: sample"):
        assert label in out, label


@pytest.mark.parametrize("argv, message", [
    (["--target", "nope=0.1"], r"--target names observables \['nope'\]"),
    (["--target", "loss=0"], "asks for no change"),
    (["--target", "loss=0.1", "--fraction", "-2"], "`fraction`"),
    (["--target", "loss=0.1", "--plot", "x.png"], "needs --verify"),
    (["--target", "loss=0.1", "--save-weights", "w.txt"], r"\.npy or \.csv"),
    (["--target", "A=0.1", "--observable", "A=model:no_such_fn"], "cannot import 'no_such_fn'"),
    (["--target", "loss=0.1", "--centre", "zz=1"], "--centre zz=...: unknown parameter"),
    (["--target", "loss=0.1", "--draws", "1000000000"], r"num_draws ≤ \d+"),
])
def test_cli_bad_input_exits_2_before_sampling(capsys, monkeypatch, argv, message):
    monkeypatch.setattr(sampling, "get_backend", lambda name: pytest.fail("validation let it reach the backend"))
    assert main(["pattern", *FAST, *argv]) == 2
    err = capsys.readouterr().err
    assert "pplpatterning pattern: error:" in err
    assert re.search(message, err), err


def test_cli_model_observable_spec(capsys, monkeypatch):
    """model:ATTR resolves in the model's module; checked before sampling (then stopped)."""
    monkeypatch.setattr(sampling, "get_backend", lambda name: (_ for _ in ()).throw(ValueError("stop here")))
    argv = ["pattern", "--model", "two_solutions", "--model-arg", "p=0.7", "--centre", "a=1", "--centre", "b=1",
            "--observable", "A=model:on_solution_a", "--target", "A=0.1", "--no-progress"]
    assert main(argv) == 2
    assert "stop here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pattern", "--model", "regular", "--target", "loss"])  # not NAME=DELTA
