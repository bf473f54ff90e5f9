"""The documented, calibrated settings of the validation runs (validation/run_validation.py).

Every number here was measured on this machine (2 cores, 2026-11); the reasons are next
to the numbers. Each case has one check (``Case.check``) that every row of it must pass,
besides R-hat ≤ 1.01 (the chains agree):

- ``"target"``: λ̂ within 4 MCSE of the exact finite-nβ target E[λ̂] (the model's
  ``target_fn``, docs/math.md §6): closed forms for the regular and the quasi-homogeneous
  models at γ = 0, 1-D/2-D quadrature for the other two-parameter models.
- ``"lambda15"``: λ̂ within 15 % of the exact λ, for RRR and DLN at safe centres
  (w* = 0, true rank r = 0), which have no ``target_fn``. The settings are chosen so that
  the *expectation* of λ̂ is itself within ~4 % of λ (measured, below), leaving the 15 %
  band to sampling error and sampler bias. RRR (2,2,2,0) also has an exact reference by
  singular-value quadrature, reported as its target (z is shown, not checked).
- ``"report"``: no assertion.

The quick run (CI, tests/test_validation_quick.py) covers every backend × sampler on the
regular model, the quasi-homogeneous ``powers`` and ``norm_power`` (m = 1), and NUTS on RRR
and DLN; the full run covers every zoo model × backend × sampler (DLN without Pyro
NUTS/HMC: ~200 gradients per draw at ~0.5 ms each).

Why the finite-nβ expectation of λ̂ can sit well below λ, and how these settings avoid it
-----------------------------------------------------------------------------------------
(docs/math.md §6.) Three effects, each measured here with long NUTS runs:

1. The data term. With i.i.d. data the centre w* (the truth) is not the minimiser of L_n,
   and E[λ̂] contains -nβ (L_n(w*) - min L_n) ≈ -β·χ²/2: at n = 2000, nβ = 1000 (β = ½) on
   RRR (2,2,2,0), γ = 1, NUTS gives λ̂ = 1.22 ± 0.03 against λ = 1.5. *Null data* removes
   it exactly: with truth f = 0, every x_i appears twice, with noise y_i and -y_i, so
   Σ_i y_i g(x_i) = 0 for every g and w* = 0 minimises L_n; x is also whitened,
   (1/n) Σ x xᵀ = I, so that L_n(w) - L_n(0) = ½‖BA‖²_F is the population K exactly.
   Then E[λ̂] does not depend on n at all, and nβ can be set on its own. The
   normal-crossing rows and the λ̂-against-nβ curves use null data for the same reason.
2. Localization. For K homogeneous of degree 2L in w (RRR: L = 2, DLN with 3 layers:
   L = 3), substituting w = u (nβ)^(-1/2L) shows that E[λ̂] depends on nβ and γ only
   through t = γ (nβ)^(-1/L). For RRR (2,2,2,0) the exact value by singular-value
   quadrature (models/null_targets.py, checked against NUTS: 1.451 ± 0.026 vs
   1.442 at t = 0.032 and 1.150 ± 0.022 vs 1.155 at t = 0.32) is 0.50 λ at t = 1,
   0.77 λ at t = 0.32, 0.90 λ at t = 0.1, 0.961 λ at t = 0.032, 0.985 λ at t = 0.01.
   γ → 0 is not free either: the posterior is improper at γ = 0 (B = 0, any A) and its
   flat directions grow like 1/√γ, so NUTS trees and SG mixing times grow.
3. Multiplicity. With m > 1 the target sits ~(m-1)/log(nβ) below λ at every t; m = 1
   configurations avoid this slow logarithmic approach, which is why RRR (M,N,H,r) =
   (2,2,2,0) (λ = 3/2, m = 1) and DLN widths (2,2,2,3), r = 0 (λ = 3/2, m = 1) are used
   rather than the zoo defaults (RRR (3,3,3,1): λ = 4 with 18 parameters; DLN
   (2,3,3,2): m = 3).

Measured (NUTS, 4 × 1000 draws, null data): DLN (2,2,2,3) at nβ = 1e4, γ = 1
(t = 0.046): λ̂ = 1.472 ± 0.035 (0.98 λ); at nβ = 1e3, γ = 1 (t = 0.1): 1.356 ± 0.036
(0.90 λ). DLN (1,2,2,1): 1.02 λ at nβ = 1e4, γ = 1. RRR (2,2,2,0) at nβ = 1e3, γ = 1:
exact 1.442 (0.961 λ).

Samplers
--------
NUTS/HMC/MALA adapt ε during burn-in. SG samplers have an O(ε) stationary bias; their ε
was first bounded with ``pplpatterning calibrate`` (MALA acceptance ≥ 0.9) and then
reduced until the bias is below ~½ MCSE at the run length used, measured against the exact
targets (regular: the full-batch ULA value ½ Σ 1/(1 - ε a_k/4) plus the minibatch-noise
term ε nβ² Var(∇l)/(4B) per direction; others: long runs). Acceptance 0.9 is *not* small
bias: on the regular model ε = 1e-2 has acceptance 0.93 and +24 % bias, on RRR ε = 1e-3
has acceptance 0.93 and +78 %. SG chains are cheap to vectorise, so they run 16–32 chains
(R-hat and ESS use all of them); R-hat ≤ 1.01 still needs a few hundred effective draws
per chain, which sets the run lengths. Minibatch noise matters as much as ε: its variance
nβ² Var(∇l)/B grows with nβ/B, and SGNHT's single scalar thermostat cannot absorb noise
that is anisotropic and position-dependent (measured: +18 % on the product model at
ε = 1e-2, +25 % on RRR and +49 % on DLN with B = 250 at nβ = 5–50 n). Pyro NUTS/HMC run
their chains one after another at ~0.5 ms per gradient, so they get fewer draws (said in
each row's settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["SEED", "Case", "Run", "Curve", "CASES", "ROW_CASES", "RUNS", "PYRO_RUNS", "QUICK", "FULL", "CURVES", "QUICK_CURVES",
           "SAMPLER_ORDER", "R_HAT_MAX", "Z_MAX", "LAMBDA_TOLERANCE"]

SEED = 20261122
SAMPLER_ORDER = ("nuts", "hmc", "mala", "sgld", "rmsprop_sgld", "sgnht")
R_HAT_MAX = 1.01
Z_MAX = 4.0
LAMBDA_TOLERANCE = 0.15


@dataclass(frozen=True)
class Case:
    """One posterior: a zoo model, its data, nβ and γ, and what its rows must satisfy."""

    model: str
    model_args: Mapping[str, Any]
    n: int
    n_beta: float | None  # None: n / log n
    gamma: float
    check: str  # "target" | "lambda15" | "report"
    why: str
    data: str = "generated"  # "generated": model.generate(n, data_seed); "null": see the module docstring
    data_seed: int = 0

    def label(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.model_args.items())
        return f"{self.model}({args})" if args else self.model


@dataclass(frozen=True)
class Run:
    """Sampler settings of one row (the keywords of pplpatterning.sample)."""

    num_chains: int = 4
    num_draws: int = 1000
    num_burnin: int = 500
    thinning: int = 1
    step_size: float | None = None
    batch_size: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        out = dict(num_chains=self.num_chains, num_draws=self.num_draws, num_burnin=self.num_burnin,
                   thinning=self.thinning, step_size=self.step_size, batch_size=self.batch_size)
        out.update(self.options)
        return out

    def describe(self) -> str:
        parts = [f"{self.num_chains}×{self.num_draws}"]
        if self.thinning > 1:
            parts.append(f"thin {self.thinning}")
        parts.append(f"burn-in {self.num_burnin}")
        if self.step_size is not None:
            parts.append(f"ε={self.step_size:g}")
        if self.batch_size is not None:
            parts.append(f"B={self.batch_size}")
        parts += [f"{k}={v}" for k, v in self.options.items()]
        return ", ".join(parts)


@dataclass(frozen=True)
class Curve:
    """λ̂ against nβ for one case: estimates at ``n_betas`` with one sampler."""

    case: str
    n_betas: tuple[float, ...]
    run: Run
    backend: str = "numpyro"
    sampler: str = "nuts"


_frozen = MappingProxyType

CASES: Mapping[str, Case] = _frozen({
    "regular": Case(
        "regular", _frozen({"d": 2}), n=500, n_beta=None, gamma=0.0, check="target",
        why="λ = d/2 = 1, m = 1; centre = least-squares estimate, so E[λ̂] = d/2 exactly for every nβ (docs/math.md §6)."),
    "powers": Case(
        "powers", _frozen({"k": (1, 2)}), n=1000, n_beta=20.0, gamma=0.0, check="target",
        why="K = w₁² + w₂⁴: quasi-homogeneous, λ = 1/2 + 1/4 = 3/4, m = 1; at γ = 0 E[λ̂] = 3/4 exactly for "
            "every nβ. nβ = 20 keeps the curvature ratio of the two coordinates (≈ 0.68√nβ) near 3, so one SG "
            "step size serves both."),
    "norm_power": Case(
        "norm_power", _frozen({"d": 2, "k": 2}), n=1000, n_beta=100.0, gamma=0.0, check="target",
        why="K = ‖w‖⁴ in R²: homogeneous, λ = d/(2k) = 1/2, m = 1; E[λ̂] = 1/2 exactly at γ = 0, every nβ."),
    "gaussian_mixture": Case(
        "gaussian_mixture", _frozen({}), n=1000, n_beta=None, gamma=1.0, check="target",
        why="equal-weight mixture, K ~ a² + b⁴, λ = 3/4, m = 1; exact target by 2-D cubature (needs γ > 0)."),
    "normal_crossing": Case(
        "normal_crossing", _frozen({"k": (1, 2)}), n=1000, n_beta=None, gamma=1.0, check="target", data="null",
        why="K = w₁² w₂⁴, λ = 1/4, m = 1; exact target by quadrature, 0.202 on null data (with i.i.d. data the "
            "data term leaves 0.078, and 0.0098 at γ = 10: too small a signal to test against)."),
    "product": Case(
        "product", _frozen({}), n=1000, n_beta=None, gamma=1.0, check="target",
        why="y = a·b·x, λ = 1/2, m = 2: the exact target (quadrature) sits far below λ at the WBIC temperature."),
    "tanh": Case(
        "tanh", _frozen({"H": 1}), n=1000, n_beta=None, gamma=1.0, check="target",
        why="y = a tanh(bx), λ = 1/2, m = 2; exact target by 2-D cubature."),
    "two_solutions": Case(
        "two_solutions", _frozen({}), n=1000, n_beta=None, gamma=1.0, check="target",
        why="y = ab(a x₁ + b x₂), λ = 1/3, m = 1 at the crossing; exact target by quadrature (γ > 0: K vanishes "
            "on both axes, so γ = 0 is improper)."),
    "rrr": Case(
        "rrr", _frozen({"M": 2, "N": 2, "H": 2, "r": 0}), n=200, n_beta=1000.0, gamma=1.0, check="lambda15",
        data="null",
        why="λ = 3/2, m = 1 at the safe centre 0; null data, t = γ/√nβ = 0.032: exact E[λ̂] = 1.442 = 0.961 λ "
            "(singular-value quadrature)."),
    "dln": Case(
        "dln", _frozen({"widths": (2, 2, 2, 3), "r": 0}), n=200, n_beta=10000.0, gamma=1.0, check="lambda15",
        data="null",
        why="3-layer DLN, λ = 3/2, m = 1 at the safe centre 0; null data, t = γ/nβ^(1/3) = 0.046: "
            "NUTS measured E[λ̂] = 0.98 λ (±2.4 %)."),
    # Curve-only cases (λ̂ against nβ): null data, so the target approaches λ itself (module docstring).
    "product_null": Case(
        "product", _frozen({}), n=1000, n_beta=None, gamma=1.0, check="target", data="null",
        why="curve: m = 2, the target approaches λ = 1/2 like (m-1)/log nβ."),
    "tanh_null": Case(
        "tanh", _frozen({"H": 1}), n=1000, n_beta=None, gamma=1.0, check="target", data="null",
        why="curve: m = 2."),
})
#: The cases with table rows (every zoo model once); the *_null cases only feed the curves.
ROW_CASES = ("regular", "powers", "norm_power", "gaussian_mixture", "normal_crossing", "product", "tanh",
             "two_solutions", "rrr", "dln")


def _sg(step_size: float, *, chains: int = 32, draws: int = 1000, thinning: int = 20, burnin: int = 2000,
        batch_size: int | None = 250, **options: Any) -> Run:
    return Run(num_chains=chains, num_draws=draws, num_burnin=burnin, thinning=thinning, step_size=step_size,
               batch_size=batch_size, options=_frozen(options))


_EXACT = Run(num_chains=4, num_draws=2000, num_burnin=500)
# Quartic tails at γ = 0: with target_accept 0.8 NUTS/HMC diverge where the gradient grows like w³
# (and under-sample the tails); 0.95 removes the divergences.
_EXACT_QUARTIC = Run(num_chains=4, num_draws=2000, num_burnin=500, options=_frozen({"target_accept": 0.95}))
_MALA = Run(num_chains=8, num_draws=2000, num_burnin=1000)
_SINGULAR = {  # d = 2 singular models with γ = 1: flat directions of scale 1/√γ, NUTS at target_accept 0.9
    "nuts": Run(num_chains=4, num_draws=2000, num_burnin=1000, options=_frozen({"target_accept": 0.9})),
    "hmc": Run(num_chains=4, num_draws=2000, num_burnin=1000, options=_frozen({"target_accept": 0.9})),
    "mala": Run(num_chains=8, num_draws=2000, num_burnin=2000, thinning=10),
    # The curvature across a flat direction grows like nβ·(other coordinate)², up to ~nβ/γ in the tails, so
    # ε must stay small while crossing a flat direction of scale 1/√γ takes ~1/ε steps: 80k steps per chain
    # (40k gave R-hat 1.016–1.019 on tanh and two_solutions).
    "sgld": _sg(2e-4, thinning=80, burnin=5000),
    "rmsprop_sgld": _sg(2e-3, thinning=40, burnin=5000, alpha=0.999),
    # SGNHT's minibatch noise (variance ε²nβ²Var(∇l)/B per step) against its injected 2Aε: the ratio
    # ε nβ² Var(∇l)/(2AB) must be small, as one scalar thermostat cannot absorb position-dependent noise;
    # ε = 1e-2 gave +18 % on the product model (z = 5.1).
    "sgnht": _sg(3e-3, thinning=60, burnin=5000, diffusion=1.0),
}
# Per case and sampler, for numpyro and (unless PYRO_RUNS overrides) pyro.
RUNS: Mapping[str, Mapping[str, Run]] = _frozen({
    "regular": _frozen({
        "nuts": _EXACT, "hmc": _EXACT, "mala": _MALA,
        # a_k = eig(nβ H) ≈ (75, 79). SGLD: ε a ≈ 0.02, discretisation bias ½Σ εa/8 ≈ 0.005, minibatch
        # (B = 250) ≈ 0.0016; τ ≈ 2/(εa) ≈ 100 steps: 16 chains × 20k steps give ESS ≈ 3500, MCSE ≈ 0.017.
        "sgld": _sg(2.5e-4, chains=16),
        # Preconditioner G ≈ 1/√a: effective step ε√a ≈ 0.026, bias ≈ ε√a/8 per direction. Each chain
        # freezes its own V after burn-in; α = 0.99 (memory 100 steps) leaves V noisy and the chains'
        # effective steps different (R-hat 1.010–1.012 measured), α = 0.999 over 5000 burn-in steps does not.
        "rmsprop_sgld": _sg(3e-3, chains=16, burnin=5000, alpha=0.999),
        # Friction ~ A = 1; ε² a ≈ 0.03, integrator bias ≈ ε²a/8 per direction.
        "sgnht": _sg(2e-2, chains=16, thinning=10, diffusion=1.0),
    }),
    "powers": _frozen({
        "nuts": _EXACT_QUARTIC, "hmc": _EXACT_QUARTIC, "mala": _MALA,
        # a₁ = 2nβ = 40, quartic direction ≈ 3√nβ ≈ 13: ε a₁ = 0.02; slow direction τ ≈ 300 steps.
        "sgld": _sg(5e-4), "rmsprop_sgld": _sg(3e-3, burnin=5000, alpha=0.999),
        "sgnht": _sg(2e-2, chains=16, thinning=10, diffusion=1.0),
    }),
    "norm_power": _frozen({
        "nuts": _EXACT_QUARTIC, "hmc": _EXACT_QUARTIC, "mala": _MALA,
        # radial curvature ≈ 6.8√nβ = 68, tangential ≈ 23.
        "sgld": _sg(3e-4), "rmsprop_sgld": _sg(3e-3, burnin=5000, alpha=0.999),
        "sgnht": _sg(2e-2, chains=16, thinning=10, diffusion=1.0),
    }),
    "gaussian_mixture": _frozen(_SINGULAR),
    # K = w₁²w₂⁴ has two flat arms (w₂ = 0 and, at scale nβ^(-1/4), w₁ large) joined at the origin: with 40k
    # steps per chain SGLD had R-hat 1.07 and RMSProp 1.03; 200k steps gave 1.002 and 1.0007 (ESS 9–16k);
    # 100k here. NUTS at target_accept 0.9 still diverged (λ̂ z = -2.1): 0.95.
    "normal_crossing": _frozen({
        **_SINGULAR,
        "nuts": Run(num_chains=4, num_draws=2000, num_burnin=1000, options=_frozen({"target_accept": 0.95})),
        "hmc": Run(num_chains=4, num_draws=2000, num_burnin=1000, options=_frozen({"target_accept": 0.95})),
        "sgld": _sg(2e-4, thinning=100, burnin=10000),
        "rmsprop_sgld": _sg(2e-3, thinning=100, burnin=10000, alpha=0.999)}),
    "product": _frozen(_SINGULAR),
    "tanh": _frozen(_SINGULAR),
    "two_solutions": _frozen(_SINGULAR),
    # RRR and DLN: null data make E[λ̂] independent of n, so n = 200 only sets the cost of a gradient
    # (NUTS at n = 1000 took 30 s and 113 s). SG samplers use the full batch (B = n): at nβ = 5–50 n the
    # minibatch-gradient noise, of variance nβ² Var(∇l)/B, dominates their bias. Measured with B = 250 at
    # n = 1000: RRR SGNHT +25 % (1.80 ± 0.03); DLN SGLD +13 %, SGNHT +49 % (2.23 ± 0.05). SGNHT's one scalar
    # thermostat cannot absorb noise that is anisotropic and position-dependent. Full batch, same ε: DLN
    # SGLD 0.94 λ, RMSProp 0.996 λ, SGNHT 0.96 λ (16 chains × 70k steps).
    "rrr": _frozen({
        # ~80 leapfrog steps per NUTS draw at t = 0.032.
        "nuts": Run(num_chains=4, num_draws=1000, num_burnin=500, options=_frozen({"target_accept": 0.9})),
        "hmc": Run(num_chains=4, num_draws=2000, num_burnin=1000, options=_frozen({"target_accept": 0.9})),
        "mala": Run(num_chains=8, num_draws=2000, num_burnin=2000, thinning=10),
        # calibrate (acceptance ≥ 0.9) recommends ε = 1e-3, where λ̂ = 2.4 (+60 %); at ε = 3e-5 (acceptance
        # 0.999) λ̂ = 1.48 ± 0.02. Flat directions of scale 1/√γ need ~1/ε steps: 70k per chain.
        "sgld": _sg(3e-5, chains=16, thinning=50, burnin=20000, batch_size=None),
        "rmsprop_sgld": _sg(3e-4, chains=16, thinning=50, burnin=20000, batch_size=None, alpha=0.999),
        "sgnht": _sg(1e-3, chains=16, thinning=50, burnin=20000, batch_size=None, diffusion=1.0),
    }),
    "dln": _frozen({
        # ~200 leapfrog steps per NUTS draw at t = 0.046.
        "nuts": Run(num_chains=4, num_draws=600, num_burnin=400, options=_frozen({"target_accept": 0.9})),
        # HMC (10 leapfrog steps), MALA and SGLD mix slowly here: 4000 draws / thinning 20 / 140k steps (half of
        # that gave R-hat 1.010–1.013).
        "hmc": Run(num_chains=4, num_draws=4000, num_burnin=1000, options=_frozen({"target_accept": 0.9})),
        "mala": Run(num_chains=8, num_draws=2000, num_burnin=2000, thinning=20),
        # calibrate recommends ε = 3e-4 (acceptance 0.988), where λ̂ = 2.9 (+90 %).
        "sgld": _sg(1e-5, chains=16, thinning=100, burnin=40000, batch_size=None),
        "rmsprop_sgld": _sg(3e-4, chains=16, thinning=50, burnin=20000, batch_size=None, alpha=0.999),
        "sgnht": _sg(1e-3, chains=16, thinning=50, burnin=20000, batch_size=None, diffusion=1.0),
    }),
})

# Pyro NUTS/HMC run their chains one after another at ~0.5 ms per gradient: fewer draws.
# 4 × 600 draws gave R-hat up to 1.009 over seeds on the regular model (ESS ≈ 800): 1000 draws there.
_PYRO_EXACT = Run(num_chains=4, num_draws=1000, num_burnin=300)
_PYRO_QUARTIC = Run(num_chains=4, num_draws=1000, num_burnin=300, options=_frozen({"target_accept": 0.95}))
_PYRO_SINGULAR = Run(num_chains=4, num_draws=600, num_burnin=500, options=_frozen({"target_accept": 0.9}))
PYRO_RUNS: Mapping[tuple[str, str], Run] = _frozen({
    **{("regular", s): _PYRO_EXACT for s in ("nuts", "hmc")},
    **{(c, s): _PYRO_QUARTIC for c in ("powers", "norm_power") for s in ("nuts", "hmc")},
    **{(c, s): _PYRO_SINGULAR for c in ("gaussian_mixture", "product", "tanh", "two_solutions")
       for s in ("nuts", "hmc")},
    **{("normal_crossing", s): Run(num_chains=4, num_draws=600, num_burnin=500,
                                   options=_frozen({"target_accept": 0.95})) for s in ("nuts", "hmc")},
    ("rrr", "nuts"): Run(num_chains=4, num_draws=400, num_burnin=300, options=_frozen({"target_accept": 0.9})),
    ("rrr", "hmc"): Run(num_chains=4, num_draws=600, num_burnin=500, options=_frozen({"target_accept": 0.9})),
})

ALL = SAMPLER_ORDER
QUICK: Mapping[str, Mapping[str, tuple[str, ...]]] = _frozen({
    "regular": _frozen({"numpyro": ALL, "pyro": ALL}),          # every backend × sampler once
    "powers": _frozen({"numpyro": ALL, "pyro": ("mala", "sgld")}),
    "norm_power": _frozen({"numpyro": ("nuts", "mala")}),
    "rrr": _frozen({"numpyro": ("nuts",)}),
    "dln": _frozen({"numpyro": ("nuts",)}),
})
# DLN on Pyro: NUTS/HMC need ~200 gradients per draw there (≈ 10 minutes per run); the exact
# reference for DLN is NumPyro's NUTS.
FULL: Mapping[str, Mapping[str, tuple[str, ...]]] = _frozen({
    **{case: _frozen({"numpyro": ALL, "pyro": ALL}) for case in ROW_CASES},
    "dln": _frozen({"numpyro": ALL, "pyro": ("mala", "sgld", "rmsprop_sgld", "sgnht")}),
})

_CURVE_RUN = Run(num_chains=4, num_draws=1000, num_burnin=1000, options=_frozen({"target_accept": 0.9}))
CURVES: tuple[Curve, ...] = (
    Curve("product_null", (10.0, 100.0, 1e3, 1e4, 1e5), _CURVE_RUN),
    Curve("tanh_null", (10.0, 100.0, 1e3, 1e4), _CURVE_RUN),
    Curve("normal_crossing", (10.0, 100.0, 1e3, 1e4, 1e5),
          Run(num_chains=4, num_draws=1000, num_burnin=1000, options=_frozen({"target_accept": 0.95}))),
    Curve("rrr", (30.0, 100.0, 1e3, 1e4), Run(num_chains=4, num_draws=1000, num_burnin=500,
                                              options=_frozen({"target_accept": 0.9}))),
)
QUICK_CURVES: tuple[Curve, ...] = (Curve("product_null", (10.0, 1e3, 1e5), _CURVE_RUN),)
