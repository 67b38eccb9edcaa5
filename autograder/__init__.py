"""Checks, diagnosis, benchmarks and nbgrader grading for the FlashAttention-2 Triton course.

Importing this package does not import triton: `autograder.device.configure()` must be
able to set TRITON_INTERPRET before the first kernel is defined.
"""
__version__ = "0.1.0"
