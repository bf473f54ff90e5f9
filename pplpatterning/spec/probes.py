"""Probes: the data perturbations whose effect on observables susceptibilities measure.

Perturbing the data distribution q (the posterior's, weights ρ included) toward a probe q',
q_h = (1-h) q + h q', changes the loss by h ΔL with ΔL = L_{q'} - L_q^ρ (docs/math.md §3;
Baker, Wang, Hoogland, Murfet 2025, arXiv 2504.18274). Two kinds of probe:

- a **data set** q' = {z'_1..z'_m}: the backend records L_{q'}(w) = (1/m) Σ_j l(z'_j; w)
  at every kept draw (group ``probe_losses``, one (chain, draw) variable per data set);
- a **per-sample** probe q' = δ_z: the backend records l_z(w) for the training samples
  asked for (``per_sample``) and for held-out points (``held_out``), at every
  ``thinning``-th kept draw (group ``per_sample_losses``: ``train`` with dims
  (chain, draw, sample), ``sample`` = training indices; ``held_out`` with dims
  (chain, draw, held_out_sample); ``weight`` = the effective weights c ρ_z of the
  recorded training samples; the ``draw`` coordinate holds the kept-draw indices).

ΔL needs the full-batch training loss L_q^ρ(w) at the same draws, which is
``sample_stats/loss`` when ``loss_estimate="full"``; probes therefore require it.

Division of labour: :meth:`Probes.resolve` (called by ``sample`` before anything is
compiled) validates every array against the model and checks that the per-sample losses
fit in memory; a backend evaluates :func:`dataset_losses` and :func:`sample_losses` (the
one definition of the per-draw quantities, written against the array-API namespace) on
its draws and hands the arrays to :meth:`ProbePlan.assemble`, which builds the Trace
groups. All values are stored as float64.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import xarray as xr

from pplpatterning.spec.posterior import GibbsPosterior, data_array
from pplpatterning.samplers.settings import SamplerSettings

__all__ = [
    "Probes", "ProbePlan", "ProbeMemoryError", "available_memory", "check_memory",
    "dataset_losses", "sample_losses", "PROBE_GROUP", "PER_SAMPLE_GROUP", "STREAM_ABOVE_BYTES",
]

PROBE_GROUP = "probe_losses"
PER_SAMPLE_GROUP = "per_sample_losses"
_BYTES = 8  # float64
#: ``Probes(stream="auto")`` stores the per-sample losses up to this size, and streams them beyond.
STREAM_ABOVE_BYTES = 256 * 2**20
#: Peak memory of the per-sample losses relative to their size: the backend's output buffer,
#: its host copy and the Trace's arrays can coexist. Measured on NumPyro (4 chains × 2000
#: draws × 1000 samples = 64 MB): the process's peak RSS grew by ~3.5× that.
MEMORY_COPIES = 4


class ProbeMemoryError(MemoryError, ValueError):
    """The per-sample losses asked for will not fit in memory (raised before sampling)."""


# ----------------------------------------------------------------- per-draw quantities
def dataset_losses(loss_fn, params, datasets, consts, xp) -> dict[str, Any]:
    """{name: L_{q'}(w) = (1/m) Σ_j l(z'_j; w)} for every probe data set, at one draw."""
    return {name: xp.mean(loss_fn(params, batch, consts, xp)) for name, batch in datasets.items()}


def sample_losses(loss_fn, params, batch, consts, xp):
    """l_z(w) for every row z of ``batch`` (the recorded training samples, then the
    held-out points; :attr:`ProbePlan.per_sample_batch`), at one draw."""
    return loss_fn(params, batch, consts, xp)


# ----------------------------------------------------------------------- memory check
def available_memory() -> int:
    """Physical memory available now, in bytes (``SC_AVPHYS_PAGES × SC_PAGE_SIZE``)."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: no check possible
        return 1 << 62


def format_gb(x: float) -> str:
    return f"{x / 1e9:.3g} GB"


