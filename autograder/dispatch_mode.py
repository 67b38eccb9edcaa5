"""The base of the course's TorchDispatchModes: the op recorder that watches a student call
(integrity.py) and the CPU memory tracker (memory.py).

PyTorch wraps every TorchDispatchMode subclass's `__torch_dispatch__` in `torch._disable_dynamo`,
which imports `torch._dynamo` at the first op: 2.3 s on a CPU, paid by every process that grades a
submission (the judge's candidate and the notebook's kernel), once per submission. These modes
only record what eager calls do; they are not meant to be compiled, and a student function that
calls `torch.compile` under them still runs (Dynamo sees the mode's frames as ordinary Python).
So they opt out of the wrapper through the hook PyTorch gives for it.
"""
from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


class WatchingMode(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False
