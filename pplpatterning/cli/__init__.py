"""The ``pplpatterning`` command line; the entry point is :func:`pplpatterning.cli.main.main`
(kept light: importing it loads no array library)."""
