"""Per-sample susceptibilities from streamed batch moments, with batch-means standard errors.

The backends can stream, instead of the (chain, draw, sample) series of per-sample losses,
float64 batch sums of the shifted values φ̃ = φ - φ(w*) and ΔL̃_z = ΔL_z - ΔL_z(w*) and of their
products (:mod:`pplpatterning.trace.moments`; read with
:func:`pplpatterning.trace.access.sample_moments`). Per batch b (of B per chain; the j-th of J
recorded draws of a chain is in batch ⌊j·B/J⌋): m_b draws, Φ_b = Σ φ̃, D_b = Σ ΔL̃,
X_b = Σ φ̃ ΔL̃. Over the N = Σ_b m_b recorded draws of all chains, in shifted units,

    φ̄ = Σ_b Φ_b / N,   ΔL̄ = Σ_b D_b / N,   χ̂ = -(Σ_b X_b / N - φ̄ ΔL̄),

which is the stored-series estimator -(1/N) Σ_t (φ_t - φ̄)(ΔL_t - ΔL̄) rearranged (equal up
to rounding; a shift changes no covariance). Its standard error is the batch-means estimate
for the mean of the product series s_t = (φ_t - φ̄)(ΔL_t - ΔL̄) with the pooled means, whose
batch means follow from the sums:

    s̄_b = X_b/m_b - φ̄ D_b/m_b - ΔL̄ Φ_b/m_b + φ̄ ΔL̄,
    σ̂² = Σ_b m_b (s̄_b - s̄)² / (a - 1),   se = √(σ̂² / N),

over the a non-empty batches of all chains (s̄ = Σ_b m_b s̄_b / N = -χ̂). σ̂² estimates the
asymptotic variance σ² = Var(s)(1 + 2 Σ_k ρ_k) of √N (s̄ - E s); it is consistent when the
batch length grows with the run (Flegal & Jones 2010, "Batch means and spectral variance
estimators in Markov chain Monte Carlo", Ann. Statist. 38(2); Geyer 1992, "Practical Markov
chain Monte Carlo", Statist. Sci. 7(4), §3.2), and unequal batch lengths (which differ by at
most one draw) enter through the weights m_b. As for the stored-series error, the pooled
means make this the first-order (delta-method) standard error of χ̂
(:mod:`pplpatterning.estimators.susceptibility`).

No ESS is reported (``ess`` is NaN): ESS = N·Var(s)/σ̂² needs Var(s), i.e. fourth moments of
(φ, ΔL), which are not streamed.

:func:`batch_means_se` computes the same batch-means standard error on a stored (chain,
draw, ...) series with the same batch assignment, so the two paths can be compared exactly.
Everything here is NumPy/xarray.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from pplpatterning.trace.moments import MOMENTS_LOSS_DELTA, batch_index

__all__ = ["moments_chi", "moments_component_chi", "moments_delta_mean", "combine_rows", "batch_means_se",
           "moment_observables", "batch_means_method", "ROW_CHUNK_BYTES"]

#: Bytes of one (batch, rows, observable) block that :func:`moments_chi` evaluates at a time
#: (bounds its temporaries at n = 10⁵ rows; the result does not depend on it).
ROW_CHUNK_BYTES = 64 * 2**20


def batch_means_method(num_batches: int) -> str:
    """The ``se_method`` text of a batch-means standard error with ``num_batches`` per chain."""
    return (f"batch means ({int(num_batches)} per chain, pooled over chains) of the product series "
            "(φ-φ̄)(ΔL-ΔL̄): se = sqrt(Σ_b m_b (s̄_b - s̄)² / ((a-1) N)) (Flegal & Jones 2010)")


def _row_dim(moments: xr.Dataset) -> str:
    return str(moments["delta_shift"].dims[0])


def _flat(da: xr.DataArray, keep: np.ndarray) -> np.ndarray:
    """The non-empty batches of all chains as one leading axis: (chain, batch, ...) -> (a, ...)."""
    arr = da.transpose("chain", "batch", ...).values.astype(np.float64)
    return arr.reshape((-1,) + arr.shape[2:])[keep]


def _counts(moments: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(m_b of the non-empty batches, the mask of non-empty batches over chain × batch)."""
    m = moments["count"].transpose("chain", "batch").values.reshape(-1).astype(np.float64)
    keep = m > 0
    return m[keep], keep


