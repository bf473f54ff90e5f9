"""Drive a NumPyro MCMCKernel in compiled segments, keeping what completed.

The kernels (NumPyro's NUTS/HMC and ours) are ordinary ``MCMCKernel``s and run unchanged
under ``numpyro.infer.MCMC``; this driver calls the same ``init``/``sample`` with the same
per-chain keys (``random.split(PRNGKey(seed), num_chains)``, as ``MCMC.run`` does), so it
produces the same draws (tests/test_numpyro_driver.py). What it adds:

- one jitted ``lax.scan`` per segment length, compiled once and reused for every segment
  (``MCMC.run`` re-traces its loop body on every call: 65–150 ms per call measured here);
- a progress bar over segments, and an early stop that keeps the completed draws on
  Ctrl-C, on an error, or when every chain's parameters have become NaN;
- the chains sharded over the local devices (:func:`chain_placement`, issue 11 item 3);
- the compiled programs kept across runs (:func:`cached_programs`, issue 12): a second run of
  an update-rule sampler with the same settings, the same loss and the same array shapes
  (another centre w*, other data or weights, another seed: all traced arguments) reuses the
  programs of the first, traced and compiled once. :data:`PROGRAM_TRACES` counts the traces.

Devices: nothing is pinned. The programs run on JAX's default backend (a GPU when one is
present); only what leaves the loop (each segment's recorded series, the final
accumulator) is fetched with ``jax.device_get``.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from functools import partial
from operator import attrgetter
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from pplpatterning.sampling.evaluation import describe_exception

from .precision import in_float64
from .recording import scalar_series, to_numpy
from .rule_kernel import RuleKernel

__all__ = ["run_segmented", "segments", "Segments", "ChainPlacement", "chain_placement", "CHAIN_AXIS",
           "PROGRAM_TRACES", "cached_programs", "clear_program_cache"]

#: The name of the mesh axis the chains are sharded over.
CHAIN_AXIS = "chain"


def segments(num_draws: int, max_segments: int = 20) -> tuple[int, int]:
    """Split the draws into equal segments (same shapes: one compilation serves them all)."""
    k = max(d for d in range(1, max_segments + 1) if num_draws % d == 0)
    return k, num_draws // k


class ChainPlacement:
    """Where the chain axis of the sampler's state lives.

    With ``mesh=None`` (one device) every method is the identity, so the compiled programs
    are exactly those of an unsharded run. With a 1-D mesh over axis :data:`CHAIN_AXIS`, a
    leaf whose leading axis has the chains' length C is split over the mesh
    (``NamedSharding(mesh, PartitionSpec("chain"))``: chains c·C/m … (c+1)·C/m - 1 on device
    c); every other leaf (the step counter, a draw index) is replicated.
    """

    def __init__(self, num_chains: int, mesh: Mesh | None = None):
        self.num_chains = int(num_chains)
        self.mesh = mesh

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else int(self.mesh.devices.size)

    def shardings(self, tree) -> Any:
        """The sharding of every leaf of ``tree`` (arrays or tracers) on the mesh."""
        chain = NamedSharding(self.mesh, PartitionSpec(CHAIN_AXIS))
        whole = NamedSharding(self.mesh, PartitionSpec())
        C = self.num_chains
        return jax.tree.map(lambda x: chain if np.ndim(x) >= 1 and np.shape(x)[0] == C else whole, tree)

    def put(self, tree) -> Any:
        """``tree`` placed on the mesh, chain axes split (the identity on one device)."""
        return tree if self.mesh is None else jax.device_put(tree, self.shardings(tree))

    def replicate(self, tree) -> Any:
        """``tree`` (the data, the probe arrays) copied whole to every device of the mesh."""
        return tree if self.mesh is None else jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def constrain(self, tree) -> Any:
        """Inside a traced program: keep ``tree`` laid out as :meth:`put` lays it out."""
        return tree if self.mesh is None else jax.lax.with_sharding_constraint(tree, self.shardings(tree))


def chain_placement(num_chains: int, max_devices: int | None = None) -> ChainPlacement:
    """Shard ``num_chains`` chains over m of ``jax.local_devices()``.

    m is the largest divisor of C = ``num_chains`` that is at most the number of local
    devices (and at most ``max_devices`` when given): with 4 devices, 4 or 8 chains use 4
    devices, 6 chains use 3, 2 chains 2, 5 or 7 chains one. m = 1 (one device, one chain,
    a prime C above the device count, or ``max_devices=1`` to turn sharding off) gives the
    unsharded placement. The mesh holds the first m local devices, in JAX's order.
    """
    devices = jax.local_devices()
    limit = len(devices) if max_devices is None else max(1, min(len(devices), int(max_devices)))
    m = max(k for k in range(1, limit + 1) if num_chains % k == 0)
    if m == 1:
        return ChainPlacement(num_chains)
    return ChainPlacement(num_chains, Mesh(np.array(devices[:m]), (CHAIN_AXIS,)))


def _all_chains_nonfinite(z: dict, C: int) -> bool:
    """True when no chain has all-finite parameters (z: dict of (C, ...) or unbatched arrays)."""
    ok = [np.isfinite(np.asarray(v)).reshape((C, -1) if C > 1 else (1, -1)).all(axis=1) for v in z.values()]
    return not np.logical_and.reduce(ok).any()


def _collect(state, fields, keep_draws: bool):
    z = state.z if keep_draws else {}
    return z, {name: attrgetter(path)(state) for path, name in fields.items()}


class Segments(NamedTuple):
    """What :func:`run_segmented` returns: (chain, draw, ...) arrays of the kept draws'
    parameters (empty unless kept), the ``fields`` statistics and the recorder's scalar
    series; the per-sample accumulator (NumPy); why the run stopped early (or None)."""

    samples: dict
    extra: dict
    values: dict
    acc: Any
    reason: str | None


def _programs(kernel, thin: int, fields: dict, recorder, stride: int, place: ChainPlacement):
    """The jitted burn-in loop and segment scan; their carries keep ``place``'s layout. The
    draws' parameters leave the scan at every ``stride``-th kept draw (never when 0)."""

    def step(s, a):
        return place.constrain(kernel.sample(s, (a,), {}))

    @partial(jax.jit, static_argnums=2)
    def burn(state, args, n_steps):
        PROGRAM_TRACES["burn"] += 1  # Python runs here only while JAX traces the program
        return jax.lax.fori_loop(0, n_steps, lambda _, s: step(s, args), state)

    @partial(jax.jit, static_argnums=5)
    def draw(state, acc, j0, args, rargs, n_draws):  # args traced, never baked in as constants
        PROGRAM_TRACES["draw"] += 1

        def body(carry, _):
            s, acc, j = carry
            s = jax.lax.fori_loop(0, thin, lambda _, t: step(t, args), s)
            z, stats = _collect(s, fields, stride > 0)
            series = {}
            if recorder is not None:
                values = recorder.values(s.z, args, rargs, s)
                series = scalar_series(values)
                if recorder.per_sample:
                    acc = place.constrain(recorder.update(acc, j, values, rargs))
            return (s, acc, j + 1), (z, stats, series)

        if stride <= 1:
            (state, acc, _), out = jax.lax.scan(body, (state, acc, j0), None, length=n_draws)
            return state, acc, out

        def block(carry, _):  # `stride` kept draws; only the first one's parameters leave
            carry, (z, stats, series) = jax.lax.scan(body, carry, None, length=stride)
            return carry, (jax.tree.map(lambda x: x[0], z), stats, series)

        (state, acc, _), (z, stats, series) = jax.lax.scan(block, (state, acc, j0), None, length=n_draws // stride)
        flat = lambda x: x.reshape((n_draws,) + x.shape[2:])  # noqa: E731
        return state, acc, (z, jax.tree.map(flat, stats), jax.tree.map(flat, series))

    return burn, draw


#: How often the compiled sampling programs have been traced (each trace is one XLA
#: compilation, or one fetch from JAX's persistent compilation cache): ``"burn"`` counts the
#: burn-in loop, ``"draw"`` the segment scan (one per distinct segment length). A run whose
#: programs come from :func:`cached_programs` adds nothing. Tests reset it with ``.clear()``.
PROGRAM_TRACES: Counter = Counter()

#: The most recent programs kept by :func:`cached_programs` (least recently used dropped first).
PROGRAM_CACHE_SIZE = 8
_PROGRAM_CACHE: OrderedDict = OrderedDict()
_PROGRAM_LOCK = threading.Lock()  # runs in several threads (a Dask worker's) share the cache


def _avals(tree) -> tuple:
    """The pytree structure and every leaf's (shape, dtype): what a jitted program is specialised to."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x).__name__))) for x in leaves)


def _record_key(recorder) -> tuple | None:
    """What a :class:`~.recording.Recorder` bakes into the traced program, by value (the
    observables' and losses' functions by identity)."""
    if recorder is None:
        return None
    r = recorder.record
    rows = None if r.loss_rows is None else (np.shape(r.loss_rows), np.asarray(r.loss_rows).tobytes())
    return (recorder.loss_fn, recorder.token_loss_fn, recorder.num_chains, r.with_loss, r.observables, r.datasets,
            r.per_sample, r.thinning, r.num_draws, r.num_batches, r.num_rows, r.token_reduction, rows)


def program_key(kernel, thin: int, fields: dict, recorder, stride: int, place: ChainPlacement, arrays) -> tuple | None:
    """The key under which :func:`cached_programs` keeps a run's programs, or None when they
    must not be shared. Only :class:`~.rule_kernel.RuleKernel` programs are shared: everything
    they bake in is in the key (the rule, a frozen dataclass compared by value: step size,
    burn-in, options; the loss function by identity; the minibatch size; the recorder; the
    thinning, stride and chain placement) and everything else is a traced argument, whose
    shapes and dtypes (``arrays``: the initial state, accumulator and arguments) are in the key
    too. NumPyro's NUTS/HMC build their step functions per run and keep tracing per run."""
    if type(kernel) is not RuleKernel:
        return None
    key = (kernel.rule, kernel.loss_fn, kernel.batch_size, int(thin), tuple(fields.items()), _record_key(recorder),
           int(stride), place.num_chains, place.mesh, _avals(arrays))
    try:
        hash(key)
    except TypeError:  # an unhashable rule or observable: no sharing
        return None
    return key


def cached_programs(kernel, thin: int, fields: dict, recorder, stride: int, place: ChainPlacement, arrays):
    """The jitted (burn, draw) programs of a run: those of an earlier run with the same
    :func:`program_key` (the last :data:`PROGRAM_CACHE_SIZE` kept), else new ones."""
    key = program_key(kernel, thin, fields, recorder, stride, place, arrays)
    if key is None:
        return _programs(kernel, thin, fields, recorder, stride, place)
    with _PROGRAM_LOCK:
        programs = _PROGRAM_CACHE.get(key)
        if programs is None:
            programs = _PROGRAM_CACHE[key] = _programs(kernel, thin, fields, recorder, stride, place)
            while len(_PROGRAM_CACHE) > PROGRAM_CACHE_SIZE:
                _PROGRAM_CACHE.popitem(last=False)
        _PROGRAM_CACHE.move_to_end(key)
        return programs


def clear_program_cache() -> None:
    """Forget the programs kept by :func:`cached_programs` (the next run traces again)."""
    with _PROGRAM_LOCK:
        _PROGRAM_CACHE.clear()


@in_float64
def run_segmented(kernel, args, init, settings, fields: dict, *, recorder=None, rargs=None,
                  keep_draws: int = 1, chain_devices: int | None = None,
                  on_segment: Callable[[Any, Any], None] | None = None) -> Segments:
    """Burn-in, then the draws in segments, in float64.

    After each kept draw's steps, inside the same compiled scan, ``recorder``
    (.recording.Recorder, with its traced probe arrays ``rargs``) evaluates the draw's loss,
    observables and probe losses and folds its per-sample losses into the accumulator. With
    ``keep_draws=k`` the draws' parameters leave the loop at every k-th kept draw only (k
    divides ``num_draws``; 0 or False: never).

    The chains' state and accumulator are sharded over the local devices as
    :func:`chain_placement` (``num_chains``, ``chain_devices``) says (``chain_devices=1``: one
    device; None: as many as divide the chains); the data and probe arrays are replicated.
    ``on_segment(state, acc)``, when given, sees the device-side carry after the burn-in
    and after every segment (a debugging hook: nothing is fetched for it).
    """
    C = settings.num_chains
    place = chain_placement(C, chain_devices)
    key = jax.random.PRNGKey(settings.seed)
    keys = jax.random.split(key, C) if C > 1 else key
    state = place.put(kernel.init(keys, settings.num_burnin, init, (args,), {}))
    args, rargs = place.replicate((args, rargs))
    acc = place.put(recorder.init_acc() if recorder is not None and recorder.per_sample else None)
    stride = int(keep_draws)
    programs = cached_programs(kernel, settings.thinning, fields, recorder, stride, place, (state, acc, args, rargs))
    chunks, acc, reason = _loop(programs, state, acc, args, rargs, settings, on_segment or (lambda s, a: None),
                                max(stride, 1))

    def stack(parts):  # (draw, chain, ...) per segment -> (chain, draw, ...)
        arr = np.concatenate([np.asarray(p) for p in parts], axis=0)
        return np.moveaxis(arr, 0, 1) if C > 1 else arr[None]

    samples = {k: stack([c[0][k] for c in chunks]) for k in chunks[0][0]}
    extra = {k: stack([c[1][k] for c in chunks]) for k in chunks[0][1]}
    values = jax.tree.map(lambda *parts: np.moveaxis(np.concatenate(parts, axis=0), 0, 1),
                          *[c[2] for c in chunks])
    return Segments(samples, extra, values, to_numpy(acc), reason)


def _loop(programs, state, acc, args, rargs, settings, on_segment, stride: int = 1):
    """Run the burn-in and the segments (each a multiple of ``stride`` draws); return the
    fetched segments, the last accumulator and why the run stopped early (None when it
    completed)."""
    burn, draw = programs
    C, thin = settings.num_chains, settings.thinning
    n_seg, per_seg = segments(settings.num_draws // stride)
    per_seg *= stride
    bar = tqdm(total=settings.num_burnin + settings.num_draws * thin, disable=not settings.progress_bar,
               unit="step", desc=f"{settings.sampler} ({C} chains) burn-in")
    chunks = []
    reason = None
    try:
        if settings.num_burnin:
            state = burn(state, args, settings.num_burnin)
            on_segment(state, acc)
            if _all_chains_nonfinite(jax.device_get(state.z), C):
                raise FloatingPointError(
                    "Sampling stopped before any draw was kept: every chain's parameters became NaN or infinite "
                    "during burn-in (reduce the step size or localize more).")
        bar.update(settings.num_burnin)
        bar.set_description(f"{settings.sampler} ({C} chains) sampling")
        for k in range(n_seg):
            state, new_acc, out = draw(state, acc, np.int64(k * per_seg), args, rargs, per_seg)
            on_segment(state, new_acc)
            chunks.append(jax.device_get(out))
            acc = new_acc
            bar.update(per_seg * thin)
            if _all_chains_nonfinite({k: np.asarray(v) for k, v in state.z.items()}, C):  # the last draw
                reason = "every chain's parameters became NaN or infinite (reduce the step size or localize more)"
                break
    except KeyboardInterrupt:
        if not chunks:
            raise
        reason = "interrupted (KeyboardInterrupt)"
    except Exception as exc:  # keep the completed segments and say what happened
        if not chunks or isinstance(exc, FloatingPointError):
            raise
        reason = describe_exception(exc)  # one line: JAX wraps callback errors with their traceback
    finally:
        bar.close()
    return chunks, acc, reason
