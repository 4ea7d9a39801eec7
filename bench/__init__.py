"""Benchmarks of resume-gateway, run as ``python -m bench`` (``make bench``).

Benchmarks are not tests: the machine is small, shared and noisy, so every figure is printed
next to a baseline measured in the same run, and the ratio is what carries meaning. Every server
under test runs in its own subprocess on a loopback port picked here; the load generator runs in
the bench process.
"""
