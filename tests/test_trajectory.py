"""LLC trajectories over checkpoints (issue 12, items 4 and 5): one compilation for every
checkpoint, the same numbers as separate sample() + llc() runs with the derived seeds,
resumption from a store, Dask workers, components, validation before sampling; the stage
detector on synthetic curves; the trajectory plots."""

import concurrent.futures
import pickle

import numpy as np
import pytest
import xarray as xr

import pplpatterning as pp
from pplpatterning.backends.numpyro import driver
from pplpatterning.models import get_model
from pplpatterning.spec.checkpoints import Checkpoint, save_checkpoint
from pplpatterning.workflows import trajectory
from pplpatterning.workflows.stages import detect_stages, turning_point_threshold
from pplpatterning.workflows.trajectory import WHOLE, SharedPayload, job_seed, llc_trajectory

# one sampler setting (no burn-in: no burn-in program) and one observable for the whole file, so
# that one compiled program serves every unrestricted job of every test and one more the component
OBS = {"u0": pp.observables.param("u", (0,))}
KW = dict(sampler="sgld", step_size=1e-3, batch_size=50, num_chains=2, num_draws=40, num_burnin=0, observables=OBS)
MASK = {"v": np.array([True, False])}
STEPS = (10, 100, 1000)
RESULTS = ["llc", "llc_mcse", "rhat", "ess", "ess_tail", "seed", "incomplete", "num_draws_used", "loss_at_centre",
           "healthy", "problems"]


@pytest.fixture(scope="module")
def post():
    model = get_model("regular", d=3, split=1)  # parameters u (1,), v (2,)
    return pp.GibbsPosterior(model, model.generate(200, seed=0), gamma=10.0, n_beta=50.0)


@pytest.fixture(scope="module")
def checkpoints(post):
    """Three centres: the model's centre perturbed (a stand-in for three training steps)."""
    rng = np.random.default_rng(1)
    return [Checkpoint(s, {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in post.centre.items()})
            for s in STEPS]


@pytest.fixture(scope="module")
def reference(post, checkpoints):
    return llc_trajectory(checkpoints, post, progress_bar=False, **KW)


def same_results(a: xr.Dataset, b: xr.Dataset) -> None:
    for var in RESULTS:
        xr.testing.assert_equal(a[var], b[var])


def test_three_checkpoints_compile_once(post, checkpoints):
    driver.clear_program_cache()
    driver.PROGRAM_TRACES.clear()
    ds = llc_trajectory(checkpoints, post, progress_bar=False, **KW)
    assert dict(driver.PROGRAM_TRACES) == {"draw": 1}  # one trace (= one compilation) of the sampling scan
    assert ds.sizes == {"checkpoint": 3, "observable": 1}
    llc_trajectory(checkpoints[:2], post, progress_bar=False, seed=7, **KW)  # another seed: same program
    assert dict(driver.PROGRAM_TRACES) == {"draw": 1}


def test_equals_separate_sample_and_llc_with_the_derived_seeds(post, checkpoints, reference, tmp_path):
    assert list(reference["checkpoint"].values) == list(STEPS)
    for i, c in enumerate(checkpoints):
        p = post.with_(centre=c.params)
        trace = pp.sample(p, seed=job_seed(0, c.step, WHOLE), progress_bar=False, keep_params=False, **KW)
        est, diag = pp.llc(trace), pp.diagnose(trace)
        row = reference.isel(checkpoint=i)
        assert (float(row.llc), float(row.llc_mcse), float(row.rhat), float(row.ess)) == (
            est.llc, est.mcse, est.rhat, est.ess_bulk)
        # each job's health is diagnose()'s verdict on its trace (these 40-draw runs have findings)
        assert (int(row.healthy), str(row.problems.values)) == (int(diag.ok), " ".join(diag.problem_codes()))
        assert float(row.loss_at_centre) == p.loss_at_centre
        assert int(row.seed) == job_seed(0, c.step)
    assert len(set(reference["seed"].values.tolist())) == 3
    # the same run from a checkpoint directory, and from (step, params) pairs given out of order
    for c in checkpoints:
        save_checkpoint(tmp_path / "run", c.step, c.params)
    same_results(llc_trajectory(tmp_path / "run", post, progress_bar=False, **KW), reference)
    pairs = [(c.step, dict(c.params)) for c in reversed(checkpoints)]
    same_results(llc_trajectory(pairs, post, progress_bar=False, **KW), reference)


