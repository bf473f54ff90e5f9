"""A synthetic in-context task with known structure: bigram background + repeated spans.

Each sequence of ``seq_len`` tokens over ``vocab`` tokens is a Markov chain with a fixed,
seeded, peaked transition matrix P (row v = softmax(sharpness · z_v), z_v ~ N(0, I), drawn
from ``task_seed``), into which one random span is written twice: k tokens s_0..s_{k-1}
drawn uniformly at random (k uniform in ``span``) appear at positions a..a+k-1 and again at
b..b+k-1 (b ≥ a + k + ``min_gap``). Tokens outside the spans follow P from their
predecessor (also right after a span). So a next-token predictor can learn bigram
statistics from P, and can predict the repeat's tokens b+1..b+k-1 only by *copying*: find
the earlier occurrence of the current token and predict the token after it, which is what
induction heads do (a previous-token head in layer 0 composed with an induction head in
layer 1; Olsson et al. 2022, "In-context learning and induction heads", arXiv:2209.11895).

Every position t gets a label code (``LABELS[code]``) saying how token t can be predicted
from the tokens before it:

=================  ====  ==============================================================
label              code  meaning
=================  ====  ==============================================================
start              0     t = 0: no context (never a prediction target)
bigram             1     drawn from P[x_{t-1}]: predictable from bigram statistics
first_occurrence   2     inside the first copy of the span: uniform, unpredictable
repeat_start       3     t = b, the repeat's first token: uniform, unpredictable (its
                         predecessor is background, so copying has no cue)
induction          4     t ∈ (b, b+k): x_t = x_{source_t} with source_t = a + (t - b),
                         the token after the earlier occurrence of x_{t-1}
=================  ====  ==============================================================

``source`` holds source_t at induction positions and -1 elsewhere.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

__all__ = ["LABELS", "LABEL_CODES", "InductionTask", "TaskData", "bigram_matrix"]

LABELS = ("start", "bigram", "first_occurrence", "repeat_start", "induction")
LABEL_CODES = {name: code for code, name in enumerate(LABELS)}


class TaskData(NamedTuple):
    """A data set of the task: ``tokens`` int64 (n, seq_len), ``labels`` int64 codes
    (n, seq_len) into :data:`LABELS`, ``source`` int64 (n, seq_len): the copied position at
    induction positions, -1 elsewhere."""

    tokens: np.ndarray
    labels: np.ndarray
    source: np.ndarray


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}, got {value!r}.")
    return int(value)


def bigram_matrix(vocab: int, sharpness: float = 3.0, seed: int = 0) -> np.ndarray:
    """Transition matrix P (vocab, vocab), rows softmax(sharpness · z_v) with z_v ~ N(0, I)
    from ``seed``: larger ``sharpness`` makes each row more peaked (lower bigram entropy)."""
    vocab = _int(vocab, "vocab", 2)
    if isinstance(sharpness, bool) or not isinstance(sharpness, numbers.Real) or not 0 <= float(sharpness) < 50:
        raise ValueError(f"`sharpness` must be a number in [0, 50), got {sharpness!r}.")
    z = float(sharpness) * np.random.default_rng(_int(seed, "task_seed", 0)).standard_normal((vocab, vocab))
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class InductionTask:
    """The task's definition (module docstring); :meth:`sample` draws data sets.

    ``span`` = (k_min, k_max) bounds the repeated span's length (inclusive); sequences
    need ``seq_len ≥ 2·k_max + min_gap + 1``. ``sharpness`` and ``task_seed`` fix P.
    """

    vocab: int
    seq_len: int
    span: tuple[int, int] = (4, 8)
    min_gap: int = 1
    sharpness: float = 3.0
    task_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocab", _int(self.vocab, "vocab", 2))
        object.__setattr__(self, "seq_len", _int(self.seq_len, "seq_len", 3))
        object.__setattr__(self, "min_gap", _int(self.min_gap, "min_gap", 0))
        object.__setattr__(self, "task_seed", _int(self.task_seed, "task_seed", 0))
        try:
            lo, hi = (int(_int(k, "span", 2)) for k in self.span)
        except TypeError:
            raise ValueError(f"`span` must be a pair (k_min, k_max) of integers ≥ 2, got {self.span!r}.") from None
        if lo > hi:
            raise ValueError(f"`span` = {self.span!r} has k_min > k_max; pass (k_min, k_max).")
        object.__setattr__(self, "span", (lo, hi))
        need = 2 * hi + self.min_gap + 1
        if self.seq_len < need:
            raise ValueError(f"`seq_len` = {self.seq_len} is too short for two spans of up to {hi} tokens with a gap "
                             f"of {self.min_gap} after the start token: it must be ≥ 2·k_max + min_gap + 1 = {need}.")
        bigram_matrix(self.vocab, self.sharpness, self.task_seed)  # validates sharpness

    @cached_property
    def transition(self) -> np.ndarray:
        """The bigram transition matrix P (vocab, vocab), rows summing to 1."""
        return bigram_matrix(self.vocab, self.sharpness, self.task_seed)

    def bigram_entropy(self) -> float:
        """Mean entropy (nats) of P's rows: the loss floor at bigram positions (rows
        weighted uniformly; a rough guide, the chain's visit frequencies differ)."""
        p = self.transition
        return float(-(p * np.log(p)).sum(axis=1).mean())

    def sample(self, n: int, seed: int | np.random.Generator = 0) -> TaskData:
        """Draw ``n`` sequences (vectorised over sequences, a loop over positions)."""
        n = _int(n, "n", 1)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(_int(seed, "seed", 0))
        V, L = self.vocab, self.seq_len
        lo, hi = self.span
        k = rng.integers(lo, hi + 1, size=n)
        a = 1 + np.floor(rng.random(n) * (L - 2 * k - self.min_gap)).astype(np.int64)  # a ∈ [1, L-2k-gap]
        b_lo = a + k + self.min_gap
        b = b_lo + np.floor(rng.random(n) * (L - k - b_lo + 1)).astype(np.int64)  # b ∈ [a+k+gap, L-k]
        span = rng.integers(0, V, size=(n, hi))
        u = rng.random((n, L))
        cdf = np.cumsum(self.transition, axis=1)
        tokens = np.empty((n, L), dtype=np.int64)
        labels = np.full((n, L), LABEL_CODES["bigram"], dtype=np.int64)
        source = np.full((n, L), -1, dtype=np.int64)
        rows = np.arange(n)
        tokens[:, 0] = np.minimum((u[:, 0, None] * V).astype(np.int64)[:, 0], V - 1)
        labels[:, 0] = LABEL_CODES["start"]
        for t in range(1, L):
            bigram = np.minimum((u[:, t, None] > cdf[tokens[:, t - 1]]).sum(axis=1), V - 1)
            first = (t >= a) & (t < a + k)
            second = (t >= b) & (t < b + k)
            idx = np.where(first, t - a, np.where(second, t - b, 0))
            tokens[:, t] = np.where(first | second, span[rows, idx], bigram)
            labels[first, t] = LABEL_CODES["first_occurrence"]
            labels[second & (t == b), t] = LABEL_CODES["repeat_start"]
            copy = second & (t > b)
            labels[copy, t] = LABEL_CODES["induction"]
            source[copy, t] = (a + (t - b))[copy]
        return TaskData(tokens, labels, source)
