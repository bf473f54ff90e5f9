"""MALA acceptance of a Langevin step at a trace's draws: is one step of the sampler accurate?

At kept draws w (a thinned subset of every chain), :func:`mala_acceptance` computes the
Metropolis–Hastings acceptance probability that the Langevin proposal

    w' = w - (ε/2) ∇U(w) + √ε ξ,   ξ ~ N(0, I)

would have had under the *full-batch* potential U(w) = nβ L_n^ρ(w) + (γ/2)||w - w*||²:

    α = min(1, exp( U(w) - U(w') + log q(w | w') - log q(w' | w) )),
    log q(b | a) = -||b - a + (ε/2) ∇U(a)||² / (2ε).

ᾱ is near 1 when one step of the sampler's discretisation is accurate on the posterior it is
actually visiting, and falls as the O(ε) bias of the unadjusted chain grows (Roberts &
Tweedie 1996; docs/math.md §8; Lau et al. 2023, arXiv 2308.12108, App. on hyperparameter
selection; devinterp's MALA-acceptance diagnostic). The proposal is matched to each
sampler's update rule:

- ``sgld``: the proposal above with the sampler's own ε (it *is* the SGLD step with the
  full-batch gradient);
- ``rmsprop_sgld``: the preconditioned proposal w' = w - (ε/2) G∇U + √(εG) ξ with the
  diagonal G = 1/(√V + eps) frozen, log q(b | a) = -Σ_j (b_j - a_j + (ε/2)G_j ∂_jU(a))²
  / (2εG_j). V is estimated by the mean of (∂_jU)² over the evaluated draws (the kernel's
  V after burn-in is an average of squared *minibatch* gradients, which is larger by the
  minibatch variance, so this G is an upper bound and the acceptance a conservative one);
- ``sgnht``: the Langevin step ε_L = ε² (one leapfrog step of size ε from a fresh N(0, I)
  momentum moves w to w - (ε²/2)∇U + ε p, the proposal above with ε_L = ε²). SGNHT's own
  integrator kicks the momentum first (w - ε²∇U + ε p: twice that drift), so for SGNHT
  this acceptance is a proxy that shares the noise scale and the stability limit ε²a < 4
  on a curvature a, not SGNHT's exact one-step acceptance;
- a ``mala`` trace with step size s (its convention w' = w - s∇U + √(2s) ξ): ε = 2s, so
  :func:`mala_acceptance` of a MALA chain estimates that chain's own mean ``accept_prob``.

U and ∇U come from the backend's ``potential_and_grad(posterior, params)``, one point at a
time; the calibration sweep (:mod:`pplpatterning.workflows.calibrate`) judges each ε by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from pplpatterning.estimators.convergence import series_mcse
from pplpatterning.samplers.settings import SG_SAMPLERS
from pplpatterning.sampling.core import BACKENDS, get_backend
from pplpatterning.spec.posterior import GibbsPosterior
from pplpatterning.trace import trace_attr

__all__ = ["mala_acceptance", "AcceptanceEstimate"]


@dataclass(frozen=True)
class AcceptanceEstimate:
    """Mean MALA acceptance over the evaluated draws, its standard error and the values.

    ``values`` has dims (chain, draw) over the evaluated (thinned) draws; ``se`` is the
    MCSE of their mean (arviz-stats, from the ESS of that series).
    """

    mean: float
    se: float
    values: xr.DataArray
    step_size: np.ndarray  # Langevin ε per chain (SGLD convention)

    def __str__(self) -> str:
        return f"MALA acceptance {self.mean:.3f} ± {self.se:.3f} over {self.values.size} draws"


def _flat_draws(post: GibbsPosterior, trace: xr.DataTree, draw_idx: np.ndarray) -> np.ndarray:
    """(chain, k, d) float64 parameter vectors of the sampled parameters, in ``post.sampled`` order."""
    group = trace["posterior"]
    missing = [k for k in post.sampled if k not in group]
    if missing:
        raise ValueError(
            f"`trace` has no posterior draws of {missing}; sample with keep_params=True to compute MALA acceptance."
        )
    parts = []
    for k in post.sampled:
        arr = np.asarray(group[k].values, dtype=np.float64)[:, draw_idx]
        parts.append(arr.reshape(arr.shape[:2] + (-1,)))
    return np.concatenate(parts, axis=-1)


def _unflatten(post: GibbsPosterior, z: np.ndarray) -> dict[str, np.ndarray]:
    """The sampled parameters of one flat vector ``z`` (the inverse of :func:`_flat_draws`' layout)."""
    out, start = {}, 0
    for k, shape in post.sampled_shapes.items():
        size = int(np.prod(shape))
        out[k] = z[start:start + size].reshape(shape)
        start += size
    return out


def _energy_evaluator(post: GibbsPosterior, backend: str):
    """f(Z: (k, d)) -> (U (k,), ∇U (k, d)) from the backend's ``potential_and_grad(post, params)``,
    one point at a time (NaN where a point is not finite)."""
    module = get_backend(backend)

    def evaluate(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        U = np.empty(Z.shape[0])
        G = np.empty_like(Z)
        for i, z in enumerate(Z):
            if not np.all(np.isfinite(z)):
                U[i], G[i] = np.nan, np.nan
                continue
            u, g = module.potential_and_grad(post, _unflatten(post, z))
            U[i] = u
            G[i] = np.concatenate([np.asarray(g[k], np.float64).reshape(-1) for k in post.sampled])
        return U, G

    return evaluate


def _trace_step_size(trace: xr.DataTree, sampler: str, n_chain: int) -> np.ndarray:
    """The Langevin-equivalent ε (SGLD convention) of a trace's own step size, per chain."""
    if sampler == "mala":
        s = np.asarray(trace["sample_stats"]["step_size"].values, np.float64)
        return 2.0 * s[:, -1]
    if sampler not in SG_SAMPLERS:
        raise ValueError(
            f"A {sampler!r} trace has no single Langevin step size; pass `step_size` explicitly "
            "(MALA acceptance is defined for mala and the SG samplers' traces)."
        )
    eps = float(trace_attr(trace, "settings")["step_size"])
    if sampler == "sgnht":
        eps = eps * eps
    return np.full(n_chain, eps)


def _chain_step_sizes(trace: xr.DataTree, sampler: str, n_chain: int, step_size) -> np.ndarray:
    """ε per chain: the trace's own (``step_size=None``), else the given number(s), checked."""
    if step_size is None:
        return _trace_step_size(trace, sampler, n_chain)
    eps = np.atleast_1d(np.asarray(step_size, dtype=np.float64))
    if eps.size == 1:
        eps = np.full(n_chain, float(eps[0]))
    if eps.shape != (n_chain,) or not np.all(np.isfinite(eps)) or np.any(eps <= 0):
        raise ValueError(
            f"`step_size` must be a positive number or one positive number per chain ({n_chain}), got {step_size!r}."
        )
    return eps


def _log_q_rows(b: np.ndarray, a: np.ndarray, grad_a: np.ndarray, var: np.ndarray) -> np.ndarray:
    """log q(b | a) = -Σ_j (b_j - a_j + ½ var_j ∂_jU(a))² / (2 var_j), var = ε G per coordinate."""
    return -np.sum((b - a + 0.5 * var * grad_a) ** 2 / (2.0 * var), axis=-1)


def _acceptance_rows(post: GibbsPosterior, trace: xr.DataTree, W: np.ndarray, eps_rows: np.ndarray, *,
                     backend: str, preconditioned: bool, seed: int) -> np.ndarray:
    """α per row of ``W`` (k, d): one proposal from each point, with the per-row ε ``eps_rows``."""
    evaluate = _energy_evaluator(post, backend)
    U0, G0 = evaluate(W)
    if preconditioned:
        rms_eps = float(trace_attr(trace, "settings", {}).get("options", {}).get("eps", 1e-5))
        finite = np.all(np.isfinite(G0), axis=-1)
        v = np.mean(G0[finite] ** 2, axis=0) if finite.any() else np.ones(W.shape[1])
        P = np.broadcast_to(1.0 / (np.sqrt(v) + rms_eps), W.shape)
    else:
        P = np.ones_like(W)
    rng = np.random.default_rng(seed)
    xi = rng.standard_normal(W.shape)
    var = eps_rows[:, None] * P
    W1 = W - 0.5 * var * G0 + np.sqrt(var) * xi
    U1, G1 = evaluate(W1)
    with np.errstate(over="ignore", invalid="ignore"):
        log_ratio = (U0 - U1 + _log_q_rows(W, W1, G1, var) - _log_q_rows(W1, W, G0, var))
        log_ratio = np.where(np.isfinite(log_ratio), log_ratio, -np.inf)
        alpha = np.minimum(1.0, np.exp(np.minimum(log_ratio, 0.0)))
    return np.where(np.all(np.isfinite(W), axis=-1), alpha, 0.0)


def mala_acceptance(
    posterior: GibbsPosterior,
    trace: xr.DataTree,
    step_size: float | Sequence[float] | np.ndarray | None = None,
    *,
    backend: str | None = None,
    num_points: int = 64,
    preconditioned: bool | None = None,
    seed: int = 0,
) -> AcceptanceEstimate:
    """MALA acceptance of a Langevin step ε at the draws of ``trace`` (see the module docstring).

    Parameters
    ----------
    posterior
        The posterior the trace was sampled from (defines the full-batch U and ∇U).
    trace
        A Trace with posterior draws (``keep_params=True``).
    step_size
        ε in the SGLD convention w' = w - (ε/2)∇U + √ε ξ: a number, or one per chain.
        Default: the trace's own step size (SG samplers: the sampler's ε, ε² for SGNHT;
        MALA: 2 × its recorded step size).
    backend
        Backend whose ``potential_and_grad`` evaluates U; default the trace's backend.
    num_points
        Number of draws evaluated, spread evenly over each chain's kept draws.
    preconditioned
        Use the RMSProp preconditioner G = 1/(√mean(∇U²) + eps) estimated from the
        evaluated draws. Default: True for an ``rmsprop_sgld`` trace.
    seed
        Seed of the proposal noise ξ.
    """
    if not isinstance(posterior, GibbsPosterior):
        raise TypeError(f"`posterior` must be a GibbsPosterior, got {type(posterior).__name__}.")
    if not isinstance(trace, xr.DataTree) or "sample_stats" not in trace.children:
        raise TypeError("`trace` must be a Trace (an xarray DataTree returned by pplpatterning.sample).")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"`num_points` must be a positive integer, got {num_points!r}.")
    sampler = str(trace_attr(trace, "sampler", ""))
    backend = backend if backend is not None else str(trace_attr(trace, "backend", "numpyro"))
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got {backend!r}.")
    n_chain = int(trace["sample_stats"].sizes["chain"])
    n_draw = int(trace["sample_stats"].sizes["draw"])
    eps = _chain_step_sizes(trace, sampler, n_chain, step_size)
    if preconditioned is None:
        preconditioned = sampler == "rmsprop_sgld"

    per_chain = max(1, min(n_draw, math.ceil(num_points / n_chain)))
    draw_idx = np.unique(np.linspace(0, n_draw - 1, per_chain).round().astype(int))
    k = draw_idx.size
    W = _flat_draws(posterior, trace, draw_idx).reshape(n_chain * k, -1)
    alpha = _acceptance_rows(posterior, trace, W, np.repeat(eps, k), backend=backend,
                             preconditioned=preconditioned, seed=seed)
    values = xr.DataArray(alpha.reshape(n_chain, k), dims=("chain", "draw"),
                          coords={"chain": np.arange(n_chain), "draw": draw_idx})
    stats = series_mcse(values)
    se = float(stats["mcse"])
    if not np.isfinite(se):  # too few points for an ESS: fall back to sd/√N
        se = float(np.std(alpha, ddof=1) / math.sqrt(alpha.size)) if alpha.size > 1 else math.nan
    return AcceptanceEstimate(mean=float(np.mean(alpha)), se=se, values=values, step_size=eps)
