"""Backend-neutral sampler settings: one table of samplers, their options and defaults.

Both backends read :data:`SAMPLERS`; :class:`SamplerSettings` validates everything before
any compilation or sampling starts.

Exact samplers (full-batch, Metropolis-corrected or NUTS): ``nuts``, ``hmc``, ``mala``.
Stochastic-gradient samplers (minibatch, no correction): ``sgld``, ``rmsprop_sgld``, ``sgnht``.

SGLD step (docs/math.md §8, Welling & Teh 2011):
    w ← w - (ε/2) ∇U_batch(w) + √ε ξ,   ξ ~ N(0, I),
    ∇U_batch = nβ ∇L_batch^ρ(w) + γ (w - w*).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

__all__ = [
    "DTYPES", "FORWARD_DTYPES", "DEFAULT_EVAL_SIZE",
    "SAMPLERS", "EXACT_SAMPLERS", "SG_SAMPLERS", "SamplerSettings", "LOSS_ESTIMATES", "OPTION_CHECKS",
    "SEED_LIMIT", "validate_options", "add_sampler", "remove_sampler",
]

EXACT_SAMPLERS = ("nuts", "hmc", "mala")
SG_SAMPLERS = ("sgld", "rmsprop_sgld", "sgnht")

# Per-sampler options and their defaults (beyond the common ones in SamplerSettings);
# :func:`pplpatterning.samplers.registry.register_sampler` adds rows.
_TABLE: dict[str, Mapping[str, Any]] = {
    # NUTS/HMC adapt the step size during burn-in (dual averaging) toward target_accept.
    "nuts": MappingProxyType({"target_accept": 0.8, "max_tree_depth": 10}),
    # HMC jitters ε by U(1 - j, 1 + j) after burn-in against resonance (Neal 2011 §5.4.2.2).
    "hmc": MappingProxyType({"target_accept": 0.8, "num_steps": 10, "step_jitter": 0.2}),
    # MALA adapts ε during burn-in by dual averaging toward target_accept, then freezes it.
    "mala": MappingProxyType({"target_accept": 0.574}),
    "sgld": MappingProxyType({}),
    # RMSProp-preconditioned SGLD (Li et al. 2016; Hitchcock & Hoogland 2025):
    # V ← α V + (1-α) g², G = 1/(√V + eps), w ← w - (ε/2) G g + √(ε G) ξ.
    "rmsprop_sgld": MappingProxyType({"alpha": 0.99, "eps": 1e-5, "adapt": "burnin"}),
    # SGNHT (Ding et al. 2014): p ← p - ξ p ε - ε∇U + √(2Aε) η, w ← w + ε p,
    # ξ ← ξ + ε (pᵀp/d - 1); A = diffusion.
    "sgnht": MappingProxyType({"diffusion": 0.01}),
}
SAMPLERS: Mapping[str, Mapping[str, Any]] = MappingProxyType(_TABLE)
_STOCHASTIC_GRADIENT = set(SG_SAMPLERS)

LOSS_ESTIMATES = ("full", "minibatch", "subset")
#: Rows of the fixed evaluation subset when ``loss_estimate="subset"`` and no ``eval_size`` is given.
DEFAULT_EVAL_SIZE = 1024
#: The precisions a run can compute in (``SamplerSettings.dtype``).
DTYPES = ("float64", "float32")
#: The mixed-precision forward passes a run can ask for (``SamplerSettings.forward_dtype``;
#: :mod:`pplpatterning.spec.forward`).
FORWARD_DTYPES = ("bfloat16",)


def add_sampler(name: str, options: Mapping[str, Any], *, stochastic_gradient: bool) -> None:
    """Add a row to :data:`SAMPLERS` (through :func:`~pplpatterning.samplers.registry.register_sampler`)."""
    _TABLE[name] = MappingProxyType(dict(options))
    if stochastic_gradient:
        _STOCHASTIC_GRADIENT.add(name)


def remove_sampler(name: str) -> None:
    """Remove a row added by :func:`add_sampler`."""
    _TABLE.pop(name, None)
    _STOCHASTIC_GRADIENT.discard(name)

#: Seeds are integers in [0, SEED_LIMIT): both backends' generators take 64-bit seeds.
SEED_LIMIT = 2**63


def _real(desc: str, ok) -> tuple[str, Any]:
    """A check for a finite real number (not bool) with ``ok(x)`` True; returns (desc, check)."""
    def check(v: Any) -> float | None:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return None
        try:
            x = float(v)
        except OverflowError:  # an int beyond float64
            return None
        return x if math.isfinite(x) and ok(x) else None
    return desc, check


def _integer(lo: int, hi: int | None) -> tuple[str, Any]:
    """A check for an integer (not bool) in [lo, hi] (hi None: no upper bound)."""
    desc = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer ≥ {lo}"

    def check(v: Any) -> int | None:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            return None
        return int(v) if lo <= int(v) and (hi is None or int(v) <= hi) else None
    return desc, check


def _choice(*values: str) -> tuple[str, Any]:
    def check(v: Any) -> str | None:
        return v if isinstance(v, str) and v in values else None
    return "one of " + ", ".join(repr(x) for x in values), check


# One check per option name (an option means the same in every sampler that has it):
# (what it must be, check(value) -> normalised value or None when invalid).
OPTION_CHECKS: Mapping[str, tuple[str, Any]] = MappingProxyType({
    "target_accept": _real("a number in (0, 1), e.g. 0.8", lambda x: 0 < x < 1),
    "max_tree_depth": _integer(1, 30),
    "num_steps": _integer(1, None),
    "step_jitter": _real("a number in [0, 1) (0 = no jitter)", lambda x: 0 <= x < 1),
    "alpha": _real("a number in (0, 1), e.g. 0.99", lambda x: 0 < x < 1),
    "eps": _real("a finite number > 0, e.g. 1e-5", lambda x: x > 0),
    "adapt": _choice("burnin", "always"),
    # > 0 (stricter than C7's ≥ 0): both backends' SGNHT kernels need injected noise A > 0.
    "diffusion": _real("a finite number > 0 (the injected noise A), e.g. 0.01", lambda x: x > 0),
})


def validate_options(sampler: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Each option of ``sampler`` checked against :data:`OPTION_CHECKS`; the normalised values
    (int/float/str). Raises ValueError naming the option, its allowed values and the default."""
    out = {}
    for name, value in options.items():
        desc, check = OPTION_CHECKS[name]
        got = check(value)
        if got is None:
            raise ValueError(
                f"`{name}` (option of sampler {sampler!r}) must be {desc}; got {value!r}. "
                f"Its default is {SAMPLERS[sampler][name]!r}."
            )
        out[name] = got
    return out


