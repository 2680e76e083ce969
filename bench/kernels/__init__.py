"""Kernel microbenchmarks (run by hand: python -m bench.kernels.<name>), not part of the bench run."""
