"""NumPyro MCMCKernels for the samplers NumPyro lacks: MALA, SGLD, RMSProp-SGLD, SGNHT.

Each kernel runs under ``numpyro.infer.MCMC``; chains are vectorised by the kernel itself
(as NumPyro's HMC does) when ``MCMC(..., chain_method="vectorized")`` hands it a batch of
keys. The potential is the spec's U(v) (pplpatterning.spec.posterior), on minibatches for the
stochastic-gradient kernels.
"""

from .mala import MALA
from .rmsprop_sgld import RMSPropSGLD
from .sgld import SGLD
from .sgnht import SGNHT

__all__ = ["MALA", "SGLD", "RMSPropSGLD", "SGNHT", "KERNELS"]

KERNELS = {"mala": MALA, "sgld": SGLD, "rmsprop_sgld": RMSPropSGLD, "sgnht": SGNHT}