def test_resume_after_an_interruption_redoes_nothing(post, checkpoints, reference, tmp_path, monkeypatch):
    real, calls = trajectory.sample, []

    def flaky(*args, **kwargs):
        calls.append(kwargs["seed"])
        if len(calls) == 2 and flaky.interrupt:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    flaky.interrupt = True
    monkeypatch.setattr(trajectory, "sample", flaky)
    store = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt) as info:
        llc_trajectory(checkpoints, post, store=store, progress_bar=False, **KW)
    assert "1 of 3 jobs had finished" in "".join(getattr(info.value, "__notes__", []))
    assert len(list((store / "jobs").glob("*.nc"))) == 1 and not list(store.rglob("*.tmp"))

    flaky.interrupt = False
    calls.clear()
    resumed = llc_trajectory(checkpoints, post, store=store, progress_bar=False, **KW)
    assert calls == [job_seed(0, 100), job_seed(0, 1000)]  # the first checkpoint was not redone
    same_results(resumed, reference)
    calls.clear()
    same_results(llc_trajectory(checkpoints, post, store=store, progress_bar=False, **KW), reference)
    assert calls == []

    with pytest.raises(ValueError, match="holds a different run.*seed"):
        llc_trajectory(checkpoints, post, store=store, progress_bar=False, seed=1, **KW)
    with pytest.raises(ValueError, match="holds a different run.*sampler"):
        llc_trajectory(checkpoints, post, store=store, progress_bar=False, **{**KW, "step_size": 2e-3})
    moved = [Checkpoint(c.step, {k: v + 1.0 for k, v in c.params.items()}) for c in checkpoints]
    with pytest.raises(ValueError, match="holds a different run.*step 10.*params"):
        llc_trajectory(moved, post, store=store, progress_bar=False, **KW)
    assert calls == []


def test_dask_workers_and_executors_give_the_serial_numbers(post, checkpoints, reference):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        same_results(llc_trajectory(checkpoints, post, client=client, progress_bar=False, **KW), reference)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        same_results(llc_trajectory(checkpoints, post, client=pool, progress_bar=False, **KW), reference)


def test_the_shared_payload_travels_once_per_process(post):
    payload = SharedPayload({"posterior": post})
    blob = pickle.dumps(payload)
    first, second = pickle.loads(blob), pickle.loads(blob)
    assert first is second  # one unpickled template per process: the compiled programs are reused
    assert first.value["posterior"].model.loss is post.model.loss
    assert float(first.value["posterior"].loss_at_centre) == post.loss_at_centre


def test_components_add_a_component_dim(post, checkpoints, reference):
    ds = llc_trajectory(checkpoints[:2], post, components={"v[0]": MASK}, progress_bar=False, **KW)
    assert ds["llc"].dims == ("checkpoint", "component")
    assert ds["observable_mean"].dims == ("checkpoint", "component", "observable")
    assert list(ds["component"].values) == [WHOLE, "v[0]"]
    same_results(ds.sel(component=WHOLE).drop_vars("component"), reference.isel(checkpoint=slice(0, 2)))
    c = checkpoints[1]
    p = pp.refine(post.with_(centre=c.params), component=MASK)  # a mask passes straight to refine
    est = pp.llc(pp.sample(p, seed=job_seed(0, c.step, "v[0]"), progress_bar=False, keep_params=False, **KW))
    assert float(ds["llc"].sel(checkpoint=c.step, component="v[0]")) == est.llc


def test_data_refined_trajectory_and_observables_per_posterior(post, checkpoints):
    q = post.model.generate(200, seed=5)  # q' of the same size: the same compiled program
    seen = []

    def per_posterior(p):  # observables built from each job's posterior
        seen.append(p)
        return OBS

    kw = {k: v for k, v in KW.items() if k != "observables"}
    ds = llc_trajectory(checkpoints[:2], post, data=q, observables=per_posterior, progress_bar=False, **kw)
    c = checkpoints[1]
    p = pp.refine(post.with_(centre=c.params), data=q)
    est = pp.llc(pp.sample(p, seed=job_seed(0, c.step), progress_bar=False, keep_params=False, **KW))
    assert float(ds["llc"].sel(checkpoint=c.step)) == est.llc
    assert float(ds["loss_at_centre"].sel(checkpoint=c.step)) == post.with_(centre=c.params).loss_at_centre
    assert seen[-1].data["x"] is not post.data["x"] and np.array_equal(seen[-1].data["x"], q["x"])


