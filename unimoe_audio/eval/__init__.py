"""Evaluation: offline judges, error rates, spectral distances."""
