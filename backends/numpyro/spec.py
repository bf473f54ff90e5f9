"""Compile a GibbsPosterior to JAX arrays and a NumPyro model.

Everything data-dependent (data, weights, centre, frozen parameters, model constants, nβ,
γ) is passed as a traced argument, never closed over: with ``jit_model_args=True`` and the
persistent compilation cache, a second posterior with the same shapes reuses the compiled
program instead of recompiling (docs/architecture.md, "Choices measured").

Precision: every entry point of the backend runs under :func:`in_float64`, i.e. inside
``jax.enable_x64(True)`` for that call only; the process's ``jax_enable_x64`` is never
changed (issue 9). Floating data are float64, integer data (token ids) int64 (contract C2).
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer.util import potential_energy

from pplpatterning.spec.masks import MaskedParam, assemble
from pplpatterning.spec.posterior import (
    GibbsPosterior,
    localization_energy,
    per_sample_loss_delta,
    tempered_loss_energy,
)

from .precision import as_data, in_float64

__all__ = ["PosteriorArgs", "posterior_args", "as_data", "in_float64", "gibbs_model", "potential_fn", "potential_and_grad",
           "full_batch_loss", "full_params"]


class PosteriorArgs(NamedTuple):
    """The traced arguments of every compiled function (a pytree of JAX arrays)."""

    data: dict[str, jax.Array]
    weights: jax.Array          # effective weights c ρ_i, shape (n,)
    centre: dict[str, jax.Array]  # centre of the sampled coordinates (a masked parameter's: (k,))
    frozen: dict[str, jax.Array]  # frozen parameters at their centre values
    masked: dict[str, MaskedParam]  # partly sampled parameters: index map and frozen entries
    consts: dict[str, jax.Array]
    loss_at_centre: jax.Array   # l_i(w*), shape (n,)
    n_beta: jax.Array
    gamma: jax.Array


@in_float64
def posterior_args(post: GibbsPosterior, dtype: str = "float64") -> PosteriorArgs:
    """The traced arguments of ``post``: data and constants keep their kind (:func:`as_data`:
    integers int64, floats in ``dtype``); centre and frozen parameters in ``dtype`` (the
    run's precision: its positions, gradients and forward passes); weights, l_i(w*), nβ and γ
    float64, so that every loss difference is float64 (docs/math.md §2)."""
    as_ = partial(jnp.asarray, dtype=jnp.float64)
    as_param = partial(jnp.asarray, dtype=dtype)
    return PosteriorArgs(
        data={k: as_data(v, dtype) for k, v in post.data.items()},
        weights=as_(post.effective_weights),
        centre={k: as_param(v) for k, v in post.sampled_centre.items()},
        frozen={k: as_param(post.centre[k]) for k in post.frozen},
        masked={k: MaskedParam(jnp.asarray(m.index, dtype=jnp.int64), as_param(m.rest)) for k, m in post.masked.items()},
        consts={k: as_data(v, dtype) for k, v in post.model.consts.items()},
        loss_at_centre=as_(post.loss_at_centre_per_sample),
        n_beta=as_(post.n_beta),
        gamma=as_(post.gamma),
    )


def gibbs_model(args: PosteriorArgs, *, loss_fn, shapes: tuple[tuple[str, tuple[int, ...]], ...]):
    """NumPyro model of p(v) ∝ exp(-nβ L_n^ρ(u*, v) - γ/2 ||v - v*||²).

    Sample sites are improper-flat; the localizing prior and the tempered likelihood enter
    as two factors, so the potential is exactly U(v), with no normalising constant.
    """
    sampled = {
        name: numpyro.sample(name, dist.ImproperUniform(constraints.real, (), event_shape=shape))
        for name, shape in shapes
    }
    numpyro.factor("localizing_prior", -localization_energy(sampled, args.centre, args.gamma, jnp))
    numpyro.factor(
        "tempered_loss",
        -tempered_loss_energy(loss_fn, full_params(sampled, args), args.data, args.weights, args.consts, args.n_beta,
                              jnp),
    )


def full_params(sampled: dict[str, jax.Array], args: PosteriorArgs) -> dict[str, jax.Array]:
    """Every parameter from one chain's sampled coordinates (frozen ones and entries at w*)."""
    return assemble(sampled, args.frozen, args.masked, jnp)


def model_for(post: GibbsPosterior):
    """The NumPyro model function for ``post`` (static parts bound, data passed as args)."""
    shapes = tuple(post.sampled_shapes.items())
    return partial(gibbs_model, loss_fn=post.model.loss, shapes=shapes)


@in_float64
def potential_fn(post: GibbsPosterior):
    """U(v) as NumPyro computes it from the compiled model (for checks against the spec).
    The returned function runs in float64 too (and so does ``jax.grad`` of it, when called
    inside ``jax.enable_x64(True)``)."""
    model = model_for(post)
    args = posterior_args(post)

    @in_float64
    def U(params: dict[str, Any]) -> jax.Array:
        z = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in params.items()}
        return potential_energy(model, (args,), {}, z)

    return U


def full_batch_loss(loss_fn, sampled: dict[str, jax.Array], args: PosteriorArgs):
    """(L_n^ρ(w), L_n^ρ(w) - L_n^ρ(w*)) on the full data, the difference taken per sample."""
    return per_sample_loss_delta(loss_fn, full_params(sampled, args), args.data, args.weights, args.loss_at_centre, args.consts, jnp)


#: the jitted value-and-gradient of the last few posteriors: id -> (weak reference, function)
_VALUE_AND_GRAD: dict[int, tuple[weakref.ref, Any]] = {}
_VALUE_AND_GRAD_KEEP = 4


def _value_and_grad_fn(post: GibbsPosterior):
    """jit(value_and_grad(U)) of ``post``, built once per posterior: callers that evaluate
    many points (the MALA-acceptance check: 2 × 512 points) then pay one compilation, not
    one eager trace of the model per point (~30 ms each)."""
    hit = _VALUE_AND_GRAD.get(id(post))
    if hit is not None and hit[0]() is post:
        return hit[1]
    model = model_for(post)
    args = posterior_args(post)

    @jax.jit
    def value_and_grad(z, args):
        return jax.value_and_grad(lambda v: potential_energy(model, (args,), {}, v))(z)

    fn = partial(value_and_grad, args=args)
    while len(_VALUE_AND_GRAD) >= _VALUE_AND_GRAD_KEEP:
        _VALUE_AND_GRAD.pop(next(iter(_VALUE_AND_GRAD)))
    _VALUE_AND_GRAD[id(post)] = (weakref.ref(post), fn)
    return fn


@in_float64
def potential_and_grad(post: GibbsPosterior, params):
    """U(v) and ∇U(v) from the compiled NumPyro model, as float64 NumPy values."""
    z = {k: jnp.asarray(params[k], dtype=jnp.float64) for k in post.sampled}
    value, grad = _value_and_grad_fn(post)(z)
    return float(value), {k: np.asarray(v) for k, v in grad.items()}