@dataclass(frozen=True)
class SamplerSettings:
    """Validated sampler settings, shared by every backend.

    Parameters
    ----------
    sampler
        One of :data:`SAMPLERS`.
    num_chains, num_draws, num_burnin
        Chains, kept draws per chain (after thinning) and burn-in steps. Burn-in draws are
        never part of any estimate.
    step_size
        ε. For NUTS/HMC/MALA the initial value before adaptation (default: backend's);
        for SG samplers the fixed step (required to be sensible; see ``calibrate``).
    batch_size
        Minibatch size for SG samplers (default min(n, 256)); ignored by exact samplers.
    thinning
        Keep every ``thinning``-th step.
    loss_estimate
        ``"full"``: L_n(w) evaluated on the full data at every kept draw (exact);
        ``"minibatch"``: the SG sampler's own minibatch loss at each kept step (cheap,
        unbiased, noisier); ``"subset"``: L on one fixed random subset of ``eval_size`` rows,
        drawn once from ``seed`` (the same rows at every draw, so the differences stay
        smooth; the cost of a kept draw no longer grows with n). Exact samplers use
        ``"full"`` or ``"subset"``; probes need ``"full"``.
    eval_size
        Rows of the evaluation subset (``loss_estimate="subset"``; default min(n, 1024)).
    device
        Where the run computes: None (default: the framework's default device: JAX's first
        device, torch's CPU), or a device string: ``"cpu"``, ``"gpu"``/``"cuda"`` (the
        first one), ``"cuda:1"``. Checked before anything is compiled; the draws,
        statistics and accumulators stay on it until the run ends.
    chain_devices
        NumPyro: shard the chains over at most this many local devices (JAX's
        ``jax.local_devices()``; the largest count that divides ``num_chains``). Default
        None: as many as there are; 1: one device. Draws agree with one device's to
        floating-point reproduction (XLA compiles the per-device program differently).
    seed
        Integer seed in [0, 2**63); the same seed reproduces the same trace exactly.
    dtype
        Precision of the parameters, the data and the forward and backward passes:
        ``"float64"`` (default; the toy zoo's small loss differences) or ``"float32"``
        (networks: ~2× less memory and faster passes). Whatever the forward precision, the
        per-sample differences l_i(w) - l_i(w*), the loss series and every accumulator are
        float64 (docs/math.md §2). ``"float32"`` applies to the update-rule samplers (MALA and
        the SG samplers); NUTS/HMC run in float64.
    forward_dtype
        ``None`` (default: the loss computes in ``dtype``) or ``"bfloat16"``: mixed
        precision, the model's loss (the network's forward and backward passes) in bfloat16
        while the positions, updates and noise stay in ``dtype="float32"`` (required) and the
        loss differences in float64 (:mod:`pplpatterning.spec.forward`). For accelerators
        with bfloat16 units; on a CPU it is usually slower than float32.
    options
        Sampler-specific options (see :data:`SAMPLERS`).
    """

    sampler: str = "nuts"
    num_chains: int = 4
    num_draws: int = 1000
    num_burnin: int = 500
    step_size: float | None = None
    batch_size: int | None = None
    thinning: int = 1
    loss_estimate: str = "full"
    seed: int = 0
    progress_bar: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    dtype: str = "float64"
    eval_size: int | None = None
    chain_devices: int | None = None
    device: str | None = None
    forward_dtype: str | None = None

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {list(SAMPLERS)}, got {self.sampler!r}.")
        for name in ("num_chains", "num_draws", "thinning"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}.")
        if isinstance(self.num_burnin, bool) or not isinstance(self.num_burnin, int) or self.num_burnin < 0:
            raise ValueError(f"`num_burnin` must be a non-negative integer, got {self.num_burnin!r}.")
        if self.step_size is not None:
            if not isinstance(self.step_size, (int, float)) or not math.isfinite(self.step_size) or self.step_size <= 0:
                raise ValueError(f"`step_size` must be a finite positive number, got {self.step_size!r}.")
            object.__setattr__(self, "step_size", float(self.step_size))
        elif self.is_stochastic_gradient:
            object.__setattr__(self, "step_size", 1e-4)
        if self.batch_size is not None:
            if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
                raise ValueError(f"`batch_size` must be a positive integer, got {self.batch_size!r}.")
        if self.loss_estimate not in LOSS_ESTIMATES:
            raise ValueError(f"`loss_estimate` must be one of {LOSS_ESTIMATES}, got {self.loss_estimate!r}.")
        if self.eval_size is not None:
            if self.loss_estimate != "subset":
                raise ValueError("`eval_size` applies to loss_estimate='subset'; drop it or set loss_estimate='subset'.")
            if isinstance(self.eval_size, bool) or not isinstance(self.eval_size, int) or self.eval_size < 1:
                raise ValueError(f"`eval_size` must be a positive integer, got {self.eval_size!r}.")
        if self.chain_devices is not None and (isinstance(self.chain_devices, bool)
                                               or not isinstance(self.chain_devices, int) or self.chain_devices < 1):
            raise ValueError(f"`chain_devices` must be None or a positive integer, got {self.chain_devices!r}.")
        if self.device is not None and (not isinstance(self.device, str) or not self.device):
            raise ValueError(f"`device` must be None or a device string such as 'cpu' or 'cuda', got {self.device!r}.")
        if self.loss_estimate == "minibatch" and not self.is_stochastic_gradient:
            raise ValueError(
                f"`loss_estimate='minibatch'` applies to SG samplers only; {self.sampler!r} uses the full loss."
            )
        if (isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)
                or not 0 <= int(self.seed) < SEED_LIMIT):
            raise ValueError(f"`seed` must be an integer in [0, 2**63), got {self.seed!r}.")
        object.__setattr__(self, "seed", int(self.seed))
        if self.dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {DTYPES}, got {self.dtype!r}.")
        if self.dtype != "float64" and self.sampler in ("nuts", "hmc"):
            raise ValueError(f"`dtype={self.dtype!r}` applies to the update-rule samplers (MALA and the SG samplers); "
                             f"{self.sampler!r} runs in float64: drop `dtype` or use sampler='mala'.")
        if self.forward_dtype is not None:
            if self.forward_dtype not in FORWARD_DTYPES:
                raise ValueError(f"`forward_dtype` must be None or one of {FORWARD_DTYPES}, got {self.forward_dtype!r}.")
            if self.dtype != "float32":
                raise ValueError(f"`forward_dtype={self.forward_dtype!r}` runs the loss in {self.forward_dtype} around "
                                 f"float32 positions; pass dtype='float32' as well (got dtype={self.dtype!r}).")
        allowed = SAMPLERS[self.sampler]
        unknown = set(self.options) - set(allowed)
        if unknown:
            raise ValueError(
                f"Unknown option(s) {sorted(unknown)} for sampler {self.sampler!r}; "
                f"it accepts {sorted(allowed) or 'none'}."
            )
        merged = dict(allowed)
        merged.update(self.options)
        object.__setattr__(self, "options", MappingProxyType(validate_options(self.sampler, merged)))

    @property
    def uses_minibatch_loss(self) -> bool:
        """True when the recorded loss is the SG sampler's own minibatch loss
        (``loss_estimate="minibatch"``; refused for exact samplers above)."""
        return self.loss_estimate == "minibatch"

    @property
    def is_stochastic_gradient(self) -> bool:
        return self.sampler in _STOCHASTIC_GRADIENT

    def resolved_batch_size(self, n: int) -> int:
        """The minibatch size actually used on n samples (full batch for exact samplers)."""
        if not self.is_stochastic_gradient:
            return n
        b = self.batch_size if self.batch_size is not None else min(n, 256)
        if b > n:
            raise ValueError(f"`batch_size`={b} exceeds the number of samples n={n}; use batch_size ≤ {n}.")
        return b

    def resolved_eval_size(self, n: int) -> int | None:
        """Rows of the evaluation subset on n samples (None unless ``loss_estimate="subset"``)."""
        if self.loss_estimate != "subset":
            return None
        m = self.eval_size if self.eval_size is not None else min(n, DEFAULT_EVAL_SIZE)
        if m > n:
            raise ValueError(f"`eval_size`={m} exceeds the number of samples n={n}; use eval_size ≤ {n}.")
        return m

    def describe(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "num_chains": self.num_chains,
            "num_draws": self.num_draws,
            "num_burnin": self.num_burnin,
            "step_size": self.step_size,
            "batch_size": self.batch_size,
            "thinning": self.thinning,
            "loss_estimate": self.loss_estimate,
            "eval_size": self.eval_size,
            "forward_dtype": self.forward_dtype,
            "seed": self.seed,
            "options": dict(self.options),
        }
