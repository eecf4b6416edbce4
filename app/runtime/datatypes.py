"""Tensor types: a signature's dtypes, the protocols' names for them, and what fits exactly.

A signature names each tensor's dtype as numpy does (``float32``, ``int64``,
``uint8``, ``bool``, ``string``). The Open Inference Protocol calls them
``FP32``, ``INT64``, ``UINT8``, ``BOOL``, ``BYTES``; TensorFlow Serving
``DT_FLOAT``, ``DT_INT64``, ``DT_UINT8``, ``DT_BOOL``, ``DT_STRING``. A value
or a request's datatype is taken for a tensor only when the tensor's dtype
holds it exactly: 1.5 or 300 for a uint8 input, or an INT64 tensor for an
INT32 input, is refused, never cast.
"""

from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

# Numpy's name -> the Open Inference Protocol's.
DATATYPES = {
    "bool": "BOOL",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "string": "BYTES",
}
PROTOCOL_DTYPES = {datatype: dtype for dtype, datatype in DATATYPES.items()}
# Numpy's name -> TensorFlow Serving's.
TF_DTYPES = {
    "bool": "DT_BOOL",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
    "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
    "float16": "DT_HALF",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "string": "DT_STRING",
}


@dataclass(frozen=True)
class Kind:
    """What one dtype takes: its numpy type, its family and, for numbers, its range."""

    name: str
    family: str  # "float", "int", "bool" or "bytes"
    low: float | int | None = None
    high: float | int | None = None

    @cached_property
    def numpy(self) -> np.dtype:
        """The little-endian numpy dtype (object for strings)."""
        return np.dtype(object) if self.family == "bytes" else np.dtype(self.name).newbyteorder("<")

    @cached_property
    def bits(self) -> int:
        """Bits of the value: the mantissa and sign for floats (what integers they hold)."""
        if self.family == "float":
            return np.finfo(self.name).nmant + 1
        return np.iinfo(self.name).bits if self.family == "int" else 1

    def describe(self) -> str:
        if self.family == "int":
            return f"an integer from {self.low} to {self.high}"
        if self.family == "float":
            return f"a finite number within {self.name} range"
        return "true or false" if self.family == "bool" else 'a string (or {"b64": base64})'


@cache  # Asked on every request; numpy's finfo and iinfo cost microseconds each.
def kind(dtype: str) -> Kind:
    """The ``Kind`` of a signature's dtype; ``ValueError`` for one that is not served."""
    if dtype not in DATATYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DATATYPES)}")
    if dtype == "string":
        return Kind(dtype, "bytes")
    if dtype == "bool":
        return Kind(dtype, "bool")
    if dtype.startswith("float"):
        largest = float(np.finfo(dtype).max)
        return Kind(dtype, "float", -largest, largest)
    info = np.iinfo(dtype)
    return Kind(dtype, "int", int(info.min), int(info.max))


@cache
def holds_exactly(source: str, target: str) -> bool:
    """Whether every value of dtype ``source`` is a value of dtype ``target``."""
    given, taken = kind(source), kind(target)
    if given.family == taken.family == "int":
        return taken.low <= given.low and given.high <= taken.high
    if given.family == "int" and taken.family == "float":
        return given.high.bit_length() <= taken.bits
    if given.family == taken.family == "float":
        return given.bits <= taken.bits
    return given.family == taken.family
