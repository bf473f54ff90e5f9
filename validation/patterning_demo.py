"""Patterning demonstration: move posterior mass between two solutions that both fit the data.

    .venv/bin/python validation/patterning_demo.py                 # full run, ~3 min on 2 cores
    .venv/bin/python validation/patterning_demo.py --seeds 3 --draws 1000   # quicker

The model (``two_solutions``, models/two_solutions.py): y = a·b·(a x₁ + b x₂) on n = 1000
noise-free inputs, 70 % on channel 1 (x = (±1, 0)) and 30 % on channel 2 (x = (0, ±1)).
Every sample is fitted exactly by solution A = {b = 0} and by solution B = {a = 0}. The
localizing prior N((1, 1), 1/8) sits equally far from both; the posterior (β = 1, nβ = n)
has an arm along each solution, joined through the crossing, and NUTS moves between them.
Channel-1 data constrain A (the valley around A has curvature ∝ nβ S₁ a⁴), channel-2 data
constrain B, so with 70 % channel-1 data the posterior puts only ~42 % of its mass on A.

Patterning asks for more (or less) mass on A: the observable is φ_A = 1[|a| > |b|], whose
posterior mean is A's mass fraction. The loop, for each request dμ:

1. sample the posterior recording every sample's loss (per-sample probes);
2. χ_z = attribution(trace) (per-sample susceptibilities of φ_A and φ_B);
3. plan = pattern(χ, {"A": dμ}) (s = X⁺dμ, ρ = 1 + α s; ``nonnegative=True`` where the
   minimum-norm step would need negative weights);
4. verify(post, plan): re-sample with the new weights, realized vs predicted.

Everything is checked against exact values: the mass fractions by 2-D cubature
(``solution_masses``), the exact first-order change as the directional derivative of the
exact mass fraction along the plan's weight change (central difference, step 1e-3 of the
largest change), and the exact realized change F(ρ) - F(1).

Outputs (``--out``, default validation/out/patterning): ``demo.md`` (tables), ``demo.json``,
``shift.png`` (draws before/after for one request + mass bars), ``shift_nonneg.png``,
``response.png`` (realized vs predicted for every request), ``seeds.png`` (realized,
exact and predicted change per seed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script from a checkout: import the package next to this folder
    sys.path.insert(0, str(ROOT))

from pplpatterning import GibbsPosterior, Probes, attribution, pattern, sample, verify  # noqa: E402
from pplpatterning.models.two_solutions import (  # noqa: E402
    DEMO_CENTRE, on_solution_a, on_solution_b, solution_masses, two_solutions)
from pplpatterning.plots import new_figure, plot_linear_response, plot_posterior_shift, save_figure  # noqa: E402

#: The demonstration's configuration (see the module docstring).
CONFIG = {"p": 0.7, "n": 1000, "beta": 1.0, "gamma": 8.0, "target_accept": 0.99, "probe_thinning": 2}
#: Requests of the main table: (change of A's mass fraction, nonnegative solve?).
REQUESTS = [(0.05, False), (0.1, False), (0.2, False), (-0.1, False), (-0.2, True), (0.4, True)]


def demo_posterior(data_seed: int = 0, *, p: float = CONFIG["p"], n: int = CONFIG["n"],
                   beta: float = CONFIG["beta"], gamma: float = CONFIG["gamma"]):
    """The two-solutions posterior at nβ = β·n (β = 1: the Bayes posterior) with the prior centred at (1, 1)."""
    model = two_solutions(p=p)
    return GibbsPosterior(model, model.generate(n, seed=data_seed), centre=DEMO_CENTRE, gamma=gamma,
                          n_beta=beta * n)


def observables() -> dict:
    return {"A": on_solution_a, "B": on_solution_b}


def sampler_kwargs(draws: int, chains: int = 4, burnin: int = 500) -> dict:
    return dict(sampler="nuts", num_chains=chains, num_draws=draws, num_burnin=burnin, progress_bar=False,
                target_accept=CONFIG["target_accept"])


def exact_mass_a(post) -> float:
    return solution_masses(post)["A"]


def exact_response(post, plan) -> dict:
    """Exact before/after mass of A, realized change, and first-order change along the plan."""
    delta = np.zeros(post.n)
    delta[plan.change["sample"].values] = plan.change.values
    base = np.asarray(post.effective_weights)
    before, after = exact_mass_a(post), exact_mass_a(plan.apply(post))
    eps = 1e-3 / float(np.max(np.abs(delta)))
    up = exact_mass_a(post.with_(weights=base + eps * delta))
    down = exact_mass_a(post.with_(weights=base - eps * delta))
    return {"exact_before": before, "exact_after": after, "exact_realized": after - before,
            "exact_first_order": (up - down) / (2 * eps)}


def baseline(post, *, seed: int, kw: dict):
    """Sample with per-sample losses; return (trace, χ_z, seconds)."""
    t0 = time.perf_counter()
    trace = sample(post, seed=seed, observables=observables(),
                   probes=Probes(per_sample="all", thinning=CONFIG["probe_thinning"]), **kw)
    t1 = time.perf_counter()
    chi = attribution(trace)
    return trace, chi, {"sample": t1 - t0, "chi": time.perf_counter() - t1}


def run_request(post, trace, chi, change: float, *, nonnegative: bool, seed: int, kw: dict,
                exact: bool = True) -> tuple[dict, object, object]:
    """pattern + verify for one request; returns (row, plan, verification)."""
    t0 = time.perf_counter()
    plan = pattern(chi, {"A": change}, nonnegative=nonnegative, n=post.n)
    t1 = time.perf_counter()
    check = verify(post, plan, observables=observables(), baseline=trace, seed=seed, **kw)
    t2 = time.perf_counter()
    r = check.table.loc["A"]
    ch2 = post.data["x"][plan.change["sample"].values, 1] != 0
    row = {"request": change, "mode": plan.mode, "predicted": float(plan.predicted.sel(observable="A")),
           "predicted_se": r["predicted_se"], "residual": float(plan.residual.sel(observable="A")),
           "before": r["before"], "before_se": r["before_se"], "after": r["after"], "after_se": r["after_se"],
           "realized": r["realized"], "realized_se": r["realized_se"], "ratio": r["ratio"], "ratio_se": r["ratio_se"],
           "z": r["z"], "weight_channel1": float(np.mean(plan.weights[~_channel2_mask(post)])),
           "weight_channel2": float(np.mean(plan.weights[_channel2_mask(post)])),
           "min_weight": float(plan.weights.min()), "max_weight": float(plan.weights.max()),
           "spread_within_channel": float(max(np.ptp(plan.change.values[ch2]), np.ptp(plan.change.values[~ch2]))),
           "pattern_s": t1 - t0, "verify_s": t2 - t1}
    if exact:
        row.update(exact_response(post, plan))
    return row, plan, check


def _channel2_mask(post) -> np.ndarray:
    return np.asarray(post.data["x"][:, 1] != 0)


def main_table(draws: int, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    post = demo_posterior(seed)
    kw = sampler_kwargs(draws)
    trace, chi, secs = baseline(post, seed=1000 + seed, kw=kw)
    rows, keep = [], {}
    for k, (change, nonneg) in enumerate(REQUESTS):
        row, plan, check = run_request(post, trace, chi, change, nonnegative=nonneg, seed=2000 + k, kw=kw)
        rows.append(row)
        keep[(change, nonneg)] = (plan, check)
        print(f"  request {change:+.2f} ({row['mode']}): predicted {row['predicted']:+.4f}, realized "
              f"{row['realized']:+.4f} ± {row['realized_se']:.4f} (exact {row['exact_realized']:+.4f}), ratio "
              f"{row['ratio']:.3f} ± {row['ratio_se']:.3f}", flush=True)
    table = pd.DataFrame(rows)
    return table, {"post": post, "trace": trace, "chi": chi, "seconds": secs, "plans": keep}


def seeds_study(seeds: int, draws: int, change: float = 0.1) -> pd.DataFrame:
    """The full loop (sample → χ → pattern → verify) on ``seeds`` data sets and sampler seeds."""
    rows = []
    for s in range(seeds):
        post = demo_posterior(s)
        kw = sampler_kwargs(draws)
        t0 = time.perf_counter()
        trace, chi, secs = baseline(post, seed=1000 + s, kw=kw)
        row, plan, _ = run_request(post, trace, chi, change, nonnegative=False, seed=3000 + s, kw=kw, exact=False)
        loop = time.perf_counter() - t0
        row.update(exact_response(post, plan))
        row.update(seed=s, sample_s=secs["sample"], chi_s=secs["chi"], loop_s=loop)
        rows.append(row)
        print(f"  seed {s}: before {row['before']:.3f} (exact {row['exact_before']:.3f}), after {row['after']:.3f} "
              f"(exact {row['exact_after']:.3f}); predicted {row['predicted']:+.4f}, realized {row['realized']:+.4f} "
              f"± {row['realized_se']:.4f}, ratio {row['ratio']:.3f} ± {row['ratio_se']:.3f}; loop {loop:.1f} s",
              flush=True)
    return pd.DataFrame(rows)


def plot_seeds(seeds: pd.DataFrame, path: Path) -> Path:
    """Realized change (± 2 se) per seed, with the exact realized change and the prediction."""
    fig = new_figure((7.5, 4.2))
    ax = fig.subplots()
    x = seeds["seed"].to_numpy()
    ax.errorbar(x, seeds["realized"], yerr=2 * seeds["realized_se"], fmt="o", color="tab:blue", capsize=3,
                label="realized, NUTS (± 2 se)")
    ax.scatter(x, seeds["exact_realized"], marker="x", color="k", zorder=3, label="exact realized (cubature)")
    ax.scatter(x, seeds["predicted"], marker="_", s=250, color="tab:red", zorder=3,
               label="predicted α β X s (from χ̂)")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xticks(x)
    ax.set_xlabel("seed (data and sampler)")
    ax.set_ylabel("change of the mass on A")
    ax.set_title(f"request +{float(seeds['request'].iloc[0]):g} mass on A, {len(seeds)} seeds")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path, dpi=110)


def _masses_frame(row: dict) -> pd.DataFrame:
    return pd.DataFrame({
        "before": [row["before"], 1 - row["before"]], "before_se": [row["before_se"]] * 2,
        "after": [row["after"], 1 - row["after"]], "after_se": [row["after_se"]] * 2,
        "exact_before": [row["exact_before"], 1 - row["exact_before"]],
        "exact_after": [row["exact_after"], 1 - row["exact_after"]],
    }, index=["A (b = 0)", "B (a = 0)"])


def _fmt_table(df: pd.DataFrame, cols: list[str]) -> str:
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = ""
    for _, r in df[cols].iterrows():
        body += "| " + " | ".join(f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v) for v in r) + " |\n"
    return head + body


def plot_main_table(table: pd.DataFrame, ctx: dict, out: Path) -> None:
    """shift.png, shift_nonneg.png (draws before/after, mass bars) and response.png of the main table."""
    lines = {"A: b = 0": ((-0.4, 0.0), (2.2, 0.0)), "B: a = 0": ((0.0, -0.4), (0.0, 2.2))}
    for (change, nonneg), name in (((0.2, False), "shift.png"), ((0.4, True), "shift_nonneg.png")):
        plan, check = ctx["plans"][(change, nonneg)]
        row = table[(table["request"] == change) & (table["mode"] == plan.mode)].iloc[0].to_dict()
        plot_posterior_shift(check.baseline, check.trace, out / name, lines=lines, masses=_masses_frame(row),
                             title=f"two_solutions: request {change:+g} mass on A ({plan.mode}); "
                                   f"channel weights {row['weight_channel1']:.2f} / {row['weight_channel2']:.2f}")
    resp = table.assign(label=[f"{c:+g}{' (nn)' if m == 'nonnegative' else ''}"
                               for c, m in zip(table["request"], table["mode"])],
                        exact=table["exact_realized"])
    plot_linear_response(resp, out / "response.png", title="two_solutions: mass on A, realized vs predicted")


def summarize(table: pd.DataFrame, seeds: pd.DataFrame, ctx: dict, *, draws: int, n_seeds: int,
              total: float) -> dict:
    """The numbers of demo.json: direction, ratios, z against the exact values, timings, both tables."""
    same_sign = bool(np.all(np.sign(seeds["realized"]) == np.sign(seeds["request"])))
    z_exact = (seeds["realized"] - seeds["exact_realized"]) / seeds["realized_se"]
    z_pred = (seeds["predicted"] - seeds["exact_first_order"]) / seeds["predicted_se"]
    return {
        "config": CONFIG, "draws": draws, "seeds": n_seeds, "total_seconds": total,
        "direction_every_seed": same_sign,
        "ratio_mean": float(seeds["ratio"].mean()), "ratio_sd_over_seeds": float(seeds["ratio"].std(ddof=1)),
        "ratio_se_typical": float(seeds["ratio_se"].median()),
        "exact_ratio_mean": float((seeds["exact_realized"] / seeds["exact_first_order"]).mean()),
        "max_abs_z_realized_vs_exact": float(np.max(np.abs(z_exact))),
        "max_abs_z_predicted_vs_exact_first_order": float(np.max(np.abs(z_pred))),
        "loop_seconds_median": float(seeds["loop_s"].median()),
        "baseline_sample_seconds_median": float(seeds["sample_s"].median()),
        "chi_seconds_median": float(seeds["chi_s"].median()),
        "pattern_seconds_median": float(seeds["pattern_s"].median()),
        "verify_seconds_median": float(seeds["verify_s"].median()),
        "baseline_sampling_seconds_main": ctx["seconds"]["sample"],
        "main_table": table.to_dict(orient="records"), "seed_table": seeds.to_dict(orient="records"),
    }


def markdown(table: pd.DataFrame, seeds: pd.DataFrame, summary: dict) -> str:
    """demo.md: the main table, the seeds table and the summary sentences."""
    cols = ["request", "mode", "predicted", "predicted_se", "residual", "exact_first_order", "realized", "realized_se",
            "exact_realized", "ratio", "ratio_se", "before", "exact_before", "after", "exact_after",
            "weight_channel1", "weight_channel2", "min_weight"]
    scols = ["seed", "before", "exact_before", "after", "exact_after", "predicted", "predicted_se",
             "exact_first_order", "realized", "realized_se", "exact_realized", "ratio", "ratio_se", "loop_s"]
    md = [f"# Patterning demo: two solutions (generated by validation/patterning_demo.py)\n",
          f"Config: {CONFIG}, NUTS 4 chains × {summary['draws']} draws; total {summary['total_seconds']:.0f} s.\n",
          "## Requests on data seed 0 (one baseline trace, one verification run per request)\n",
          _fmt_table(table, cols),
          f"\n## Request +0.1 over {summary['seeds']} seeds (data and sampler seeds)\n",
          _fmt_table(seeds, scols),
          f"\nDirection right on every seed: {summary['direction_every_seed']}. Mean ratio realized/predicted "
          f"{summary['ratio_mean']:.3f} (sd over seeds {summary['ratio_sd_over_seeds']:.3f}, typical se "
          f"{summary['ratio_se_typical']:.3f}); exact ratio (exact realized / exact first order) "
          f"{summary['exact_ratio_mean']:.3f}. max |z| realized vs exact {summary['max_abs_z_realized_vs_exact']:.2f}, "
          f"predicted vs exact first order {summary['max_abs_z_predicted_vs_exact_first_order']:.2f}.\n",
          f"\nCost of the loop sample → χ → pattern → verify (median over seeds): "
          f"{summary['loop_seconds_median']:.1f} s (baseline sampling {summary['baseline_sample_seconds_median']:.1f} s, "
          f"χ {summary['chi_seconds_median']:.2f} s, pattern {summary['pattern_seconds_median'] * 1e3:.1f} ms, "
          f"verify {summary['verify_seconds_median']:.1f} s).\n"]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--draws", type=int, default=2000, help="kept draws per chain (4 chains)")
    ap.add_argument("--out", default=str(ROOT / "validation" / "out" / "patterning"))
    a = ap.parse_args(argv)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print("main table (data seed 0):", flush=True)
    table, ctx = main_table(a.draws)
    plot_main_table(table, ctx, out)
    print(f"{a.seeds} seeds, request +0.1:", flush=True)
    seeds = seeds_study(a.seeds, a.draws)
    plot_seeds(seeds, out / "seeds.png")
    total = time.perf_counter() - t_start

    summary = summarize(table, seeds, ctx, draws=a.draws, n_seeds=a.seeds, total=total)
    (out / "demo.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "demo.md").write_text(markdown(table, seeds, summary))
    same_sign = summary["direction_every_seed"]
    print(f"\ndirection right on every seed: {same_sign}; mean ratio {summary['ratio_mean']:.3f}; "
          f"loop {summary['loop_seconds_median']:.1f} s; total {total:.0f} s; wrote {out}/demo.md")
    return 0 if same_sign else 1


if __name__ == "__main__":
    raise SystemExit(main())