def test_observables_are_averaged_per_job(checkpoints, reference):
    assert reference["observable_mean"].dims == ("checkpoint", "observable")
    # the draws stay near each checkpoint's centre (γ = 10 localizes: posterior sd ≤ 1/√10)
    centres = [float(c.params["u"][0]) for c in checkpoints]
    np.testing.assert_allclose(reference["observable_mean"].sel(observable="u0").values, centres, atol=0.5)
    assert np.all(reference["observable_mcse"].values > 0)


BAD = [
    (dict(checkpoints="wrong shape"), ValueError, "step 100: parameter 'v' has shape"),
    (dict(checkpoints="missing"), ValueError, "lacks \\['v'\\]"),
    (dict(checkpoints="duplicate"), ValueError, "repeat the steps \\[10\\]"),
    (dict(components={"x": "W9"}), ValueError, "unknown"),
    (dict(components={"x": {"v": np.ones(3, dtype=bool)}}), ValueError, "has shape"),
    (dict(components={"x": {"v": np.ones(2)}}), TypeError, "boolean mask"),
    (dict(components={WHOLE: "u"}), ValueError, "may not use the name"),
    (dict(observables={"bad": pp.observables.param("w")}), ValueError, "w"),
    (dict(step_size=-1.0), ValueError, "step_size"),
    (dict(alpha=0.5), ValueError, "Unknown option"),
    (dict(batch_size=500), ValueError, "batch_size"),
    (dict(keep_params=True), TypeError, "keep_params"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(client=object()), TypeError, "client"),
    (dict(backend="tensorflow"), ValueError, "backend"),
]


@pytest.mark.parametrize("change, error, match", BAD)
def test_bad_input_raises_before_any_sampling(post, checkpoints, monkeypatch, change, error, match):
    def never(*args, **kwargs):
        raise AssertionError("sample() ran before the input was checked")

    monkeypatch.setattr(trajectory, "sample", never)
    ckpts, kw = list(checkpoints), {**KW, **change}
    kind = kw.pop("checkpoints", None)
    if kind == "wrong shape":
        ckpts[1] = Checkpoint(100, {**checkpoints[1].params, "v": np.zeros(3)})
    elif kind == "missing":
        ckpts[1] = Checkpoint(100, {k: v for k, v in checkpoints[1].params.items() if k != "v"})
    elif kind == "duplicate":
        ckpts[1] = Checkpoint(10, checkpoints[1].params)
    with pytest.raises(error, match=match):
        llc_trajectory(ckpts, post, progress_bar=False, **kw)