def check_memory(num_chains: int, num_draws: int, thinning: int, num_samples: int, *,
                 available: int | None = None) -> int:
    """Bytes the per-sample losses take (chains × ⌈draws/thinning⌉ × samples × 8); raise
    :class:`ProbeMemoryError` naming the fix when :data:`MEMORY_COPIES` times that (the peak
    while the backend hands them over) exceeds the available memory."""
    kept = math.ceil(num_draws / thinning)
    need = num_chains * kept * num_samples * _BYTES
    avail = available_memory() if available is None else int(available)
    if num_samples and MEMORY_COPIES * need > avail:
        per_draw = num_chains * num_samples * _BYTES * MEMORY_COPIES
        min_thin = math.ceil(num_draws / max(avail // per_draw, 1)) if per_draw <= avail else None
        max_samples = avail // (MEMORY_COPIES * num_chains * kept * _BYTES)
        fixes = []
        if min_thin is not None:
            fixes.append(f"`Probes(..., thinning={min_thin})` or more")
        if max_samples >= 1:
            fixes.append(f"at most {max_samples} `per_sample` indices (plus held-out points) at thinning={thinning}")
        fixes.append("fewer `num_draws`/`num_chains`")
        raise ProbeMemoryError(
            f"`probes`: the per-sample losses need {format_gb(need)} ({num_chains} chains × {kept} draws × "
            f"{num_samples} samples × 8 bytes), about {format_gb(MEMORY_COPIES * need)} at peak, but only {format_gb(avail)} "
            f"is available; nothing was sampled. Use " + ", or ".join(fixes) + "."
        )
    return int(need)


# ------------------------------------------------------------------------------ spec
def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{what} name {name!r} must be a non-empty string without '/'.")
    return name


def _check_dataset(post: GibbsPosterior, data: Any, what: str) -> dict[str, np.ndarray]:
    """A probe data set: the training data's keys and trailing shapes, finite, loss evaluable."""
    if not isinstance(data, Mapping) or not data:
        raise TypeError(f"`{what}` must be a non-empty mapping {{name: array}} like the training data.")
    keys, train_keys = set(map(str, data)), set(post.data)
    if keys != train_keys:
        raise ValueError(f"`{what}` has keys {sorted(keys)}; the model's data has {sorted(train_keys)}.")
    out = {str(k): data_array(v, f"{what}[{k!r}]") for k, v in data.items()}
    lengths = set()
    for k, v in out.items():
        if v.dtype != post.data[k].dtype:
            raise TypeError(f"`{what}[{k!r}]` has dtype {v.dtype}; the training data's {k!r} is "
                            f"{post.data[k].dtype}. Give the probe the same kind of values (integer ids or floats).")
        if v.ndim == 0 or v.shape[1:] != post.data[k].shape[1:]:
            raise ValueError(f"`{what}[{k!r}]` has shape {v.shape}; it needs a leading sample dimension and "
                             f"trailing shape {post.data[k].shape[1:]} like the training data.")
        lengths.add(v.shape[0])
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"`{what}` entries must share one non-zero number of samples; got {sorted(lengths)}.")
    m = lengths.pop()
    losses = post.model.per_sample_loss_numpy(post.centre, out)
    if losses.shape != (m,) or not np.all(np.isfinite(losses)):
        raise ValueError(f"`{what}`: the model's loss at the centre must be finite with shape ({m},); "
                         f"got shape {losses.shape}.")
    return out


@dataclass(frozen=True, eq=False)
class Probes:
    """What to record for susceptibilities, validated by ``sample`` before compilation.

    Parameters
    ----------
    datasets
        ``{name: data dict}``: probe data sets q' (same keys and trailing shapes as the
        training data). ΔL = L_{q'} - L_q^ρ per kept draw.
    per_sample
        Training samples z whose losses l_z(w) are recorded, for per-sample
        susceptibilities χ_z: ``None`` (none), ``"all"``, or a sequence of distinct indices.
    held_out
        Optional data dict of held-out points whose per-sample losses are recorded too.
    thinning
        Record per-sample losses at every ``thinning``-th kept draw (data-set probes are
        recorded at every kept draw; they cost one scalar per draw).
    stream
        ``True``: stream the per-sample losses into float64 batch sums while sampling
        (group ``per_sample_moments``, :mod:`pplpatterning.trace.moments`; memory independent
        of the number of draws); ``False``: store them, (chain, draw, sample); ``"auto"``
        (default): store them when they take at most :data:`STREAM_ABOVE_BYTES`, else stream.
        The per-sample estimators read either.
    per_token
        For a sequence model (``Model(tokens="mean"|"sum")``): record every token's loss
        l_{z,t}(w) of the chosen sequences instead of the sequence's l_z, for per-token
        susceptibilities χ_{z,t} = -Cov(φ, l_{z,t} - L). The row dimension then holds one
        row per (sequence, position), with coordinates ``sequence`` and ``position``; a row's
        ``weight`` is c ρ_z / T (mean) or c ρ_z (sum), so the exact identity of docs/math.md
        §3 holds over tokens.
    """

    datasets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    per_sample: Any = None
    held_out: Mapping[str, Any] | None = None
    thinning: int = 1
    stream: bool | str = "auto"
    per_token: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.datasets, Mapping):
            raise TypeError("`datasets` must be a mapping {probe name: data dict}.")
        for name in self.datasets:
            _check_name(name, "`datasets`")
        object.__setattr__(self, "datasets", MappingProxyType(dict(self.datasets)))
        t = self.thinning
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1:
            raise ValueError(f"`thinning` must be a positive integer, got {t!r}.")
        object.__setattr__(self, "thinning", int(t))
        ps = self.per_sample
        if ps is not None and not (isinstance(ps, str) and ps == "all"):
            if isinstance(ps, str) or not isinstance(ps, (Sequence, np.ndarray, range)):
                raise TypeError(f"`per_sample` must be None, 'all', or a sequence of sample indices; got {ps!r}.")
            idx = np.asarray(ps)
            if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
                raise TypeError(f"`per_sample` indices must be a 1-D sequence of integers; got dtype {idx.dtype}, "
                                f"shape {idx.shape}.")
            idx = idx.astype(np.int64)
            if idx.size == 0:
                raise ValueError("`per_sample` is empty; give indices, 'all', or None.")
            if np.unique(idx).size != idx.size:
                raise ValueError("`per_sample` repeats an index; give each training sample once.")
            idx.setflags(write=False)
            object.__setattr__(self, "per_sample", idx)
        if self.held_out is not None and not isinstance(self.held_out, Mapping):
            raise TypeError("`held_out` must be a data dict {name: array} or None.")
        if not (isinstance(self.stream, (bool, np.bool_)) or self.stream == "auto"):
            raise ValueError(f"`stream` must be True, False or 'auto', got {self.stream!r}.")
        if not isinstance(self.per_token, (bool, np.bool_)):
            raise TypeError(f"`per_token` must be True or False, got {self.per_token!r}.")
        if self.per_token and self.per_sample is None and self.held_out is None:
            raise ValueError("`per_token=True` records the tokens of `per_sample` sequences or `held_out` ones; "
                             "give one of them.")
        if not self.datasets and self.per_sample is None and self.held_out is None:
            raise ValueError("`Probes` records nothing: give `datasets`, `per_sample` or `held_out`.")

    def resolve(self, posterior: GibbsPosterior, settings: SamplerSettings, *,
                available: int | None = None) -> "ProbePlan":
        """Validate against the posterior and sampler settings; decide whether the per-sample
        losses are streamed; check the stored losses' memory; return the plan."""
        if settings.loss_estimate != "full":
            raise ValueError("`probes` need the full-batch training loss L_n(w) at every kept draw (ΔL = L_q' - L_n); "
                             "use loss_estimate='full' with probes.")
        datasets = {name: _check_dataset(posterior, d, f"probes.datasets[{name!r}]")
                    for name, d in self.datasets.items()}
        n = posterior.n
        if self.per_sample is None:
            idx = np.zeros(0, dtype=np.int64)
        elif isinstance(self.per_sample, str):
            idx = np.arange(n, dtype=np.int64)
        else:
            idx = np.asarray(self.per_sample, dtype=np.int64)
            bad = idx[(idx < 0) | (idx >= n)]
            if bad.size:
                raise ValueError(f"`per_sample` indices {bad[:5].tolist()} are outside the training set "
                                 f"[0, {n}); use 'all' or indices 0..{n - 1}.")
        held = None if self.held_out is None else _check_dataset(posterior, self.held_out, "probes.held_out")
        tokens = self._tokens_per_sequence(posterior)
        num = (idx.size + (0 if held is None else next(iter(held.values())).shape[0])) * max(tokens, 1)
        stored = settings.num_chains * math.ceil(settings.num_draws / self.thinning) * num * _BYTES
        stream = bool(self.stream) if self.stream != "auto" else stored > STREAM_ABOVE_BYTES
        # the streamed sums' memory is estimated with the run's (pplpatterning.sampling.memory)
        need = 0 if stream else check_memory(settings.num_chains, settings.num_draws, self.thinning, num,
                                             available=available)
        return ProbePlan(
            datasets=datasets,
            dataset_loss_at_centre={k: float(np.mean(posterior.model.per_sample_loss_numpy(posterior.centre, d)))
                                    for k, d in datasets.items()},
            train_index=idx,
            train_weights=np.asarray(posterior.effective_weights, dtype=np.float64)[idx],
            train_data=(dict(posterior.data) if idx.size == n and np.array_equal(idx, np.arange(n))
                        else {k: v[idx] for k, v in posterior.data.items()}),
            held_out=held,
            thinning=self.thinning,
            memory_bytes=need,
            stream=bool(num) and stream,
            tokens=tokens,
            token_reduction=posterior.model.tokens if tokens else None,
        )

    def _tokens_per_sequence(self, posterior: GibbsPosterior) -> int:
        """T of a per-token probe (the shape of the model's token loss on one training row), else 0."""
        if not self.per_token:
            return 0
        token_loss = posterior.model.token_loss
        if token_loss is None:
            raise ValueError("`per_token=True` needs a sequence model whose loss returns per-token losses "
                             "(batch, T): build it with `Model(..., tokens='mean')` (or 'sum').")
        row = {k: np.asarray(v)[:1] for k, v in posterior.data.items()}
        out = np.asarray(token_loss(dict(posterior.centre), row, posterior.model.consts, np))
        if out.ndim != 2 or out.shape[0] != 1:
            raise ValueError(f"`per_token=True`: the model's token loss must return shape (batch, T); on one row "
                             f"it returned {out.shape}.")
        return int(out.shape[1])


