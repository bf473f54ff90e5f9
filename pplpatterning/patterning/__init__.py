"""Patterning: the data re-weighting that moves chosen observables by chosen amounts
(docs/math.md §6), planned from a Trace and verified by sampling again."""