def _se(m: np.ndarray, sb: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """se = √(Σ_b m_b (s̄_b - s̄)² / ((a-1) N)) over the leading batch axis; NaN when a < 2."""
    a = m.size
    if a < 2:
        return np.full(np.shape(mean), np.nan)
    dev = sb - mean
    sigma2 = np.tensordot(m, dev * dev, axes=(0, 0)) / (a - 1)
    return np.sqrt(sigma2 / m.sum())


def moment_observables(moments: xr.Dataset, names: Sequence[str] | str | None = None) -> list[str]:
    """The observables ``names`` of the moments (default: every streamed observable except
    :data:`~pplpatterning.trace.moments.MOMENTS_LOSS_DELTA`), checked."""
    available = [str(o) for o in moments["observable"].values]
    if names is None:
        names = [o for o in available if o != MOMENTS_LOSS_DELTA]
        if not names:
            raise ValueError("The trace streamed no observables; pass observables={name: phi} to sample(), e.g. "
                             "pplpatterning.spec.observables.full_loss(posterior).")
        return names
    names = [names] if isinstance(names, str) else [str(k) for k in names]
    missing = [k for k in names if k not in available]
    if missing:
        raise ValueError(f"`observables` {missing} are not in the trace's per-sample moments; it streamed {available}.")
    return names


def _pooled_block(m, phi, dsum, cross):
    """χ̂ and se for one block of rows (shifted sums of the non-empty batches; module docstring)."""
    N = m.sum()
    pbar, dbar = phi.sum(0) / N, dsum.sum(0) / N                      # (K,), (r,)
    cov = cross.sum(0) / N - dbar[:, None] * pbar[None, :]            # (r, K)
    pb, db = phi / m[:, None], dsum / m[:, None]                      # (a, K), (a, r)
    sb = (cross / m[:, None, None] - pbar[None, None, :] * db[:, :, None]
          - dbar[None, :, None] * pb[:, None, :] + (dbar[:, None] * pbar[None, :])[None])
    return -cov, _se(m, sb, cov)


def moments_chi(moments: xr.Dataset, observables: Sequence[str] | str | None = None) -> xr.Dataset:
    """χ̂ = -Cov(φ, ΔL) with its batch-means standard error, for every (row, observable).

    ``moments``: the Dataset of :func:`pplpatterning.trace.access.sample_moments` (or of
    :func:`combine_rows`). Returns ``chi``, ``se`` and ``ess`` (NaN, see the module docstring)
    with dims (<row dim>, observable); formula in the module docstring. Rows are evaluated
    in blocks of at most :data:`ROW_CHUNK_BYTES`.
    """
    names = moment_observables(moments, observables)
    row = _row_dim(moments)
    m, keep = _counts(moments)
    R, K = moments.sizes[row], len(names)
    chi, se = np.full((R, K), np.nan), np.full((R, K), np.nan)
    if m.size:
        phi = _flat(moments["phi_sum"].sel(observable=names), keep)
        step = max(1, ROW_CHUNK_BYTES // (8 * m.size * max(K, 1)))
        with np.errstate(invalid="ignore", divide="ignore"):
            for start in range(0, R, step):
                rows = slice(start, start + step)
                dsum = _flat(moments["delta_sum"].isel({row: rows}), keep)
                cross = _flat(moments["delta_cross"].isel({row: rows}).sel(observable=names)
                              .transpose("chain", "batch", row, "observable"), keep)
                chi[rows], se[rows] = _pooled_block(m, phi, dsum, cross)
    coords = {row: moments[row].values, "observable": names}
    dims = (row, "observable")
    return xr.Dataset({"chi": (dims, chi), "se": (dims, se), "ess": (dims, np.full((R, K), np.nan))}, coords=coords)


def moments_delta_mean(moments: xr.Dataset) -> xr.Dataset:
    """E_p[ΔL] per row and its batch-means MCSE, from the moments of the full posterior.

    mean = ΔL(w*) + Σ_b D_b / N; se = √(Σ_b m_b (D_b/m_b - Σ D/N)² / ((a-1) N)) (Flegal &
    Jones 2010). Returns ``mean`` and ``se`` over the row dim.
    """
    row = _row_dim(moments)
    m, keep = _counts(moments)
    shift = moments["delta_shift"].values.astype(np.float64)
    mean, se = np.full(shift.shape, np.nan), np.full(shift.shape, np.nan)
    if m.size:
        dsum = _flat(moments["delta_sum"], keep)
        centred = dsum.sum(0) / m.sum()
        mean, se = shift + centred, _se(m, dsum / m[:, None], centred)
    coords = {row: moments[row].values}
    return xr.Dataset({"mean": ((row,), mean), "se": ((row,), se)}, coords=coords)


def moments_component_chi(restricted: xr.Dataset, centre: xr.Dataset, observable: str) -> xr.Dataset:
    """χ_C = -E_{p_C}[φ (ΔL - E_p[ΔL])] from the restricted run's moments and the full run's centre.

    ``centre``: E_p[ΔL] (``mean``) and its MCSE (``se``) per row, e.g. :func:`moments_delta_mean`
    of the full run's moments, on the rows of ``restricted``. With φ = φ̃ + a (a = φ(w*)),
    ΔL = ΔL̃ + b (b the restricted run's shift) and d = E_p[ΔL] - b, the product series
    s_t = φ_t (ΔL_t - E_p[ΔL]) has batch means s̄_b = X_b/m_b - d Φ_b/m_b + a D_b/m_b - a d;
    χ_C = -s̄ and, as in :func:`pplpatterning.estimators.susceptibility.component_susceptibility`,
    se² = se_BM(s)² + (E_{p_C}[φ])² se_full(ΔL)² (independent runs; Baker et al. 2025,
    App. C.4). Returns ``chi``, ``se``, ``ess`` (NaN) over the row dim.
    """
    row = _row_dim(restricted)
    moment_observables(restricted, [observable])
    m, keep = _counts(restricted)
    R = restricted.sizes[row]
    chi, se = np.full(R, np.nan), np.full(R, np.nan)
    if m.size:
        a = float(restricted["phi_shift"].sel(observable=observable))
        d = centre["mean"].sel({row: restricted[row].values}).values - restricted["delta_shift"].values
        phi = _flat(restricted["phi_sum"].sel(observable=observable), keep)          # (a,)
        dsum = _flat(restricted["delta_sum"], keep)                                   # (a, R)
        cross = _flat(restricted["delta_cross"].sel(observable=observable), keep)     # (a, R)
        N = m.sum()
        sb = cross / m[:, None] - d * (phi / m)[:, None] + a * dsum / m[:, None] - a * d
        sbar = cross.sum(0) / N - d * phi.sum() / N + a * dsum.sum(0) / N - a * d
        se_full = centre["se"].sel({row: restricted[row].values}).values
        with np.errstate(invalid="ignore"):
            chi, se = -sbar, np.sqrt(_se(m, sb, sbar) ** 2 + (a + phi.sum() / N) ** 2 * se_full**2)
    nan = np.full(R, np.nan)
    return xr.Dataset({"chi": ((row,), chi), "se": ((row,), se), "ess": ((row,), nan)},
                      coords={row: restricted[row].values})


def combine_rows(moments: xr.Dataset, weights: xr.DataArray, name: str, dim: str = "combo") -> xr.Dataset:
    """The moments of the one combined probe ΔL_w = Σ_j w_j ΔL_j (rows j weighted by ``weights``,
    a DataArray over the row dim), as a single row ``name`` of dim ``dim``.

    Sums, products and shifts are linear in ΔL, so D_b, X_b and the shift of ΔL_w are the
    w-weighted sums of the rows'; χ̂ of the result is Σ_j w_j χ̂_j to rounding and its se
    accounts for the correlations between the χ̂_j.
    """
    row = _row_dim(moments)
    w = weights.astype(np.float64)
    out = xr.Dataset({"count": moments["count"], "phi_sum": moments["phi_sum"], "phi_shift": moments["phi_shift"]})
    for var in ("delta_sum", "delta_cross", "delta_shift"):
        out[var] = (moments[var].sel({row: w[row].values}) * w).sum(row).expand_dims({dim: [name]})
    out.attrs.update(moments.attrs)
    return out


def batch_means_se(series: xr.DataArray, num_batches: int) -> xr.DataArray:
    """Batch-means MCSE of the mean of a stored (chain, draw, ...) series, per extra index.

    The j-th of a chain's J draws goes to batch ⌊j·B/J⌋ (B = ``num_batches``, the assignment
    of :func:`pplpatterning.trace.moments.batch_index`); with m_b and s̄_b the lengths and
    means of the non-empty batches of all chains, s̄ the pooled mean and N the total,
    se = √(Σ_b m_b (s̄_b - s̄)² / ((a-1) N)) (Flegal & Jones 2010; Geyer 1992). On the
    product series (φ - φ̄)(ΔL - ΔL̄) this is the se that :func:`moments_chi` gets from the
    streamed moments.
    """
    if not isinstance(series, xr.DataArray) or not {"chain", "draw"} <= set(series.dims):
        raise ValueError("`series` must be an xarray.DataArray with dims 'chain' and 'draw' (plus any others).")
    if int(num_batches) < 1:
        raise ValueError(f"`num_batches` must be a positive integer, got {num_batches!r}.")
    da = series.astype(np.float64).transpose("chain", "draw", ...)
    rest = da.dims[2:]
    C, J = da.sizes["chain"], da.sizes["draw"]
    if C * J == 0:
        return da.sum(("chain", "draw")) * np.nan
    ids = batch_index(np.arange(J), J, int(num_batches))
    starts = np.flatnonzero(np.diff(ids, prepend=-1))
    lengths = np.diff(np.append(starts, J)).astype(np.float64)
    sums = np.add.reduceat(da.values, starts, axis=1)                      # (C, a_c, ...)
    m = np.tile(lengths, C)
    sb = sums.reshape((-1,) + sums.shape[2:]) / m.reshape((-1,) + (1,) * len(rest))
    mean = da.values.sum(axis=(0, 1)) / (C * J)
    se = _se(m, sb, mean)
    return xr.DataArray(se, dims=rest, coords={k: da[k] for k in rest if k in da.coords})
