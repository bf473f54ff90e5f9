"""Patterning: the data re-weighting that moves chosen observables by chosen amounts
(docs/math.md §4), planned from a Trace and verified by sampling again.

Modules, in the order the data flows through them:

- :mod:`~pplpatterning.patterning.solver`: the linear algebra of the inverse problem
  (SVD, minimum-norm / ridge step, the bounded non-negative solve);
- :mod:`~pplpatterning.patterning.plan`: :class:`PatternPlan`, the result, how it prints
  and how it re-weights a posterior;
- :mod:`~pplpatterning.patterning.pattern`: :func:`pattern`, from χ and a target to a plan;
- :mod:`~pplpatterning.patterning.verify`: :func:`verify`, sample again with the new
  weights and compare realized with predicted changes.

Nothing is imported here, so that the submodules ``pattern`` and ``verify`` are not
shadowed by the functions of the same names; import from the submodules (or from
``pplpatterning``).
"""
