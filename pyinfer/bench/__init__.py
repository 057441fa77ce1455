"""Benchmarks: every kernel beside its dense baseline, at the same shape, in one run."""
