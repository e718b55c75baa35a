"""Benchmarks for cas_store.

``python -m bench`` runs the suite against the peers (bench/README.md);
``python -m bench.eviction`` measures the cache's eviction policies.
"""
