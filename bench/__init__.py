"""Benchmarks behind `make bench`; `python -m bench` runs them all and writes one report."""
