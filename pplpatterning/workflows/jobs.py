"""Independent jobs that survive interruption and leave the machine: a content digest of
job inputs, a resumable on-disk store of per-job results (atomic writes, a settings check on
reopening), a payload sent once per worker process, and the fan-out of jobs to a Dask client or
any ``concurrent.futures`` executor with results handed back as they finish.

Used by :func:`~pplpatterning.workflows.trajectory.llc_trajectory`; nothing here knows what a
job computes, and nothing imports JAX or torch.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["digest", "SharedPayload", "load_shared", "JobStore", "write_atomic", "is_dask", "completed", "run_on"]


def digest(value: Any) -> str:
    """A SHA-256 of ``value`` (mappings by sorted key, arrays by dtype, shape and bytes)."""
    h = hashlib.sha256()

    def feed(v: Any) -> None:
        if isinstance(v, Mapping):
            h.update(b"{")
            for k in sorted(v, key=str):
                h.update(str(k).encode() + b":")
                feed(v[k])
            h.update(b"}")
        elif isinstance(v, (tuple, list)):
            h.update(b"(")
            for item in v:
                feed(item)
            h.update(b")")
        elif isinstance(v, (np.ndarray, np.generic)) or (hasattr(v, "__array__") and not isinstance(v, (str, bytes))):
            a = np.ascontiguousarray(np.asarray(v))
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(repr(v).encode())

    feed(value)
    return h.hexdigest()



class SharedPayload:
    """The jobs' shared template, sent to workers once per process: pickled with cloudpickle
    (so models with read-only mappings and losses defined in ``__main__`` travel), and
    unpickled once per process (a memo by content digest), so that every job on a worker
    sees the same model and observables objects and the NumPyro driver's compiled programs
    are reused from one job to the next."""

    def __init__(self, value: Any):
        self.value = value
        self._blob: tuple[str, bytes] | None = None

    def __reduce__(self):
        if self._blob is None:
            import cloudpickle  # a dependency of dask.distributed; needed only to send jobs away

            blob = cloudpickle.dumps(self.value)
            self._blob = (hashlib.sha256(blob).hexdigest(), blob)
        return (load_shared, self._blob)


_SHARED: OrderedDict = OrderedDict()
_SHARED_LOCK = threading.Lock()


def load_shared(key: str, blob: bytes) -> SharedPayload:
    """Unpickle a :class:`SharedPayload` once per process (the last 4 kept)."""
    with _SHARED_LOCK:
        payload = _SHARED.get(key)
        if payload is None:
            import cloudpickle

            payload = SharedPayload(cloudpickle.loads(blob))
            payload._blob = (key, blob)
            _SHARED[key] = payload
            while len(_SHARED) > 4:
                _SHARED.popitem(last=False)
        _SHARED.move_to_end(key)
        return payload


# ----------------------------------------------------------------------------- the store
class JobStore:
    """``store/trajectory.json`` (the run's settings) and ``store/jobs/step-XXXXXXXX.<component>.nc``
    (one job's result each, written to a temporary name and renamed). A job is anything with
    ``step``, ``component`` and ``identity`` (what a stored result must match)."""

    def __init__(self, root: str | os.PathLike, run: dict):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"`store`={str(self.root)!r} is a file; give a directory (created if missing).")
        self.run = run
        self.meta = self.root / "trajectory.json"

    def open(self) -> None:
        """Create the store, or check that it holds this run (a ValueError naming what differs)."""
        if self.meta.exists():
            saved = json.loads(self.meta.read_text())
            differ = sorted(k for k in set(saved) | set(self.run) if saved.get(k) != self.run.get(k))
            if differ:
                raise ValueError(f"The store {str(self.root)!r} holds a different run: its settings differ in "
                                 f"{differ} (stored {({k: saved.get(k) for k in differ})}, now "
                                 f"{({k: self.run.get(k) for k in differ})}). Use another `store=` directory, "
                                 "or delete this one to start over.")
            return
        if self.root.exists() and any(self.root.iterdir()):
            raise ValueError(f"`store`={str(self.root)!r} is a non-empty directory without trajectory.json; "
                             "give an empty or new directory.")
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.meta, json.dumps(self.run, indent=1, sort_keys=True).encode())
        (self.root / "jobs").mkdir(exist_ok=True)

    def path(self, job: Any) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", job.component)[:40]
        tag = hashlib.sha256(job.component.encode()).hexdigest()[:8]
        return self.root / "jobs" / f"step-{job.step:08d}.{slug}-{tag}.nc"

    def load(self, job: Any) -> xr.Dataset | None:
        """The stored result of ``job`` (None when absent); a ValueError if it is another job's."""
        path = self.path(job)
        if not path.exists():
            return None
        ds = xr.load_dataset(path, engine="netcdf4")
        saved = json.loads(ds.attrs.get("job", "{}"))
        if saved != json.loads(json.dumps(job.identity)):
            differ = sorted(k for k in set(saved) | set(job.identity) if saved.get(k) != job.identity.get(k))
            raise ValueError(f"The store {str(self.root)!r} holds a different run: its result for checkpoint step "
                             f"{job.step}, component {job.component!r} differs in {differ} (the checkpoint's "
                             "parameters, the component's definition or the seed). Use another `store=` directory, "
                             f"or delete {str(path)!r} to recompute that job.")
        return ds

    def save(self, job: Any, result: xr.Dataset) -> None:
        path = self.path(job)
        tmp = path.with_name(path.name + ".tmp")
        result.to_netcdf(tmp, engine="netcdf4")
        os.replace(tmp, path)


def write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- running
def is_dask(client: Any) -> bool:
    return type(client).__module__.split(".")[0] == "distributed"


def completed(client: Any, futures: list):
    """The futures as they finish: distributed.as_completed for Dask, concurrent.futures'
    for its executors, else in submission order."""
    if is_dask(client):
        from distributed import as_completed

        return as_completed(futures)
    if all(isinstance(f, concurrent.futures.Future) for f in futures):
        return concurrent.futures.as_completed(futures)
    return iter(futures)


def run_on(client: Any, fn: Callable, shared: Any, todo: list, finish: Callable) -> None:
    """Submit ``fn(shared, job)`` for every job to ``client`` (``shared`` sent once per worker
    as a :class:`SharedPayload`) and hand each result to ``finish(job, result)`` as it
    completes; on any failure or interrupt, cancel what is still pending and re-raise."""
    payload: Any = SharedPayload(shared)
    dask = is_dask(client)
    if dask:  # one copy of the template per worker, not one per job
        payload = client.scatter(payload, broadcast=True, hash=False)
    futures = {}
    try:
        for job in todo:
            fut = client.submit(fn, payload, job, pure=False) if dask else client.submit(fn, payload, job)
            futures[fut] = job
        for fut in completed(client, list(futures)):
            finish(futures[fut], fut.result())
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
