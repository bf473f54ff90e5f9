"""Workflows that call ``sample()`` again: the cross-framework comparison and the step-size
calibration."""
