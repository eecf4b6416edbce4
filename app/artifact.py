"""The compiled serving artifact: a LiteRT flatbuffer, its signature and golden outputs.

Training (or ``python -m training compile``) writes it beside the saved model;
the server reads it without TensorFlow. ``signature.json`` holds the input and
output tensors (name, shape with -1 for the batch, dtype), the flatbuffer's
SHA-256 and the golden outputs: probe inputs with the reference Keras model's
outputs, which the serving runtime must reproduce before a version is served.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FLATBUFFER_FILE = "model.tflite"
SIGNATURE_FILE = "signature.json"
FORMAT_VERSION = 1

# The only dtype served: client numbers are JSON numbers, held as float32.
SERVED_DTYPE = "float32"
FLOAT32_MAX = float(np.finfo(np.float32).max)

# How closely the runtime must match the reference on the golden inputs. A
# Dense layer agrees exactly; LiteRT approximates tanh and other activations,
# measured at up to 1.9e-5 relative (8.5e-6 absolute) on a tanh model: 5x margin.
GOLDEN_RTOL = 1e-4
GOLDEN_ATOL = 1e-5


class ArtifactError(Exception):
    """A compiled artifact is missing, corrupt or not servable."""


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: its shape (-1 for the batch) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict) -> "TensorSpec":
        return cls(str(data["name"]), tuple(int(n) for n in data["shape"]), str(data["dtype"]))


@dataclass(frozen=True)
class CompiledModel:
    """Everything the server needs to serve a version without TensorFlow."""

    flatbuffer: bytes
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    golden_inputs: dict[str, np.ndarray]
    golden_outputs: dict[str, np.ndarray]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.flatbuffer).hexdigest()

    def signature(self) -> dict:
        """The signature as ``/model`` publishes it."""
        return {
            "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": [spec.to_json() for spec in self.outputs],
        }


def check_servable(inputs, outputs) -> None:
    """Refuse tensors the server cannot take or give exactly: only float32, fixed feature shapes."""
    for role, specs in (("input", inputs), ("output", outputs)):
        if not specs:
            raise ArtifactError(f"the model has no {role}s")
        for spec in specs:
            if spec.dtype != SERVED_DTYPE:
                raise ArtifactError(
                    f"{role} {spec.name!r} is {spec.dtype}; only float32 tensors are served "
                    "(a client's number would be changed silently)"
                )
            if len(spec.shape) < 1 or spec.shape[0] != -1 or any(n < 1 for n in spec.shape[1:]):
                raise ArtifactError(
                    f"{role} {spec.name!r} has shape {list(spec.shape)}; expected a batch "
                    "dimension (-1) followed by fixed feature dimensions"
                )


def write(directory: Path, compiled: CompiledModel, source: dict) -> None:
    """Write ``model.tflite`` and ``signature.json`` into ``directory``, each atomically."""
    signature = {
        "format": FORMAT_VERSION,
        "runtime": "litert",
        "flatbuffer": {"file": FLATBUFFER_FILE, "sha256": compiled.sha256},
        "source": source,
        **compiled.signature(),
        "golden": {
            "inputs": {name: array.tolist() for name, array in compiled.golden_inputs.items()},
            "outputs": {name: array.tolist() for name, array in compiled.golden_outputs.items()},
        },
    }
    _write_atomically(directory / FLATBUFFER_FILE, compiled.flatbuffer)
    # Non-finite golden outputs are written as JSON's Infinity/NaN extensions on purpose.
    text = json.dumps(signature, indent=1, allow_nan=True) + "\n"
    _write_atomically(directory / SIGNATURE_FILE, text.encode())


def _write_atomically(path: Path, data: bytes) -> None:
    staging = path.with_name(f".{path.name}.partial")
    staging.write_bytes(data)
    os.replace(staging, path)


def exists(directory: Path) -> bool:
    return (directory / SIGNATURE_FILE).is_file()


def read(directory: Path) -> CompiledModel:
    """Read and verify a version's compiled artifact, or raise ``ArtifactError``."""
    try:
        signature = json.loads((directory / SIGNATURE_FILE).read_bytes())
        flatbuffer = (directory / FLATBUFFER_FILE).read_bytes()
    except (OSError, ValueError) as error:
        raise ArtifactError(f"unreadable compiled artifact ({error})") from error
    try:
        if signature["format"] != FORMAT_VERSION:
            raise ArtifactError(f"{SIGNATURE_FILE} has format {signature['format']!r}")
        expected = signature["flatbuffer"]["sha256"]
        inputs = tuple(TensorSpec.from_json(spec) for spec in signature["inputs"])
        outputs = tuple(TensorSpec.from_json(spec) for spec in signature["outputs"])
        golden = signature["golden"]
        golden_inputs = {s.name: _array(golden["inputs"][s.name], s) for s in inputs}
        golden_outputs = {s.name: _array(golden["outputs"][s.name], s) for s in outputs}
    except (KeyError, TypeError, ValueError) as error:
        problem = f"{type(error).__name__}: {error}"
        raise ArtifactError(f"{SIGNATURE_FILE} is malformed ({problem})") from None
    actual = hashlib.sha256(flatbuffer).hexdigest()
    if actual != expected:
        raise ArtifactError(f"{FLATBUFFER_FILE} has SHA-256 {actual}, signature says {expected}")
    check_servable(inputs, outputs)
    return CompiledModel(flatbuffer, inputs, outputs, golden_inputs, golden_outputs)


def _array(values, spec: TensorSpec) -> np.ndarray:
    array = np.array(values, dtype=np.float32)
    if array.ndim != len(spec.shape) or array.shape[1:] != spec.feature_shape:
        raise ValueError(f"golden values for {spec.name!r} have shape {array.shape}")
    return array


def not_finite(values: np.ndarray) -> np.ndarray:
    """Where float32 outputs are not finite, counting LiteRT's saturation as overflow.

    LiteRT clamps an overflowing result to +-FLOAT32_MAX where the reference
    model gives +-inf, so a value at the edge of float32 is no real answer.
    """
    return ~(np.abs(values) < FLOAT32_MAX)


def golden_mismatch(expected: np.ndarray, actual: np.ndarray) -> str | None:
    """Why ``actual`` does not reproduce ``expected``, or None when it does."""
    if actual.shape != expected.shape:
        return f"shape {actual.shape}, expected {expected.shape}"
    expected_bad, actual_bad = not_finite(expected), not_finite(actual)
    finite = ~expected_bad
    close = np.isclose(actual, expected, rtol=GOLDEN_RTOL, atol=GOLDEN_ATOL)
    wrong = (expected_bad != actual_bad) | (finite & ~close)
    if not wrong.any():
        return None
    index = tuple(int(i) for i in np.argwhere(wrong)[0])
    return f"at {list(index)} gave {actual[index]!r}, the reference gave {expected[index]!r}"
