"""Weight-restricted and data-refined posteriors, and models split into components.

Refined LLCs (docs/math.md §2; Wang, Hoogland, van Wingerden, Furman & Murfet 2024,
"Differentiation and specialization of attention heads via the refined local learning
coefficient", arXiv 2410.02984):

- weight-restricted: split w = (u, v), sample v only with u frozen at u*:
  λ̂_V = nβ (E[L_n(u*, v)] - L_n(w*));
- data-refined: sample and evaluate with the loss of another data set q':
  λ̂(q') = nβ (E_{p_{q'}}[L_{q'}(w)] - L_{q'}(w*)), the centre w* unchanged;
- both at once: λ̂_V(q').

:func:`refine` builds that posterior; ``llc(sample(refine(post, ...)))`` is the estimate
(the Trace's ``loss_delta`` is then L_{q'}(u*, v) - L_{q'}(w*)). :func:`components`
builds one weight-restricted posterior per named component, the input of the
component-restricted susceptibility estimator
(:func:`pplpatterning.estimators.susceptibility.component_susceptibility`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pplpatterning.spec.posterior import GibbsPosterior

__all__ = ["refine", "components"]


def refine(posterior: GibbsPosterior, *, component: Sequence[str] | str | None = None,
           data: Mapping | None = None, n_beta: float | None = None) -> GibbsPosterior:
    """The weight-restricted (``component``) and/or data-refined (``data``) posterior.

    ``component``: what to sample (the rest stays at the centre): parameter names, or a mask
    mapping ``{name: boolean array}`` for part of a parameter (a head's slice of W_Q, ...;
    :mod:`pplpatterning.spec.masks`). ``data``: the
    data set q' that replaces the training data (data weights are dropped, since they
    belong to the old samples). The centre w* is kept, not re-derived from q'. nβ is kept
    (so refined and plain λ̂ share a temperature) unless ``n_beta`` is given.
    """
    if not isinstance(posterior, GibbsPosterior):
        raise TypeError(f"`posterior` must be a GibbsPosterior, got {type(posterior).__name__}.")
    if component is None and data is None and n_beta is None:
        raise ValueError("Nothing to refine: give `component` (weights to sample) and/or `data` (the data set q').")
    changes: dict = {"n_beta": float(posterior.n_beta) if n_beta is None else n_beta}
    if component is not None:
        if isinstance(component, str):
            changes["sampled"] = (component,)
        elif isinstance(component, Mapping):
            changes["sampled"] = dict(component)
        else:
            changes["sampled"] = tuple(component)
    if data is not None:
        changes.update(data=data, weights=None, normalize_weights=False)
    return posterior.with_(**changes)


def components(posterior: GibbsPosterior, split: Mapping[str, Sequence[str] | str | Mapping]
               ) -> dict[str, GibbsPosterior]:
    """``{component name: weight-restricted posterior}`` for a model split into components,
    e.g. ``components(post, {"layer1": "W1", "layer2": "W2"})``; a component may be a mask
    mapping (``{"layer 0 head 1": {"layer0.attn.W_Q": mask, ...}}``)."""
    if not isinstance(split, Mapping) or not split:
        raise TypeError("`split` must be a non-empty mapping {component name: parameter name(s)}.")
    return {str(name): refine(posterior, component=names) for name, names in split.items()}
