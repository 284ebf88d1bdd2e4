"""Benchmarks: `make bench` runs every script here and writes bench/RESULTS.md (see bench/run.py)."""
