"""The one table of dtype names: torch's names, the short names calibration measures peaks under
(fp32, bf16, fp16, int8), and element sizes, for torch and ONNX spellings alike."""

from __future__ import annotations

import numpy as np
import torch

# Short name -> torch dtype: the GEMMs calibration times.
CALIBRATED = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}

# Any spelling (torch, ONNX, short) -> the short name of the peak that bounds it.
_SHORT = {
    "float32": "fp32",
    "float": "fp32",
    "fp32": "fp32",
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "fp16": "fp16",
    "int8": "int8",
    "uint8": "int8",
}

_ELEMENT_BYTES = {
    "float32": 4,
    "float": 4,
    "float64": 8,
    "double": 8,
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}


# ONNX tensor type -> the numpy dtype of its arrays (feeds synthesized, or cast to what a session takes).
ONNX_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def onnx_numpy_dtype(onnx_type: str) -> type | None:
    """The numpy dtype of an ONNX tensor type, 'tensor(float)' or 'float' alike; None when unknown."""
    return ONNX_NUMPY.get(onnx_type if onnx_type.startswith("tensor(") else f"tensor({onnx_type})")


def onnx_torch_name(onnx_type: str) -> str | None:
    """torch's name of an ONNX tensor type ('float' -> 'float32'); None when unknown."""
    found = onnx_numpy_dtype(onnx_type)
    return np.dtype(found).name if found is not None else None


def short_name(dtype: str | torch.dtype) -> str | None:
    """The calibration name of a dtype ('bfloat16' -> 'bf16'), None for one calibration does not time."""
    return _SHORT.get(str(dtype).removeprefix("torch."))


def element_bytes(dtype: str | torch.dtype) -> int | None:
    """Bytes per element of a torch or ONNX dtype name; None when unknown."""
    return _ELEMENT_BYTES.get(str(dtype).removeprefix("torch."))


def is_floating(dtype: str | torch.dtype) -> bool:
    return str(dtype).removeprefix("torch.") in {"float32", "float", "float64", "double", "bfloat16", "float16", "half"}
