"""Retrieval benchmarks (standalone scripts; see bench/README.md, "Retrieval")."""
