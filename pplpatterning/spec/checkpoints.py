"""Checkpoints of a training run: the centres w* of an LLC trajectory.

A checkpoint is a training step and the network's parameters ``{name: array}`` at that
step, named as the :class:`~pplpatterning.Model`'s ``param_shapes``. On disk a run is a
directory of ``step-00001000.npz`` files (one per checkpoint, the arrays stored under
their parameter names, float64), which :func:`save_checkpoint` writes and
:func:`load_checkpoints` reads back in step order. The format needs only NumPy, so a
run trained with torch, JAX or anything else can be read on a machine with neither.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoints", "checkpoint_path"]

_PATTERN = re.compile(r"^step-(\d+)\.npz$")


@dataclass(frozen=True)
class Checkpoint:
    """The parameters of a network at one training step (read-only float64 arrays)."""

    step: int
    params: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        if isinstance(self.step, bool) or not isinstance(self.step, (int, np.integer)) or int(self.step) < 0:
            raise ValueError(f"`step` must be a non-negative integer (the training step), got {self.step!r}.")
        if not isinstance(self.params, Mapping) or not self.params:
            raise TypeError("`params` must be a non-empty mapping {parameter name: array}.")
        frozen = {}
        for name, value in self.params.items():
            arr = np.array(value, dtype=np.float64)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"Checkpoint at step {int(self.step)}: parameter {name!r} is not finite.")
            arr.setflags(write=False)
            frozen[str(name)] = arr
        object.__setattr__(self, "step", int(self.step))
        object.__setattr__(self, "params", MappingProxyType(frozen))


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of ``step`` lives in a run directory."""
    return Path(directory) / f"step-{int(step):08d}.npz"


def save_checkpoint(directory: str | os.PathLike, step: int, params: Mapping[str, Any]) -> Path:
    """Write ``params`` at ``step`` to ``directory`` (created if missing); returns the file.
    Written to a temporary name and renamed, so a crash never leaves half a checkpoint."""
    ckpt = Checkpoint(step, params)
    path = checkpoint_path(directory, ckpt.step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **dict(ckpt.params))
    os.replace(tmp, path)
    return path


def load_checkpoints(directory: str | os.PathLike) -> list[Checkpoint]:
    """Every checkpoint saved in ``directory``, in increasing step order."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"No checkpoint directory {str(root)!r}; train first (it should hold step-*.npz).")
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _PATTERN.match(p.name)))
    if not found:
        raise FileNotFoundError(f"{str(root)!r} holds no checkpoints (files named step-00001000.npz).")
    out = []
    for step, path in found:
        with np.load(path) as arrays:
            out.append(Checkpoint(step, {k: arrays[k] for k in arrays.files}))
    return out
