"""Kernel microbenchmarks (`python -m bench.kernels.<name>`): one kernel against its peers in one run.

Not part of `python -m bench` or the tests; each writes a table and a JSON under bench/results/.
"""
