"""Users' own ``torch.nn.Module`` networks as pplpatterning Models (Pyro backend only).

    model = model_from_module(net, lambda out, batch: ((out - batch["y"]) ** 2).sum(-1) / 2)
    post = GibbsPosterior(model, data={"x": x, "y": y}, n_beta=..., gamma=...)
    trace = pplpatterning.sample(post, backend="pyro", sampler="sgld", step_size=1e-4)

The Model's loss calls ``torch.func.functional_call(module, params, (batch[input_key],))``
and then ``per_sample_loss(outputs, batch)``, which must return one loss per row, shape
``(batch,)`` (``nn.MSELoss(reduction="none")`` and friends, summed over any other dims).
Parameter names, shapes and the centre come from ``module.named_parameters()`` (the
centre is a detached float64 copy: the network as trained is w*).

What the adapter does with the module:

- it works on a private **float64 deep copy in eval mode** (dropout off, batch-norm on its
  running statistics), so the posterior is a deterministic function of the parameters and
  the user's module is never modified;
- parameters must be float32 or float64 and on the CPU (other dtypes/devices raise a
  ``ValueError`` naming the parameter and the fix, ``.double()`` / ``.cpu()``);
- ``per_sample_loss`` is checked to be per-sample on every call (a scalar from
  ``reduction="mean"`` raises a ``ValueError`` that says to use ``reduction="none"``), and
  on a few rows of ``example_data`` right away when it is given.

Why the loss is a callable object: :class:`~pplpatterning.Model` wants a module-level loss
function so that equal losses hash equal across instances; a network is not a module-level
function, so the loss here is a :class:`ModuleLoss` instance whose equality and hash are
its identity (two adapters of the same network are different losses). ``Model.consts``
cannot carry the network (it holds numeric arrays only), so the instance holds it.

The loss runs on torch (``xp`` = array-api-compat's torch, what the Pyro backend passes).
With ``xp = numpy`` — the core's float64 reference path, used by ``GibbsPosterior`` to
compute l_i(w*) and by ``post.loss``/``post.potential`` — it converts to torch and back.
Any other namespace (``jax.numpy`` from the NumPyro backend) raises a ``TypeError``:
this model only runs on the Pyro backend.

Data note: integer data (token ids) reach the network as ``torch.int64`` and floating data
as ``torch.float64``, on the torch and the numpy path alike; ``input_dtype`` casts the input
to another dtype before the forward pass if the network needs one.

Hugging Face causal LMs (:mod:`.hf`, ``model_from_hf``) reuse this machinery: the same
private copy (:func:`private_copy`) and a :class:`ModuleLoss` subclass with a per-token loss.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import array_api_compat.torch as xp_torch
import numpy as np
import torch

from pplpatterning.spec.model import Model

from .spec import DTYPE, as_data_tensor, as_tensor

__all__ = ["ModuleLoss", "model_from_module", "private_copy"]

_ALLOWED_DTYPES = (torch.float32, torch.float64)


def _namespace_kind(xp) -> str:
    if xp is xp_torch or xp is torch:
        return "torch"
    if xp is np or getattr(xp, "__name__", "") in ("numpy", "array_api_compat.numpy"):
        return "numpy"
    return getattr(xp, "__name__", type(xp).__name__)


class ModuleLoss:
    """Per-sample loss l_i(w) of a ``torch.nn.Module``: ``loss(params, batch, consts, xp)``.

    Equality and hash are identity-based (see the module docstring). ``module`` is the
    adapter's private float64 eval-mode copy. Subclasses change how the network is called
    (:meth:`_outputs`), what shape one batch's losses have (:meth:`_expected_shape`) and
    what is checked on the NumPy path (:meth:`_check_batch`); see :mod:`.hf`.
    """

    def __init__(self, module: torch.nn.Module, per_sample_loss: Callable, input_key: str,
                 input_dtype: torch.dtype | None, name: str):
        self.module = module
        self.per_sample_loss = per_sample_loss
        self.input_key = input_key
        self.input_dtype = input_dtype
        self.name = name

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, input_key={self.input_key!r})"

    def _input(self, batch: Mapping[str, Any]) -> Any:
        if self.input_key not in batch:
            raise KeyError(
                f"Model {self.name!r}: the data have no entry {self.input_key!r} to feed the network "
                f"(they have {sorted(batch)}); pass input_key=... to the adapter."
            )
        return batch[self.input_key]

    def _outputs(self, params: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> Any:
        """The network's outputs at ``params``: ``functional_call(module, params, (x,))``."""
        x = self._input(batch)
        if self.input_dtype is not None:
            x = x.to(self.input_dtype)
        return torch.func.functional_call(self.module, dict(params), (x,))

    def _expected_shape(self, batch: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
        return (self._input(batch).shape[0],)

    def _shape_hint(self, shape: tuple[int, ...]) -> str:
        if len(shape) == 0:
            return (" It returned a single number: use reduction='none' (e.g. nn.MSELoss(reduction='none')) "
                    "so that there is one loss per sample.")
        return (" Sum or average over the non-sample dimensions, e.g. `.sum(-1)`, so that there is one "
                "loss per sample.")

    def _check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
        """Checks of the data on the NumPy path (GibbsPosterior's l_i(w*), example_data)."""

    def _torch_loss(self, params: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = self._outputs(params, batch)
        losses = self.per_sample_loss(out, batch)
        expected = self._expected_shape(batch)
        shape = tuple(getattr(losses, "shape", ()))
        if shape != expected:
            raise ValueError(
                f"Model {self.name!r}: `per_sample_loss` must return one loss per sample, shape {expected} "
                f"for a batch of {expected[0]} rows; got shape {shape}.{self._shape_hint(shape)}"
            )
        return losses

    def __call__(self, params, batch, consts, xp):
        kind = _namespace_kind(xp)
        if kind == "torch":
            return self._torch_loss(params, batch)
        if kind == "numpy":  # the core's float64 reference path: through torch and back
            self._check_batch(batch)
            with torch.no_grad():
                out = self._torch_loss({k: as_tensor(v) for k, v in params.items()},
                                       {k: as_data_tensor(v) for k, v in batch.items()})
            return out.detach().numpy().astype(np.float64)
        raise TypeError(
            f"Model {self.name!r} wraps a torch.nn.Module and only runs on the pyro backend "
            f"(sample(..., backend='pyro')); it was called with array namespace {kind!r}. "
            "For the NumPyro backend write the loss as a JAX function."
        )


def _check_tensors(module: torch.nn.Module, name: str) -> None:
    params = list(module.named_parameters())
    if not params:
        raise ValueError(f"Module {name!r} has no parameters to sample.")
    for pname, p in params:
        if p.device.type != "cpu":
            raise ValueError(
                f"Parameter {pname!r} of {name!r} is on device {p.device}; the pyro backend samples on the CPU. "
                "Move the network first: `module.cpu()`."
            )
        if p.dtype not in _ALLOWED_DTYPES:
            raise ValueError(
                f"Parameter {pname!r} of {name!r} has dtype {p.dtype}; only float32 and float64 are supported "
                "(sampling runs in float64). Convert the network first: `module.double()` (or `.float()`)."
            )
    for bname, b in module.named_buffers():
        if b.device.type != "cpu":
            raise ValueError(
                f"Buffer {bname!r} of {name!r} is on device {b.device}; move the network first: `module.cpu()`."
            )


def model_from_module(
    module: torch.nn.Module,
    per_sample_loss: Callable[[Any, Mapping[str, torch.Tensor]], torch.Tensor],
    *,
    input_key: str = "x",
    name: str | None = None,
    input_dtype: torch.dtype | None = None,
    example_data: Mapping[str, Any] | None = None,
    description: str = "",
) -> Model:
    """A :class:`~pplpatterning.Model` whose loss is ``per_sample_loss(module(batch[input_key]), batch)``.

    Parameters
    ----------
    module
        The network; its ``named_parameters()`` are the model's parameters and their current
        values the centre w*. Float32/float64 on the CPU. Not modified (a float64 copy is used).
    per_sample_loss
        ``per_sample_loss(outputs, batch) -> Tensor[batch]``: one loss per row (a negative
        log-likelihood up to constants), e.g. ``nn.MSELoss(reduction="none")(out, batch["y"]).sum(-1)``.
    input_key
        The data entry fed to the network. Default ``"x"``.
    name
        Model name for traces and reports. Default: the module's class name.
    input_dtype
        Cast the input to this dtype before the forward pass (integer data arrive as
        ``torch.int64``, floating data as ``torch.float64``).
    example_data
        Optional data ``{name: array (n, ...)}``: the loss is checked on its first rows now
        (it is checked again on the full data when the GibbsPosterior is built).
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"`module` must be a torch.nn.Module, got {type(module).__name__}.")
    if not callable(per_sample_loss):
        raise TypeError(f"`per_sample_loss` must be callable (outputs, batch) -> Tensor[batch], "
                        f"got {type(per_sample_loss).__name__}.")
    if not isinstance(input_key, str):
        raise TypeError(f"`input_key` must be a string, got {type(input_key).__name__}.")
    name = str(name) if name is not None else type(module).__name__
    net, centre, shapes = private_copy(module, name)
    model = Model(
        name=name,
        loss=ModuleLoss(net, per_sample_loss, input_key, input_dtype, name),
        param_shapes=shapes,
        centre=centre,
        description=description or f"torch.nn.Module {name} with {sum(p.numel() for p in net.parameters())} "
                                   "parameters (pyro backend only)",
    )
    if example_data is not None:
        model.check_example(example_data)
    return model


def private_copy(module: torch.nn.Module, name: str
                 ) -> tuple[torch.nn.Module, dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
    """(a float64 eval-mode deep copy of ``module`` with gradients off, its centre, its shapes).

    The checks of :func:`model_from_module` (float32/float64 parameters on the CPU) come
    first. Parameters shared between submodules (tied weights) stay shared in the copy
    (``deepcopy`` keeps the identity, ``.to`` converts in place) and are listed once, under
    the first name ``named_parameters()`` gives them; ``functional_call`` then moves every
    use of a shared parameter together (its ``tie_weights=True`` default).
    """
    _check_tensors(module, name)
    net = copy.deepcopy(module).to(DTYPE).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    centre = {pname: p.detach().to(DTYPE).numpy().copy() for pname, p in net.named_parameters()}
    shapes = {pname: tuple(p.shape) for pname, p in net.named_parameters()}
    return net, centre, shapes