@dataclass(frozen=True, eq=False)
class ProbePlan:
    """A validated :class:`Probes`, ready for a backend (NumPy arrays: float64, int64 for integer data)."""

    datasets: Mapping[str, Mapping[str, np.ndarray]]
    dataset_loss_at_centre: Mapping[str, float]
    train_index: np.ndarray
    train_weights: np.ndarray
    train_data: Mapping[str, np.ndarray]
    held_out: Mapping[str, np.ndarray] | None
    thinning: int
    memory_bytes: int  # of the stored per-sample losses (0 when streamed)
    stream: bool = False  # per-sample losses streamed into batch sums (else stored)
    tokens: int = 0  # T: one row per (sequence, position) when per-token losses are recorded
    token_reduction: str | None = None

    @property
    def rows_per_sequence(self) -> int:
        return max(int(self.tokens), 1)

    @property
    def num_train(self) -> int:
        """Recorded training rows (samples, or sample × position with per-token losses)."""
        return int(self.train_index.size) * self.rows_per_sequence

    @property
    def num_held_out(self) -> int:
        held = 0 if self.held_out is None else int(next(iter(self.held_out.values())).shape[0])
        return held * self.rows_per_sequence

    def row_coords(self, kind: str) -> dict[str, Any]:
        """The xarray coordinates of the ``kind`` ("train" or "held_out") rows: dim ``sample``
        (training indices) or ``held_out_sample``; with per-token rows a flat row id
        (sequence · T + position) plus the coordinates ``sequence`` and ``position``."""
        dim = "sample" if kind == "train" else "held_out_sample"
        seqs = (self.train_index if kind == "train"
                else np.arange(self.num_held_out // self.rows_per_sequence, dtype=np.int64))
        if not self.tokens:
            return {dim: np.asarray(seqs).copy()}
        T = self.tokens
        seq = np.repeat(seqs, T)
        pos = np.tile(np.arange(T, dtype=np.int64), seqs.size)
        return {dim: seq * T + pos, "sequence": (dim, seq), "position": (dim, pos)}

    @property
    def row_weights(self) -> np.ndarray:
        """c ρ per recorded training row: c ρ_z, or per token c ρ_z / T (mean) and c ρ_z (sum)."""
        if not self.tokens:
            return self.train_weights.copy()
        w = np.repeat(self.train_weights, self.tokens)
        return w / self.tokens if self.token_reduction == "mean" else w

    @property
    def num_per_sample(self) -> int:
        return self.num_train + self.num_held_out

    @property
    def per_sample_batch(self) -> dict[str, np.ndarray] | None:
        """The rows whose losses :func:`sample_losses` evaluates: recorded training samples,
        then held-out points (None when no per-sample losses are asked for)."""
        if not self.num_per_sample:
            return None
        if self.held_out is None:
            return dict(self.train_data)
        return {k: np.concatenate([self.train_data[k], self.held_out[k]], axis=0) for k in self.train_data}

    def thinned_draws(self, num_draws: int) -> np.ndarray:
        """Indices of the kept draws at which per-sample losses are recorded."""
        return np.arange(0, int(num_draws), self.thinning, dtype=np.int64)

    def assemble(self, *, dataset_losses: Mapping[str, np.ndarray] | None,
                 per_sample: np.ndarray | None, num_draws: int) -> dict[str, xr.Dataset]:
        """The Trace groups from the backend's arrays.

        ``dataset_losses``: ``{name: (chain, draw)}`` L_{q'}(w); ``per_sample``:
        ``(chain, len(thinned_draws(num_draws)), num_per_sample)`` l_z(w), training rows first.
        """
        groups: dict[str, xr.Dataset] = {}
        if self.datasets:
            missing = set(self.datasets) - set(dataset_losses or {})
            if missing:
                raise ValueError(f"The backend returned no losses for probe data sets {sorted(missing)}.")
            arrays = {k: np.asarray(dataset_losses[k], dtype=np.float64) for k in self.datasets}
            shape = next(iter(arrays.values())).shape
            coords = {"chain": np.arange(shape[0]), "draw": np.arange(shape[1])}
            ds = xr.Dataset({k: (("chain", "draw"), v) for k, v in arrays.items()}, coords=coords)
            for k in self.datasets:
                ds[k].attrs.update(num_samples=int(next(iter(self.datasets[k].values())).shape[0]),
                                   loss_at_centre=float(self.dataset_loss_at_centre[k]))
            ds.attrs["description"] = "L_q'(w) = mean_j l(z'_j; w) of each probe data set; ΔL = L_q' - sample_stats/loss"
            groups[PROBE_GROUP] = ds
        if self.num_per_sample and not self.stream:
            draws = self.thinned_draws(num_draws)
            arr = np.asarray(per_sample, dtype=np.float64)
            if arr.ndim != 3 or arr.shape[1:] != (draws.size, self.num_per_sample):
                raise ValueError(f"per-sample losses must have shape (chain, {draws.size}, {self.num_per_sample}); "
                                 f"got {arr.shape}.")
            coords = {"chain": np.arange(arr.shape[0]), "draw": draws}
            data = {}
            if self.num_train:
                coords.update(self.row_coords("train"))
                data["train"] = (("chain", "draw", "sample"), arr[:, :, : self.num_train])
                data["weight"] = (("sample",), self.row_weights)
            if self.num_held_out:
                coords.update(self.row_coords("held_out"))
                data["held_out"] = (("chain", "draw", "held_out_sample"), arr[:, :, self.num_train:])
            ds = xr.Dataset(data, coords=coords)
            ds.attrs.update(thinning=int(self.thinning),
                            description="l_z(w) per recorded sample at every `thinning`-th kept draw; "
                                        "weight = effective data weight c·ρ_z")
            groups[PER_SAMPLE_GROUP] = ds
        return groups
