"""Benchmarks of ittc: speed is measured here and reported, never asserted in tests.

``python -m benchmarks.micro`` times the scheme's operations one by one (see
``benchmarks/README.md``).
"""
