"""Pyro (PyTorch) backend: compiles a GibbsPosterior to torch, returns the common Trace.

- NUTS and HMC run Pyro's own kernels (``pyro.infer.mcmc``) on a Pyro model of the
  posterior (improper-flat sites plus ``pyro.factor`` terms; :func:`.spec.gibbs_model`).
- MALA, SGLD, RMSProp-SGLD and SGNHT are the update rules of pplpatterning.samplers
  (written once for both backends), fed the potential straight from the spec in torch for
  all chains as one vectorised batch (``torch.func.vmap``; .chains), with no Pyro tracing
  per step.

Everything runs in float64 (``torch.float64`` tensors; integer data stay ``torch.int64``;
torch's global default dtype is not touched). Model losses and observables receive ``xp = array_api_compat.torch``.
Users' own ``torch.nn.Module`` networks come in through :func:`model_from_module`, Hugging Face
causal LMs through :func:`model_from_hf` (components: :func:`hf_components`).
"""

from __future__ import annotations

from .run import BACKEND, evaluate_at_centre, sample_chains
from .spec import ChainEnergy, TorchPosterior, gibbs_model, model_potential_fn, potential_and_grad, torch_posterior
from .hf import hf_components, model_from_hf
from .user import model_from_module

__all__ = [
    "BACKEND", "sample_chains", "potential_and_grad", "evaluate_at_centre", "model_from_module",
    "model_from_hf", "hf_components",
    "torch_posterior", "TorchPosterior", "gibbs_model", "model_potential_fn", "ChainEnergy",
]

