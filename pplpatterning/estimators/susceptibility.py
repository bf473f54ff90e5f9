"""Susceptibilities, per-sample attributions and the component-restricted estimator.

Linear response (docs/math.md §3; Baker, Wang, Hoogland, Murfet 2025, arXiv 2504.18274). Perturb
the data distribution toward a probe q', q_h = (1-h) q + h q'. The tempered posterior at h
is p_h ∝ exp(-nβ (L + h ΔL)) (times the localizing prior), ΔL = L_{q'} - L_q^ρ, and

    d/dh E_h[φ] |_{h=0} = -nβ Cov_p(φ, ΔL),   χ(φ; q') := -Cov_p(φ, ΔL),   J := nβ χ.

We store χ (the convention of devinterp and the 2025-26 papers) and the Jacobian J of the
observable in h under its own name. A per-sample probe q' = δ_z gives χ_z(φ) =
-Cov(φ, l_z - L^ρ), and every probe decomposes as χ(φ; q') = Σ_z q'(z) χ_z(φ).

Estimator. Over the N = chains × draws pooled kept draws, with pooled means φ̄ and ΔL̄,

    χ̂ = -(1/N) Σ_t s_t,   s_t = (φ_t - φ̄)(ΔL_t - ΔL̄).

Standard error: the Monte Carlo standard error of the mean of the product series s_t,
sd(s)/√ESS(s), with ESS the split-chain effective sample size of s itself (arviz-stats,
through :func:`pplpatterning.estimators.convergence.series_mcse`). Replacing the true means by φ̄ and
ΔL̄ biases χ̂ by O(1/N) and changes its variance only at second order (the derivative of
E[(φ-a)(ΔL-b)] in a or b vanishes at the true means), so this is the first-order (delta-
method) standard error of χ̂. J's standard error is nβ times χ's.

Exact identity of the per-sample estimator: with L^ρ(w) = (1/n) Σ_j c ρ_j l_j(w) (the
Trace's ``sample_stats/loss``) at the same draws, Σ_j c ρ_j (l_{z_j} - L^ρ) =
(n - Σ_j c ρ_j) L^ρ at every draw, so when every training sample is recorded

    Σ_j c ρ_j χ̂_{z_j} = -(n - Σ_j c ρ_j) · Cov̂(φ, L^ρ)      (to rounding),

which is 0 with equal weights (Σ_j χ̂_{z_j} = 0, docs/math.md §3) and with normalised weights
(Σ_j c ρ_j = n); with raw weights of another total it is the stated multiple of Cov(φ, L^ρ).

Streamed moments. A trace that streamed per-sample moments instead of storing the
per-sample losses (group ``per_sample_moments``, no ``per_sample_losses``; see
:func:`pplpatterning.trace.access.uses_sample_moments`) gets the same per-sample χ̂ from
them (:mod:`pplpatterning.estimators.moments_chi`), equal to the stored-series estimate up
to rounding, with the batch-means standard error of the same product series instead of
sd/√ESS (``se_method`` says which; ``ess`` is NaN there).

Everything here reads the Trace only (numpy/xarray), whichever backend sampled it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from pplpatterning.estimators.convergence import series_mcse
from pplpatterning.estimators.moments_chi import (batch_means_method, moment_observables, moments_chi,
                                                  moments_component_chi, moments_delta_mean)
from pplpatterning.spec.probes import PER_SAMPLE_GROUP
from pplpatterning.trace.access import (observable_array, probe_deltas, sample_deltas, sample_moments,
                                        uses_sample_moments)
from pplpatterning.trace.moments import MOMENTS_LOSS_DELTA
from pplpatterning.trace.attrs import trace_attr

__all__ = ["susceptibility", "attribution", "component_susceptibility", "negative_covariance", "CHUNK_BYTES"]

#: Bytes of one (chain, draw, rows) block of the product series that :func:`negative_covariance`
#: evaluates at a time (bounds its memory; the result does not depend on it).
CHUNK_BYTES = 64 * 2**20
_ARVIZ_MCSE = "MCSE = sd/sqrt(ESS_mean) (arviz-stats)"
_SE_METHOD = ("MCSE of the mean of the product series (φ-φ̄)(ΔL-ΔL̄): sd/√ESS_mean (arviz-stats), "
              "first-order delta method")

# --------------------------------------------------------------------- estimators
def negative_covariance(phi: xr.DataArray, delta: xr.DataArray) -> xr.Dataset:
    """χ = -Cov(φ, ΔL) with its standard error, for every (row, observable) pair.

    ``phi``: (chain, draw, observable); ``delta``: (chain, draw, <row dim>), on the same
    draws. Returns ``chi``, ``se`` and ``ess`` (of the product series) with dims
    (<row dim>, observable). See the module docstring for the estimator and its error.
    """
    row = [d for d in delta.dims if d not in ("chain", "draw")][0]
    phi_c = phi - phi.mean(("chain", "draw"))
    dl_c = delta - delta.mean(("chain", "draw"))
    # One (chain, draw, rows) product of at most CHUNK_BYTES at a time bounds the memory.
    per_row = delta.sizes["chain"] * delta.sizes["draw"] * 8
    step = max(1, CHUNK_BYTES // per_row)
    parts = []
    for k in phi["observable"].values:
        chunks = []
        for start in range(0, delta.sizes[row], step):
            stats = series_mcse(phi_c.sel(observable=k) * dl_c.isel({row: slice(start, start + step)}))
            chunks.append(xr.Dataset({"chi": -stats["mean"], "se": stats["mcse"], "ess": stats["ess"]}))
        parts.append(xr.concat(chunks, dim=row) if len(chunks) > 1 else chunks[0])
    out = xr.concat(parts, dim="observable").assign_coords(observable=phi["observable"].values)
    return out.transpose(row, "observable")


def _finish(ds: xr.Dataset, trace: xr.DataTree, estimator: str) -> xr.Dataset:
    n_beta = float(trace_attr(trace, "n_beta"))
    ds["jacobian"] = n_beta * ds["chi"]
    ds["jacobian_se"] = n_beta * ds["se"]
    ds["chi"].attrs["long_name"] = "susceptibility χ = -Cov(φ, ΔL)"
    ds["jacobian"].attrs["long_name"] = "J = nβ·χ = d/dh E_h[φ] at h = 0"
    ds.attrs.update(n_beta=n_beta, estimator=estimator, se_method=_SE_METHOD,
                    num_chains=int(trace["sample_stats"].sizes["chain"]))
    return ds


def susceptibility(trace: xr.DataTree, probes: Sequence[str] | str | None = None,
                   observables: Sequence[str] | str | None = None, *,
                   mixtures: Mapping[str, Mapping[str, float]] | None = None) -> xr.Dataset:
    """χ(φ; q') = -Cov(φ, L_{q'} - L_q^ρ) for every recorded probe data set and observable.

    Returns an xarray Dataset with dims (probe, observable): ``chi``, ``se`` (its standard
    error from the ESS), ``jacobian`` = nβ·χ = d/dh E_h[φ], ``jacobian_se``, and ``ess``.
    ``mixtures={"mix": {"a": 0.3, "b": 0.7}}`` adds the probe Σ_k a_k q'_k (Σ a_k = 1),
    whose χ is exactly Σ_k a_k χ_k (χ is linear in the probe).
    """
    phi = observable_array(trace, observables)
    delta = probe_deltas(trace, probes, mixtures)
    ds = negative_covariance(phi, delta)
    ds.attrs["num_draws"] = int(phi.sizes["draw"])
    return _finish(ds, trace, "chi = -Cov(phi, L_probe - L_train)")


def attribution(trace: xr.DataTree, observables: Sequence[str] | str | None = None, *,
                samples: str = "train", indices=None) -> xr.Dataset:
    """Per-sample susceptibilities χ_z(φ) = -Cov(φ, l_z - L_q^ρ) (docs/math.md §3).

    ``samples="train"`` uses the recorded training samples (dim ``sample`` = training
    indices; variable ``weight`` = c ρ_z; Σ_z χ_z = 0 exactly when all are recorded with
    equal weights, see the module docstring for weights), ``"held_out"`` the held-out
    points (dim ``held_out_sample``). Covariances
    are taken over the thinned draws at which per-sample losses were recorded. Same
    variables as :func:`susceptibility`. A trace that streamed per-sample moments instead
    (module docstring) gives the same χ̂ with a batch-means ``se`` and NaN ``ess``.
    """
    if uses_sample_moments(trace):
        mom = sample_moments(trace, samples, indices)
        ds = moments_chi(mom, observables)
        if samples == "train":
            ds["weight"] = mom["weight"].astype(np.float64)
        ds.attrs["num_draws"] = int(mom.attrs["num_recorded"])
        ds = _finish(ds, trace, "chi_z = -Cov(phi, l_z - L_train)")
        ds.attrs["se_method"] = batch_means_method(mom.sizes["batch"])
        return ds
    delta = sample_deltas(trace, samples, indices)
    phi = observable_array(trace, observables).sel(draw=delta["draw"].values)
    ds = negative_covariance(phi, delta)
    if samples == "train":
        ds["weight"] = trace[PER_SAMPLE_GROUP]["weight"].sel(sample=ds["sample"].values).astype(np.float64)
    ds.attrs["num_draws"] = int(phi.sizes["draw"])
    return _finish(ds, trace, "chi_z = -Cov(phi, l_z - L_train)")


def component_susceptibility(restricted: xr.DataTree, full: xr.DataTree, *, observable: str | None = None,
                             probes: Sequence[str] | str | None = None, samples: str | None = None,
                             indices=None) -> xr.Dataset:
    """The component-restricted estimator (docs/math.md §3; Baker et al. 2025, App. C.4).

    For a component C with weights v (the rest u frozen at u*), take the observable
    φ_C(w) = δ(u - u*) (L(w) - L(w*)), supported on the component. Its covariance with ΔL
    under the full posterior p reduces to expectations under the weight-restricted
    posterior p_C(v) ∝ p(u*, v) and one under p:

        Cov_p(φ_C, ΔL) = (Z_C/Z) · E_{p_C}[ φ (ΔL - E_p[ΔL]) ],   φ = L(u*, v) - L(w*),

    so the observable comes from the restricted posterior and the centring of ΔL from the
    full one. We report χ_C = -E_{p_C}[φ (ΔL - E_p[ΔL])], i.e. without the positive
    normalising ratio Z_C/Z (common to every probe of a component, so signs and the
    ranking of probes within a component are unaffected; compare components only after
    normalising, e.g. per row of the response matrix).

    ``restricted`` is the trace of the weight-restricted posterior (e.g.
    ``post.with_(sampled=names)``); ``full`` the trace of the full posterior, with the same
    probes recorded. ``observable`` names a variable of ``restricted``'s observables group;
    default ``sample_stats/loss_delta`` = L^ρ(u*, v) - L^ρ(w*). Rows are the probe data
    sets (``probes``), or per-sample probes when ``samples`` is "train"/"held_out".

    Standard error: the MCSE of the restricted product series φ_t (ΔL_t - E_p[ΔL]) and the
    MCSE of E_p[ΔL] (independent runs), combined as
    se² = mcse_C² + (E_{p_C}[φ])² · mcse_p(ΔL)². Per-sample rows of a trace that streamed
    moments (module docstring) use them, with batch-means MCSEs
    (:func:`pplpatterning.estimators.moments_chi.moments_component_chi`); ``se_method``
    says which MCSE each trace gave.
    """
    nb_r, nb_f = float(trace_attr(restricted, "n_beta")), float(trace_attr(full, "n_beta"))
    if not np.isclose(nb_r, nb_f, rtol=1e-12):
        raise ValueError(f"The restricted (nβ={nb_r:g}) and full (nβ={nb_f:g}) traces must share nβ.")
    if samples is not None and uses_sample_moments(restricted):
        mom = sample_moments(restricted, samples, indices)
        phi_name = MOMENTS_LOSS_DELTA if observable is None else moment_observables(mom, [observable])[0]
        centre, full_method = _full_centre(full, mom[mom["delta_shift"].dims[0]], probes, samples, indices)
        ds = moments_component_chi(mom, centre, phi_name)
        num_draws, method = int(mom.attrs["num_recorded"]), batch_means_method(mom.sizes["batch"])
    else:
        phi, d_r = _restricted_series(restricted, observable, probes, samples, indices)
        centre, full_method = _full_centre(full, d_r[d_r.dims[-1]], probes, samples, indices)
        r_stats = series_mcse(phi * (d_r - centre["mean"]))
        phi_mean = float(phi.mean())
        se = np.sqrt(r_stats["mcse"] ** 2 + phi_mean**2 * centre["se"] ** 2)
        ds = xr.Dataset({"chi": -r_stats["mean"], "se": se, "ess": r_stats["ess"]})
        num_draws, method = int(phi.sizes["draw"]), _ARVIZ_MCSE
    name = "component_loss" if observable is None else observable
    ds = ds.expand_dims(observable=[name]).transpose(centre["mean"].dims[0], "observable")
    ds.attrs["num_draws"] = num_draws
    ds = _finish(ds, restricted, "chi_C = -E_restricted[phi (dL - E_full[dL])] (App. C.4, without Z_C/Z)")
    ds.attrs["se_method"] = ("sqrt(MCSE_restricted(phi (dL - E_full dL))^2 + E_restricted[phi]^2 MCSE_full(dL)^2), "
                             + (method if method == full_method else
                                f"MCSE_restricted: {method}; MCSE_full: {full_method}"))
    return ds


def _restricted_series(restricted: xr.DataTree, observable, probes, samples, indices):
    """(φ, ΔL) series of the restricted trace for :func:`component_susceptibility`, on the same draws."""
    if observable is None:
        phi = restricted["sample_stats"]["loss_delta"].astype(np.float64)
    else:
        phi = observable_array(restricted, [observable]).sel(observable=observable, drop=True)
    if samples is None:
        return phi, probe_deltas(restricted, probes, None)
    d_r = sample_deltas(restricted, samples, indices)
    return phi.sel(draw=d_r["draw"].values), d_r


def _full_centre(full: xr.DataTree, rows: xr.DataArray, probes, samples, indices) -> tuple[xr.Dataset, str]:
    """E_p[ΔL] and its MCSE per row (``mean``, ``se``) from the full trace (stored series or
    streamed moments) and how the MCSE was taken, checked to have the restricted trace's ``rows``."""
    if samples is not None and uses_sample_moments(full):
        mom = sample_moments(full, samples, indices)
        centre, method = moments_delta_mean(mom), batch_means_method(mom.sizes["batch"])
    else:
        stats = series_mcse(probe_deltas(full, probes, None) if samples is None
                            else sample_deltas(full, samples, indices))
        centre, method = xr.Dataset({"mean": stats["mean"], "se": stats["mcse"]}), _ARVIZ_MCSE
    if not np.array_equal(rows.values, centre[rows.name].values):
        raise ValueError(f"The restricted and full traces recorded different {rows.name}s; record the same probes "
                         "in both.")
    return centre, method
