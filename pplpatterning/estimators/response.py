"""The response matrix and its principal susceptibility directions (docs/math.md §3).

The response matrix has one row per probe (or per sample z) and one column per observable,
entries χ(φ_a; q'_r) from :func:`~pplpatterning.estimators.susceptibility.susceptibility` or
χ_z(φ_a) from :func:`~pplpatterning.estimators.susceptibility.attribution`. Its low-rank structure
separates functional modules (Baker, Wang, Hoogland, Murfet 2025, arXiv 2504.18274, §4:
principal components of the per-token susceptibility vectors).

:func:`principal_directions` is PCA by singular value decomposition: with X the matrix
(rows × observables), optionally centred (column means over rows removed) and scaled
(columns divided by their standard deviation over rows),

    X = U S Vᵀ,   loadings = rows of Vᵀ (principal susceptibility directions in
                  observable space),   scores = U S (each row's coordinates),
    explained variance ratio = S_k² / Σ_j S_j².

Signs are fixed so that each direction's largest-magnitude loading is positive.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["response_matrix", "principal_directions"]


def response_matrix(result: xr.Dataset, *, value: str = "chi") -> xr.DataArray:
    """The (row, observable) matrix of ``value`` ("chi" or "jacobian") from a result of
    ``susceptibility``, ``attribution`` or ``component_susceptibility``."""
    if not isinstance(result, xr.Dataset) or value not in result:
        raise ValueError(f"`result` must be a susceptibility/attribution Dataset with a {value!r} variable.")
    if value not in ("chi", "jacobian"):
        raise ValueError(f"`value` must be 'chi' or 'jacobian', got {value!r}.")
    mat = result[value]
    if mat.ndim != 2 or "observable" not in mat.dims:
        raise ValueError(f"`result[{value!r}]` must have dims (row, observable), got {mat.dims}.")
    row = [d for d in mat.dims if d != "observable"][0]
    return mat.transpose(row, "observable")


def principal_directions(matrix: xr.DataArray, *, n_components: int | None = None, center: bool = True,
                         scale: bool = False) -> xr.Dataset:
    """PCA of a response matrix (rows × observables): principal susceptibility directions.

    Returns ``singular_value`` and ``explained`` (component), ``loading``
    (component, observable) and ``score`` (row, component). ``center`` removes the column
    means over rows (PCA; per-sample matrices with equal weights already have zero column
    sums); ``scale`` also divides each column by its standard deviation over rows.
    """
    if isinstance(matrix, xr.Dataset):
        matrix = response_matrix(matrix)
    if not isinstance(matrix, xr.DataArray) or matrix.ndim != 2 or "observable" not in matrix.dims:
        raise ValueError("`matrix` must be a 2-D DataArray with an 'observable' dim (see response_matrix).")
    row = [d for d in matrix.dims if d != "observable"][0]
    mat = matrix.transpose(row, "observable")
    x = np.asarray(mat.values, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("`matrix` contains NaN or infinite entries; drop those rows or observables first.")
    if center:
        x = x - x.mean(axis=0)
    if scale:
        sd = x.std(axis=0)
        x = x / np.where(sd > 0, sd, 1.0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    k = s.size if n_components is None else int(n_components)
    if not 1 <= k <= s.size:
        raise ValueError(f"`n_components` must be between 1 and {s.size}, got {n_components!r}.")
    flip = np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])
    flip[flip == 0] = 1.0
    u, vt = u * flip, vt * flip[:, None]
    total = float(np.sum(s**2))
    comps = [f"PC{i + 1}" for i in range(k)]
    return xr.Dataset(
        {
            "singular_value": (("component",), s[:k]),
            "explained": (("component",), s[:k] ** 2 / total if total > 0 else np.full(k, np.nan)),
            "loading": (("component", "observable"), vt[:k]),
            "score": ((row, "component"), u[:, :k] * s[:k]),
        },
        coords={"component": comps, "observable": mat["observable"].values, row: mat[row].values},
        attrs={"center": int(center), "scale": int(scale)},
    )