def test_a_store_that_is_a_file_is_refused(post, checkpoints, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        llc_trajectory(checkpoints, post, store=tmp_path / "f", progress_bar=False, **KW)


def test_job_seeds_depend_on_identity_only():
    assert job_seed(0, 10) == job_seed(0, 10, WHOLE)
    seeds = {job_seed(s, t, c) for s in (0, 1) for t in (0, 10, 11) for c in (WHOLE, "a", "b")}
    assert len(seeds) == 18 and all(0 <= s < 2**63 for s in seeds)


# ----------------------------------------------------------------------------- stages
LOG_STEPS = np.unique(np.round(np.logspace(1, 5, 41)).astype(int))
SE = 0.3


def cosine_curve():
    """Turning points at 1e2 (min), 1e3 (max), 1e4 (min) in log step; amplitude 3 = 10 SE."""
    x = np.log10(LOG_STEPS)
    return 5.0 + 3.0 * np.cos(np.pi * (x - 3.0))


def test_stages_finds_the_turning_points_of_a_noisy_curve():
    rng = np.random.default_rng(0)
    for _ in range(10):
        found = detect_stages(LOG_STEPS, cosine_curve() + SE * rng.standard_normal(LOG_STEPS.size), SE)
        assert len(found) == 3, found
        # located within 0.3 decades (3 checkpoints) of the true extrema
        np.testing.assert_allclose(np.log10(found), [2.0, 3.0, 4.0], atol=0.3)


def test_stages_with_one_error_bar_per_checkpoint():
    rng = np.random.default_rng(3)
    se = np.linspace(0.15, 0.45, LOG_STEPS.size)
    found = detect_stages(LOG_STEPS, cosine_curve() + se * rng.standard_normal(LOG_STEPS.size), se)
    np.testing.assert_allclose(np.log10(found), [2.0, 3.0, 4.0], atol=0.3)


@pytest.mark.parametrize("shape", ["flat", "monotone"])
def test_stages_finds_none_on_flat_or_monotone_curves_at_rate_at_most_alpha(shape):
    """Over 300 noisy curves the fraction with any boundary is ≤ α + 4 binomial standard errors."""
    rng = np.random.default_rng(5)
    x = np.log10(LOG_STEPS)
    mean = np.full(x.size, 5.0) if shape == "flat" else 2.0 + 8.0 / (1.0 + np.exp(-3.0 * (x - 3.0)))  # a sigmoid rise
    trials, alpha = 300, 0.05
    hits = sum(bool(detect_stages(LOG_STEPS, mean + SE * rng.standard_normal(x.size), SE)) for _ in range(trials))
    assert hits / trials <= alpha + 4 * np.sqrt(alpha * (1 - alpha) / trials)
    assert detect_stages(LOG_STEPS, mean, SE) == []  # and none on the curve itself


def test_stage_threshold_and_input_checks():
    t10, t100 = turning_point_threshold(np.ones(10)), turning_point_threshold(np.ones(100))
    assert 2.0 < t10 < t100 < 5.0
    assert turning_point_threshold(np.full(10, 7.0)) == t10  # scale-free
    assert detect_stages([1, 2], [0.0, 5.0], 0.1) == []
    with pytest.raises(ValueError, match="strictly increasing"):
        detect_stages([1, 3, 2], [0, 1, 0], 0.1)
    with pytest.raises(ValueError, match="`se`"):
        detect_stages([1, 2, 3], [0, 1, 0], 0.0)
    with pytest.raises(ValueError, match="`llc`"):
        detect_stages([1, 2, 3], [0, 1], 0.1)


# ----------------------------------------------------------------------------- plots
def synthetic_trajectory(components: bool) -> xr.Dataset:
    rng = np.random.default_rng(2)
    llc = cosine_curve() + SE * rng.standard_normal(LOG_STEPS.size)
    data = {"llc": ("checkpoint", llc), "llc_mcse": ("checkpoint", np.full(llc.size, SE)),
            "loss_at_centre": ("checkpoint", 1.0 / np.log10(LOG_STEPS))}
    ds = xr.Dataset(data, coords={"checkpoint": LOG_STEPS}, attrs={"model": "toy"})
    if components:
        parts = [ds[["llc", "llc_mcse"]] * f for f in (1.0, 0.5, 0.3)]
        ds = xr.concat(parts, dim=xr.DataArray([WHOLE, "a", "b"], dims="component")).assign(
            loss_at_centre=ds["loss_at_centre"])
    return ds


def test_plot_llc_trajectory_draws_curve_loss_and_stages(tmp_path):
    from pplpatterning.plots import save_figure
    from pplpatterning.trajectory_plots import plot_llc_trajectory

    ds = synthetic_trajectory(False)
    ax = plot_llc_trajectory(ds)
    stages = detect_stages(LOG_STEPS, ds["llc"].values, SE)
    assert len(stages) == 3
    assert len(ax.lines) == 1 + len(stages) and ax.get_xscale() == "log"
    assert len(ax.collections) == 1  # the ±2 MCSE band
    loss_axes = ax.figure.axes[-1]
    assert loss_axes is not ax and len(loss_axes.lines) == 1
    assert save_figure(ax.figure, tmp_path / "t.png").stat().st_size > 0
    bare = plot_llc_trajectory(ds, loss=False, stages=False)
    assert len(bare.lines) == 1 and len(bare.figure.axes) == 1
    assert len(plot_llc_trajectory(ds, stages=[100, 1000]).lines) == 3


def test_plot_rllc_trajectory_one_line_per_component():
    from pplpatterning.trajectory_plots import plot_llc_trajectory, plot_rllc_trajectory

    ds = synthetic_trajectory(True)
    ax = plot_rllc_trajectory(ds)
    assert len(ax.lines) == 2 and len(ax.collections) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert len(plot_rllc_trajectory(ds, whole=True).lines) == 3
    assert len(plot_llc_trajectory(ds, component="a", loss=False, stages=False).lines) == 1
    with pytest.raises(ValueError, match="components"):
        plot_rllc_trajectory(ds, components=["c"])
    with pytest.raises(ValueError, match="component"):
        plot_rllc_trajectory(ds.sel(component=WHOLE))


def test_tiny_transformer_trajectory_with_heads_compiles_once_per_restriction(tmp_path):
    """The built-in transformer over 3 checkpoints with its two heads as mask components:
    one program for the whole network and one shared by both heads (same mask size), the
    numbers of separate sample() + llc() calls, and a rerun from the store samples nothing
    (no new trace, same numbers)."""
    from pplpatterning.models.transformer import InductionTask, TransformerConfig, init_params, transformer_components
    from pplpatterning.models.transformer import transformer_model

    config = TransformerConfig(vocab=5, context=6, d_model=8, n_heads=2, d_head=4, n_layers=1)
    task = InductionTask(vocab=5, seq_len=7, span=(2, 2))
    model = transformer_model(config, task=task)
    post = pp.GibbsPosterior(model, {"tokens": task.sample(64, 0).tokens}, gamma=100.0, n_beta=20.0)
    ckpts = [Checkpoint(s, init_params(config, seed=s)) for s in (0, 5, 50)]
    heads = transformer_components(config, mlps=False, embed=False, unembed=False)
    assert list(heads) == ["layer 0 head 0", "layer 0 head 1"]
    kw = dict(sampler="sgld", step_size=1e-4, batch_size=16, num_chains=2, num_draws=20, num_burnin=0)
    driver.clear_program_cache()
    driver.PROGRAM_TRACES.clear()
    ds = llc_trajectory(ckpts, post, components=heads, store=tmp_path / "store", progress_bar=False, **kw)
    assert dict(driver.PROGRAM_TRACES) == {"draw": 2}
    assert ds["llc"].shape == (3, 3) and np.all(np.isfinite(ds["llc"].values))
    c = ckpts[1]
    refined = pp.refine(post.with_(centre=c.params), component=heads["layer 0 head 1"])
    est = pp.llc(pp.sample(refined, seed=job_seed(0, c.step, "layer 0 head 1"), progress_bar=False,
                           keep_params=False, **kw))
    assert float(ds["llc"].sel(checkpoint=5, component="layer 0 head 1")) == est.llc
    again = llc_trajectory(ckpts, post, components=heads, store=tmp_path / "store", progress_bar=False, **kw)
    assert dict(driver.PROGRAM_TRACES) == {"draw": 2}  # the separate call reused the heads program too
    same_results(again, ds)


def test_refined_llcs_every_component_on_every_data_set_in_one_call(post):
    """pp.refined_llcs: a (component, data) grid whose every cell is the λ̂ of a separate
    sample() + llc() of the weight- and data-refined posterior, the training data first."""
    q = post.model.generate(200, seed=5)
    comps = {"u": "u", "v[0]": MASK}
    ds = pp.refined_llcs(post, comps, data={"other": q}, progress_bar=False, **KW)
    assert ds["llc"].dims == ("component", "data")
    assert list(ds["component"].values) == [WHOLE, "u", "v[0]"]
    assert list(ds["data"].values) == ["training", "other"]
    for name, data in (("v[0]", q), ("u", None)):
        p = pp.refine(post, component=comps[name], data=data)
        est = pp.llc(pp.sample(p, seed=job_seed(0, 0, name), progress_bar=False, keep_params=False, **KW))
        assert float(ds["llc"].sel(component=name, data="other" if data is not None else "training")) == est.llc
    assert float(ds["loss_at_centre"].sel(data="other")) == pp.refine(post, data=q).loss_at_centre
    with pytest.raises(ValueError, match="'training'"):
        pp.refined_llcs(post, comps, data={"training": q}, **KW)
    with pytest.raises(ValueError, match="lacks the data key"):
        pp.refined_llcs(post, comps, data={"other": {"y": q["y"]}}, **KW)
    with pytest.raises(TypeError, match="non-empty mapping"):
        pp.refined_llcs(post, {}, **KW)


def test_probes_give_chi_per_checkpoint_equal_to_separate_runs(post, checkpoints):
    """probes= adds χ(φ; q') and its se per job (dims checkpoint, probe, observable), the
    numbers of a separate sample(..., probes=) + susceptibility() with the job's seed."""
    probes = pp.Probes(datasets={"q": post.model.generate(100, seed=7)})
    ds = llc_trajectory(checkpoints[:2], post, probes=probes, progress_bar=False, **KW)
    assert ds["chi"].dims == ("checkpoint", "probe", "observable")
    c = checkpoints[1]
    trace = pp.sample(post.with_(centre=c.params), seed=job_seed(0, c.step), progress_bar=False, keep_params=False,
                      probes=probes, **KW)
    chi = pp.susceptibility(trace)
    for var, ref in (("chi", "chi"), ("chi_se", "se")):
        assert float(ds[var].sel(checkpoint=c.step, probe="q", observable="u0")) == \
            float(chi[ref].sel(probe="q", observable="u0"))
    kw = {k: v for k, v in KW.items() if k != "observables"}
    with pytest.raises(ValueError, match="needs `observables=`"):
        llc_trajectory(checkpoints, post, probes=probes, **kw)
    with pytest.raises(TypeError, match="must be a pplpatterning.Probes"):
        llc_trajectory(checkpoints, post, probes={"q": 1}, **KW)
