"""Benchmarks for cas_store (run with ``python -m bench.<name>``)."""
