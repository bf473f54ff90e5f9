"""The built-in small transformer and its synthetic induction task (issue 12).

- :mod:`.architecture`: :class:`TransformerConfig`, the one array-API definition of the
  forward pass and the per-token loss, :func:`init_params`, :func:`transformer_model`
  (a :class:`pplpatterning.Model` with ``tokens="mean"``);
- :mod:`.task`: :class:`InductionTask` (bigram background + repeated random spans, with
  per-position labels);
- :mod:`.components`: heads / MLPs / embeddings as boolean-mask components, and
  previous-token / induction head scores;
- :mod:`.train`: torch Adam training with checkpoints (``python -m
  pplpatterning.models.transformer.train --out DIR``);
- :mod:`.torch_module`: a ``torch.nn.Module`` running the same forward (for devinterp and
  ``model_from_module``).

Not in ``pplpatterning.models.MODELS``: the zoo's registry is for models with a known λ,
and the zoo-wide tests sample every registered model. Import from here instead. Nothing
here imports torch or JAX at import time.
"""

from .architecture import (
    TransformerConfig, attention_patterns, default_task, forward, init_params, logits, param_shapes, token_nll,
    transformer_consts, transformer_model, transformer_token_loss,
)
from .components import copy_sources, head_name, head_scores, transformer_components
from .task import LABEL_CODES, LABELS, InductionTask, TaskData, bigram_matrix

__all__ = [
    "TransformerConfig", "param_shapes", "transformer_consts", "init_params", "forward", "logits",
    "attention_patterns", "token_nll", "transformer_token_loss", "transformer_model", "default_task",
    "transformer_components", "head_name", "head_scores", "copy_sources",
    "InductionTask", "TaskData", "LABELS", "LABEL_CODES", "bigram_matrix",
]
