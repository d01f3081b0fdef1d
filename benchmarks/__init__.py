"""Shroud benchmarks: run with `make bench`."""
