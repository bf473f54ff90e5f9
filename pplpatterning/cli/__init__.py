"""The ``pplpatterning`` command line; the entry point is :func:`pplpatterning.cli.main.main`.

One module per command (llc, compare, models, chi, pattern, calibrate, validate), the
arguments they share in :mod:`~pplpatterning.cli.arguments`, the run-health report in
:mod:`~pplpatterning.cli.output`; :mod:`~pplpatterning.cli.main` builds the parser and
dispatches. Kept light: importing it and building the parser load numpy at most, none of
xarray, pandas, scipy, matplotlib, JAX or torch.
"""
