"""Benchmarks SOMVAD publishes (not tests; see README)."""
