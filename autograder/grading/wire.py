"""What crosses between the judge and a sandboxed candidate: plain values and tensors as data.

The judge never unpickles anything a candidate wrote. Values travel as JSON; each tensor as a
`.npy` file (read with allow_pickle=False) plus its dtype, shape, strides and device in the JSON,
so a non-contiguous input reaches the student's kernel with the same strides it had in the judge.
Decoding checks every field and refuses what it does not know: a forged reply can only be a wrong
answer, never code.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import torch

# Tensor dtypes that may cross, and how numpy stores them (bfloat16 has no numpy type: its bits go
# as int16 and are viewed back).
_DTYPES = {
    "float64": (torch.float64, np.float64), "float32": (torch.float32, np.float32),
    "float16": (torch.float16, np.float16), "bfloat16": (torch.bfloat16, np.int16),
    "int64": (torch.int64, np.int64), "int32": (torch.int32, np.int32), "int16": (torch.int16, np.int16),
    "int8": (torch.int8, np.int8), "uint8": (torch.uint8, np.uint8), "bool": (torch.bool, np.bool_),
}
_NAME_OF = {torch_dtype: name for name, (torch_dtype, _) in _DTYPES.items()}
MAX_TENSOR_BYTES = 1 << 31     # no reply may make the judge allocate more than this per tensor
MAX_DEPTH = 8
_FILE = re.compile(r"\d{1,9}\.npy")


class WireError(ValueError):
    """A value that cannot be sent, or a reply that is not well formed."""


class Exchange:
    """A folder both sides see; each tensor is one numbered file in it."""

    def __init__(self, folder: Path, prefix: str):
        self.folder = Path(folder)
        self.prefix = prefix          # "j" for files the judge writes, "c" for the candidate's
        self.count = 0

    def _new_name(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count}.npy"

    # -------------------------------------------------------------------------------------
    def encode(self, value, depth: int = 0):
        if depth > MAX_DEPTH:
            raise WireError("value nested too deeply")
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return {"t": "float", "v": repr(value)}  # keeps inf and nan exact
        if isinstance(value, torch.dtype):
            if value not in _NAME_OF:
                raise WireError(f"dtype {value} cannot be sent")
            return {"t": "dtype", "v": _NAME_OF[value]}
        if isinstance(value, torch.Tensor):
            return self._encode_tensor(value)
        if isinstance(value, (list, tuple)):
            return {"t": type(value).__name__, "v": [self.encode(v, depth + 1) for v in value]}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"t": "dict", "v": {k: self.encode(v, depth + 1) for k, v in value.items()}}
        raise WireError(f"a {type(value).__name__} cannot be sent between judge and candidate")

    def _encode_tensor(self, t: torch.Tensor):
        t = t.detach()
        if t.dtype not in _NAME_OF:
            raise WireError(f"tensors of dtype {t.dtype} cannot be sent")
        # The smallest stretch of memory that holds every element of the view, so strides survive.
        span = 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride(), strict=True)) if t.numel() else 0
        if any(s < 0 for s in t.stride()):
            raise WireError("negative strides cannot be sent")
        flat = torch.as_strided(t, (span,), (1,), t.storage_offset()).cpu().contiguous() if span else \
            torch.empty(0, dtype=t.dtype)
        if t.dtype == torch.bfloat16:
            flat = flat.view(torch.int16)
        name = self._new_name()
        np.save(self.folder / name, flat.numpy(), allow_pickle=False)
        return {"t": "tensor", "file": name, "dtype": _NAME_OF[t.dtype], "shape": list(t.shape),
                "stride": list(t.stride()), "device": t.device.type}

    # -------------------------------------------------------------------------------------
    def decode(self, obj, device: str | None = None, depth: int = 0):
        """`device`: where tensors land (None: the device named in the message)."""
        if depth > MAX_DEPTH:
            raise WireError("reply nested too deeply")
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return obj
        if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
            raise WireError(f"malformed value in reply: {type(obj).__name__}")
        kind = obj["t"]
        if kind == "float":
            text = obj.get("v")
            if not isinstance(text, str) or len(text) > 40:
                raise WireError("malformed float")
            return float(text)
        if kind == "dtype":
            if obj.get("v") not in _DTYPES:
                raise WireError(f"unknown dtype {obj.get('v')!r}")
            return _DTYPES[obj["v"]][0]
        if kind in ("list", "tuple"):
            items = obj.get("v")
            if not isinstance(items, list):
                raise WireError("malformed sequence")
            values = [self.decode(v, device, depth + 1) for v in items]
            return tuple(values) if kind == "tuple" else values
        if kind == "dict":
            items = obj.get("v")
            if not isinstance(items, dict):
                raise WireError("malformed dict")
            return {str(k): self.decode(v, device, depth + 1) for k, v in items.items()}
        if kind == "tensor":
            return self._decode_tensor(obj, device)
        raise WireError(f"unknown value kind {kind!r}")

    def _decode_tensor(self, obj, device):
        name, dtype, shape, stride = obj.get("file"), obj.get("dtype"), obj.get("shape"), obj.get("stride")
        if not isinstance(name, str) or not _FILE.fullmatch(name.lstrip("jc")) or name[0] not in "jc":
            raise WireError(f"bad tensor file name {name!r}")
        if dtype not in _DTYPES:
            raise WireError(f"unknown tensor dtype {dtype!r}")
        if (not isinstance(shape, list) or not isinstance(stride, list) or len(shape) != len(stride)
                or len(shape) > 8 or not all(isinstance(x, int) and 0 <= x < 2**40 for x in shape + stride)):
            raise WireError("bad tensor shape or strides")
        torch_dtype, np_dtype = _DTYPES[dtype]
        numel = math.prod(shape)
        span = 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) if numel else 0
        if span * torch.empty(0, dtype=torch_dtype).element_size() > MAX_TENSOR_BYTES:
            raise WireError(f"tensor of {span} elements is larger than the judge accepts")
        path = self.folder / name
        # O_NOFOLLOW: a candidate must not make the judge read a file of its choosing via a link.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            array = np.load(f, allow_pickle=False)
        if array.dtype != np.dtype(np_dtype) or array.ndim != 1 or array.size != span:
            raise WireError(f"tensor file {name} does not hold {span} values of {dtype}")
        flat = torch.from_numpy(array.copy())
        if torch_dtype == torch.bfloat16:
            flat = flat.view(torch.bfloat16)
        target = device or obj.get("device", "cpu")
        if target not in ("cpu", "cuda"):
            raise WireError(f"unknown device {target!r}")
        flat = flat.to(target)
        if not numel:
            return torch.empty(shape, dtype=torch_dtype, device=target)
        return torch.as_strided(flat, shape, stride, 0)
