"""Evaluation: multi-label metrics with bootstrap confidence intervals, linear probes, report tables."""
