"""The capstone: train a small character-level GPT twice from the same seed, once with the course's
attention kernels (forward and backward, problem 7) and once with PyTorch's SDPA, and compare the
two loss curves and their speed.

dataset    the text (tiny Shakespeare, shipped in texts/) as characters, and seeded batches
model      a small pre-LN GPT whose attention is a function passed in
attention  the two attention functions, and where the course's kernels come from
train      a training run, the gradients of its first step, and the comparison of two runs
"""
from .attention import BACKENDS, KernelsNotReady, attention_backend, course_kernels, sdpa_attention
from .dataset import Batches, CharText
from .model import GPT, GPTConfig
from .train import (
    GRADIENT_TOLERANCES,
    TOLERANCES,
    Comparison,
    Tolerance,
    TrainConfig,
    compare,
    first_step_gradients,
    gradient_differences,
    plot,
    train,
)

__all__ = ["BACKENDS", "GRADIENT_TOLERANCES", "TOLERANCES", "Batches", "CharText", "Comparison", "GPT", "GPTConfig",
           "KernelsNotReady", "Tolerance", "TrainConfig", "attention_backend", "compare", "course_kernels",
           "first_step_gradients", "gradient_differences", "plot", "sdpa_attention", "train"]
