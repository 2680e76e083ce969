"""AstrAI benchmark suite: AstrAI against its peers and the machine's physical limits.

Run with `python -m bench [--quick] [--only SECTIONS] [--skip-peers]` (or `hatch run dev:bench`).
Never part of the test command; every figure in BENCHMARKS.md comes from one run's JSON.
"""
