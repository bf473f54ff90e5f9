"""Workflows that call ``sample()`` again: the cross-framework comparison (``compare``) and the
step-size calibration (``calibrate``), with the MALA-acceptance check it judges ε by (``acceptance``)."""
