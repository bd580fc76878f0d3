"""Benchmarks of gcnjax: `python -m experiments.benchmarks` (see README.md here)."""
