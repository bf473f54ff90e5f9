"""``sample()``: validate, compile on a backend, run, evaluate the kept draws, build the Trace.

:mod:`.core` is the one skeleton every backend runs under; :mod:`.evaluation` the record
of the after-sampling evaluation of the draws and its failure reason.
"""

from pplpatterning.sampling.core import BACKENDS, SampleMemoryError, check_at_centre, estimate_memory, sample

__all__ = ["sample", "BACKENDS", "SampleMemoryError", "estimate_memory", "check_at_centre"]
