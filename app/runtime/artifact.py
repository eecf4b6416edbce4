"""The compiled serving artifact: a LiteRT flatbuffer (or a SavedModel), its signature and
golden outputs.

Training (or ``python -m training compile``) writes it beside the saved model;
the server reads it without TensorFlow, unless the version needs TensorFlow's
runtime (app/runtime/tensorflow_runtime.py). Three files, or two and a folder:

- ``model.tflite``: the flatbuffer; or ``compiled_savedmodel/``, for the TensorFlow
  runtime, which a signature names with each of its files;
- ``signature.json``: the input and output tensors (name, shape with -1 for
  the batch, dtype, and for an input the range of values in which the
  runtime was found to agree with Keras), the kernels to run, and each
  file's size and SHA-256;
- ``golden.npz``: probe inputs drawn from the model's input domain (as a
  seed and per-feature bounds, so its size does not grow with the input
  shape) and the reference Keras model's outputs for them, which the
  serving runtime must reproduce before a version is served.

Every file is stat-ed before it is read: regular files only, within a size
bound, so a FIFO, a device or a padded file is refused without reading it.
"""

import hashlib
import io
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from app.runtime.datatypes import Kind, kind

FLATBUFFER_FILE = "model.tflite"
SIGNATURE_FILE = "signature.json"
GOLDEN_FILE = "golden.npz"
FORMAT_VERSION = 2

FLOAT32_MAX = float(np.finfo(np.float32).max)
# The runtimes a version may need: LiteRT by default, TensorFlow for the rest.
RUNTIMES = ("litert", "tensorflow")
# Not "saved_model": a team's own SavedModel, exported into a version, may be called that.
SAVED_MODEL_DIR = "compiled_savedmodel"
# Strings: only the TensorFlow runtime takes or gives them.
STRING_DTYPE = "string"
# Words the probes of a string input are made of: sentences a text model meets.
PROBE_WORDS = (
    "the quick brown fox jumps over a lazy dog while the model server answers every "
    "request with what the trained model says and nothing else hello world data team"
).split()
# The dtypes a LiteRT tensor may have (numpy's names).
SERVED_DTYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
)

# Size bounds, checked with stat before a file is opened. LiteRT's flatbuffers
# cannot exceed 2 GiB; the largest keras.applications model (ConvNeXtXLarge)
# is 1.4 GiB in float32, EfficientNetB7 260 MiB, MobileNetV3Small 6 MiB.
# MAX_MODEL_BYTES (app/config.py) bounds the flatbuffer below LiteRT's own 2 GiB.
DEFAULT_MAX_MODEL_BYTES = 512 * 1024 * 1024
MAX_SIGNATURE_BYTES = 1024 * 1024
# Any file metadata.json lists (model.keras too): hashed as a stream, never held.
MAX_ARTIFACT_BYTES = 4 * 1024**3
MAX_GOLDEN_BYTES = 16 * 1024 * 1024

# The kernels LiteRT runs the model with, in order of preference: the XNNPACK
# delegate (3x faster than the built-in kernels on MobileNetV3Small here, and
# as fast on a one-weight model), or the built-in ones where XNNPACK does
# not reproduce Keras. Compile records the choice.
KERNELS = ("xnnpack", "builtin")

# How closely the runtime must match the reference, relative to the largest
# value of the output for that instance: kernels sum in other orders, and
# LiteRT approximates tanh and other activations (measured at 1.9e-5
# relative on a tanh model, 2e-6 on MobileNetV3Small): 5x margin.
GOLDEN_RTOL = 1e-4
GOLDEN_ATOL = 1e-5


# A dimension the model leaves open beyond the batch (a sequence's length, an
# image's size) takes this size where the server needs one: the probes of the
# agreement check, the warm-up, and the per-instance sizes the limits start from.
EXAMPLE_DIMENSION = 32


class ArtifactError(Exception):
    """A compiled artifact is missing, corrupt or not servable."""


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: its shape (-1 for the batch, and for any dimension the
    model leaves open) and dtype (numpy's name).

    ``valid_range`` (inputs only) is the ``(min, max)`` of values for which
    the runtime agrees with Keras (or, for an integer input, that the model
    takes at all, such as the ids an embedding has); None means the dtype's
    whole range.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    valid_range: tuple[float, float] | None = None

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def kind(self) -> Kind:
        """What the dtype takes (app/runtime/datatypes.py)."""
        return kind(self.dtype)

    @property
    def open(self) -> bool:
        """Whether the model leaves a dimension beyond the batch open."""
        return -1 in self.feature_shape

    @property
    def example_shape(self) -> tuple[int, ...]:
        """The feature shape with each open dimension at EXAMPLE_DIMENSION."""
        return tuple(EXAMPLE_DIMENSION if n == -1 else n for n in self.feature_shape)

    def fits(self, feature_shape) -> bool:
        """Whether an instance of ``feature_shape`` fits: open dimensions take any size."""
        return len(feature_shape) == len(self.feature_shape) and all(
            given == wanted or (wanted == -1 and given >= 1)
            for given, wanted in zip(feature_shape, self.feature_shape, strict=True)
        )

    @property
    def size(self) -> int:
        """Numbers in one instance (at the example size, for open dimensions)."""
        return int(np.prod(self.example_shape, dtype=np.int64))

    def to_json(self) -> dict:
        data = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.valid_range is not None:
            data["valid_range"] = list(self.valid_range)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "TensorSpec":
        valid_range = data.get("valid_range")
        dtype = str(data["dtype"])
        if valid_range is not None:
            tensor_kind = kind(dtype)
            number = int if tensor_kind.family == "int" else float
            low, high = (number(value) for value in valid_range)
            if not tensor_kind.low <= low <= high <= tensor_kind.high:
                raise ValueError(f"valid_range {valid_range} of {data['name']!r}")
            valid_range = (low, high)
        shape = tuple(int(n) for n in data["shape"])
        return cls(str(data["name"]), shape, dtype, valid_range)


@dataclass(frozen=True)
class Probes:
    """Probe inputs, stored as a recipe: a seed and per-input bounds of the domain.

    Row 0 is each feature's midpoint, row 1 its low and row 2 its high bound;
    the rest are uniform between them, from PCG64's raw stream (which numpy
    keeps stable across releases), quantised to 256 levels per feature, and
    rounded to the input's dtype (integers to the nearest, booleans at the
    midpoint).
    """

    rows: int
    seed: int
    lows: dict[str, np.ndarray]
    highs: dict[str, np.ndarray]

    def inputs(self, specs) -> dict[str, np.ndarray]:
        bits = np.random.Generator(np.random.PCG64(self.seed)).bit_generator
        arrays = {}
        for spec in specs:
            count = self.rows * spec.size
            if spec.kind.family == "bytes":
                arrays[spec.name] = probe_strings(bits, self.rows, spec)
                continue
            raw = bits.random_raw((count + 7) // 8).view(np.uint8)[:count]
            levels = raw.reshape(self.rows, *spec.example_shape).astype(np.float32)
            levels[: min(self.rows, 3)] = np.array([127.5, 0, 255], np.float32)[
                : min(self.rows, 3)
            ].reshape(-1, *[1] * len(spec.example_shape))
            low, high = self.lows[spec.name], self.highs[spec.name]
            if spec.dtype == "float32":  # In float32, as artifacts of float32 models always were.
                values = low + (high - low) * (levels / np.float32(255))
                arrays[spec.name] = values.astype(np.float32)
                continue
            values = low + (high - low) * (levels.astype(np.float64) / 255)
            arrays[spec.name] = in_dtype(values, spec)
        return arrays


def probe_strings(bits, rows: int, spec: TensorSpec) -> np.ndarray:
    """Probe strings: one to three of PROBE_WORDS each, from four raw bytes of the stream."""
    count = rows * spec.size
    raw = bits.random_raw(count // 2 + 1).view(np.uint8)[: count * 4].reshape(count, 4)
    phrases = [
        " ".join(PROBE_WORDS[word % len(PROBE_WORDS)] for word in draw[1 : 2 + draw[0] % 3])
        for draw in raw.tolist()
    ]
    strings = np.array([phrase.encode() for phrase in phrases], dtype=object)
    return strings.reshape(rows, *spec.example_shape)


def in_dtype(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float64 probe values as the input's dtype: rounded and clipped for integers."""
    tensor_kind = spec.kind
    if tensor_kind.family == "bool":
        return values >= 0.5
    if tensor_kind.family == "bytes":  # A string input's ladder and midpoint: one sentence.
        return np.full(values.shape, " ".join(PROBE_WORDS[:4]).encode(), dtype=object)
    if tensor_kind.family == "int":
        # Clipped to floats within the range: 2^63 - 1, as a float, is 2^63.
        high = float(tensor_kind.high)
        high = np.nextafter(high, 0) if high > tensor_kind.high else high
        return np.clip(np.rint(values), float(tensor_kind.low), high).astype(tensor_kind.numpy)
    return np.clip(values, tensor_kind.low, tensor_kind.high).astype(tensor_kind.numpy)


@dataclass(frozen=True)
class CompiledModel:
    """Everything the server needs to serve a version: its runtime's bytes and facts.

    ``runtime`` is "litert" (``flatbuffer`` and ``kernels``) or "tensorflow"
    (``saved_model``: its files' bytes by relative path, and ``why``: what kept
    the version off LiteRT).
    """

    flatbuffer: bytes
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    probes: Probes
    golden_outputs: dict[str, np.ndarray]
    kernels: str = "builtin"
    runtime: str = "litert"
    saved_model: dict[str, bytes] | None = None
    why: str | None = None
    golden_inputs: dict[str, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "golden_inputs", self.probes.inputs(self.inputs))

    @cached_property
    def numbers_in(self) -> int:
        """Numbers in one instance, over all inputs."""
        return sum(spec.size for spec in self.inputs)

    @cached_property
    def numbers_out(self) -> int:
        return sum(spec.size for spec in self.outputs)

    @cached_property
    def open(self) -> bool:
        """Whether any input leaves a dimension beyond the batch open."""
        return any(spec.open for spec in self.inputs)

    @cached_property
    def ranged(self) -> bool:
        """Whether any input is refused beyond a valid range."""
        return any(spec.valid_range is not None for spec in self.inputs)

    @cached_property
    def size_bytes(self) -> int:
        """Bytes the runtime loads: the flatbuffer, or the SavedModel's files."""
        if self.runtime == "tensorflow":
            return sum(len(data) for data in self.saved_model.values())
        return len(self.flatbuffer)

    @property
    def file(self) -> str:
        """What the runtime runs: the flatbuffer's file, or the SavedModel's folder."""
        return f"{SAVED_MODEL_DIR}/" if self.runtime == "tensorflow" else FLATBUFFER_FILE

    @property
    def sha256(self) -> str:
        """The flatbuffer's SHA-256, or for a SavedModel that of its files' listing."""
        if self.runtime == "tensorflow":
            listing = "".join(
                f"{name} {hashlib.sha256(data).hexdigest()}\n"
                for name, data in sorted(self.saved_model.items())
            )
            return hashlib.sha256(listing.encode()).hexdigest()
        return hashlib.sha256(self.flatbuffer).hexdigest()

    def signature(self) -> dict:
        """The signature as ``/model`` publishes it."""
        return {
            "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": [spec.to_json() for spec in self.outputs],
        }

    def __getstate__(self):
        # The probe inputs are rebuilt from their recipe, not sent through the loader's pipe.
        state = dict(self.__dict__)
        del state["golden_inputs"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__post_init__()


def check_servable(inputs, outputs, runtime: str = "litert") -> None:
    """Refuse tensors the server cannot take or give exactly: numbers and booleans of the
    dtypes the protocols name (and strings, on the TensorFlow runtime), each with a batch
    dimension first."""
    served = SERVED_DTYPES + ((STRING_DTYPE,) if runtime == "tensorflow" else ())
    for role, specs in (("input", inputs), ("output", outputs)):
        if not specs:
            raise ArtifactError(f"the model has no {role}s")
        for spec in specs:
            if spec.dtype == STRING_DTYPE and spec.dtype not in served:
                raise ArtifactError(f"{role} {spec.name!r} is a string, which LiteRT does not take")
            if spec.dtype not in served:
                raise ArtifactError(
                    f"{role} {spec.name!r} is {spec.dtype}; tensors of "
                    f"{', '.join(served)} are served"
                )
            if len(spec.shape) < 1 or spec.shape[0] != -1 or 0 in spec.shape[1:]:
                raise ArtifactError(
                    f"{role} {spec.name!r} has shape {list(spec.shape)}; expected a batch "
                    "dimension (-1) followed by feature dimensions"
                )
    names = [spec.name for spec in (*inputs, *outputs)]
    if len(set(names)) != len(names):
        raise ArtifactError(f"tensor names must be unique: {names}")


def write(directory: Path, compiled: CompiledModel, source: dict) -> None:
    """Write the artifact into ``directory``, each file atomically, the signature last."""
    golden = _golden_bytes(compiled)
    signature = {"format": FORMAT_VERSION, "runtime": compiled.runtime}
    if compiled.runtime == "tensorflow":
        files = sorted(compiled.saved_model.items())
        signature["saved_model"] = [_file_facts(name, data) for name, data in files]
        signature["why"] = compiled.why
        _write_folder_atomically(directory / SAVED_MODEL_DIR, compiled.saved_model)
        (directory / FLATBUFFER_FILE).unlink(missing_ok=True)  # A LiteRT compile before.
    else:
        signature["kernels"] = compiled.kernels
        signature["flatbuffer"] = _file_facts(FLATBUFFER_FILE, compiled.flatbuffer)
        _write_atomically(directory / FLATBUFFER_FILE, compiled.flatbuffer)
    signature.update(golden=_file_facts(GOLDEN_FILE, golden), source=source)
    signature.update(compiled.signature())
    _write_atomically(directory / GOLDEN_FILE, golden)
    _write_atomically(directory / SIGNATURE_FILE, (json.dumps(signature, indent=1) + "\n").encode())


def _write_folder_atomically(path: Path, files: dict[str, bytes]) -> None:
    staging = path.with_name(f".{path.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    for name, data in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(staging, path)


def _golden_bytes(compiled: CompiledModel) -> bytes:
    probes = compiled.probes
    arrays = {"rows": np.int64(probes.rows), "seed": np.int64(probes.seed)}
    for index, spec in enumerate(compiled.inputs):
        arrays[f"input{index}_low"] = probes.lows[spec.name]
        arrays[f"input{index}_high"] = probes.highs[spec.name]
    for index, spec in enumerate(compiled.outputs):
        golden = compiled.golden_outputs[spec.name]
        # Strings as fixed-width bytes: an object array would need pickle.
        arrays[f"output{index}"] = golden.astype(bytes) if golden.dtype == object else golden
    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def _file_facts(name: str, data: bytes) -> dict:
    return {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write_atomically(path: Path, data: bytes) -> None:
    staging = path.with_name(f".{path.name}.partial")
    staging.write_bytes(data)
    os.replace(staging, path)


def exists(directory: Path) -> bool:
    return (directory / SIGNATURE_FILE).is_file()


def checked_size(path: Path, limit: int, setting: str = "size") -> int:
    """A regular file's size, refused by ``stat`` alone when it could not be right.

    Not a regular file (a FIFO or a device would block or never end), or
    larger than ``limit``: refused before a byte is read.
    """
    try:
        facts = os.stat(path)
    except OSError as error:
        raise ArtifactError(f"{path.name} unreadable ({error.strerror or error})") from None
    if not stat.S_ISREG(facts.st_mode):
        raise ArtifactError(f"{path.name} is not a regular file")
    if facts.st_size > limit:
        raise ArtifactError(
            f"{path.name} is {facts.st_size:,} bytes, over the {setting} limit of {limit:,}"
        )
    return facts.st_size


def read_bounded(
    path: Path, limit: int, expected_size: int | None = None, setting: str = "size"
) -> bytes:
    """A regular file's bytes, checked as ``checked_size`` does and against the size the
    signature records, before a byte is read."""
    size = checked_size(path, limit, setting)
    if expected_size is not None and size != expected_size:
        raise ArtifactError(f"{path.name} is {size:,} bytes, the signature says {expected_size:,}")
    try:
        return path.read_bytes()
    except OSError as error:
        raise ArtifactError(f"{path.name} unreadable ({error.strerror or error})") from None


def sha256_file(path: Path, limit: int) -> str:
    """A regular file's SHA-256, read as a stream; checked as ``checked_size`` does first."""
    checked_size(path, limit)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1024 * 1024):
                digest.update(chunk)
    except OSError as error:
        raise ArtifactError(f"{path.name} unreadable ({error.strerror or error})") from None
    return digest.hexdigest()


def read(directory: Path, max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> CompiledModel:
    """Read and verify a version's compiled artifact, or raise ``ArtifactError``."""
    try:
        signature = json.loads(read_bounded(directory / SIGNATURE_FILE, MAX_SIGNATURE_BYTES))
    except ValueError as error:
        raise ArtifactError(f"{SIGNATURE_FILE} is not JSON ({error})") from None
    try:
        if not isinstance(signature, dict) or signature.get("format") != FORMAT_VERSION:
            found = signature.get("format") if isinstance(signature, dict) else None
            raise ArtifactError(
                f"{SIGNATURE_FILE} has format {found!r}, this server reads {FORMAT_VERSION}: "
                f"compile it again with `python -m training compile {directory}`"
            )
        inputs = tuple(TensorSpec.from_json(spec) for spec in signature["inputs"])
        outputs = tuple(TensorSpec.from_json(spec) for spec in signature["outputs"])
        runtime = signature.get("runtime", "litert")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}")
        kernels = signature.get("kernels", "builtin")
        if kernels not in KERNELS:
            raise ValueError(f"kernels {kernels!r}")
        golden_facts = _facts(signature["golden"])
        if runtime == "litert":
            listed = [_facts(signature["flatbuffer"])]
        else:
            listed = [_facts(facts, folder=SAVED_MODEL_DIR) for facts in signature["saved_model"]]
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        problem = f"{type(error).__name__}: {error}"
        raise ArtifactError(f"{SIGNATURE_FILE} is malformed ({problem})") from None
    check_servable(inputs, outputs, runtime)
    found = sum(
        checked_size(directory / name, max_model_bytes, "MAX_MODEL_BYTES") for name, *_ in listed
    )
    if found > max_model_bytes:  # A SavedModel's files, together.
        raise ArtifactError(
            f"the model's files are {found:,} bytes, over the MAX_MODEL_BYTES limit of "
            f"{max_model_bytes:,}"
        )
    contents = {
        name: _verified(directory / name, max_model_bytes, size, sha256, "MAX_MODEL_BYTES")
        for name, size, sha256 in listed
    }
    golden = _verified(directory / GOLDEN_FILE, MAX_GOLDEN_BYTES, *golden_facts[1:])
    probes, golden_outputs = _read_golden(golden, inputs, outputs)
    if runtime == "tensorflow":
        saved_model = {
            name.removeprefix(f"{SAVED_MODEL_DIR}/"): data for name, data in contents.items()
        }
        return CompiledModel(
            b"",
            inputs,
            outputs,
            probes,
            golden_outputs,
            kernels,
            runtime,
            saved_model,
            signature.get("why"),
        )
    flatbuffer = contents[FLATBUFFER_FILE]
    return CompiledModel(flatbuffer, inputs, outputs, probes, golden_outputs, kernels)


def _facts(facts: dict, folder: str | None = None) -> tuple[str, int, str]:
    """A listed file's path in the version (within ``folder``), size and SHA-256."""
    name = str(facts["file"])
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts or "\\" in name:
        raise ValueError(f"file {name!r}")
    if folder is not None:
        name = f"{folder}/{name}"
    return name, int(facts["bytes"]), str(facts["sha256"])


def _verified(path: Path, limit: int, size: int, sha256: str, setting="size") -> bytes:
    data = read_bounded(path, limit, size, setting)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ArtifactError(f"{path.name} has SHA-256 {actual}, signature says {sha256}")
    return data


def _read_golden(data: bytes, inputs, outputs) -> tuple[Probes, dict[str, np.ndarray]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            rows, seed = int(arrays["rows"]), int(arrays["seed"])
            lows = {s.name: _bound(arrays[f"input{i}_low"]) for i, s in enumerate(inputs)}
            highs = {s.name: _bound(arrays[f"input{i}_high"]) for i, s in enumerate(inputs)}
            golden = {s.name: _typed(arrays[f"output{i}"], s) for i, s in enumerate(outputs)}
    except (KeyError, ValueError, OSError, EOFError) as error:
        raise ArtifactError(f"{GOLDEN_FILE} is malformed ({error})") from None
    for spec in inputs:
        for bound in (lows[spec.name], highs[spec.name]):
            if bound.shape not in ((), spec.example_shape):
                raise ArtifactError(f"{GOLDEN_FILE}: bounds of {spec.name!r} have {bound.shape}")
    for spec in outputs:
        if len(golden[spec.name]) != rows or not spec.fits(golden[spec.name].shape[1:]):
            raise ArtifactError(
                f"{GOLDEN_FILE}: outputs of {spec.name!r} have shape {golden[spec.name].shape}"
            )
    return Probes(rows, seed, lows, highs), golden


def _bound(array: np.ndarray) -> np.ndarray:
    """A probe bound: float32 for a float32 input, float64 for others (int64's bounds)."""
    if array.dtype not in (np.float32, np.float64):
        raise ValueError(f"expected float bounds, found {array.dtype}")
    return array


def _typed(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.kind.family == "bytes" and array.dtype.kind == "S":
        return array.astype(object)
    if array.dtype != spec.kind.numpy:
        raise ValueError(f"output {spec.name!r} is {spec.dtype}, its golden values {array.dtype}")
    return array


def not_finite(values: np.ndarray) -> np.ndarray:
    """Where float outputs are not finite, counting LiteRT's saturation as overflow.

    LiteRT clamps an overflowing result to +-the dtype's largest value where
    the reference model gives +-inf, so a value at that edge is no real
    answer. Integers and booleans are always finite.
    """
    if values.dtype.kind != "f":
        return np.zeros(values.shape, dtype=bool)
    return ~(np.abs(values) < np.finfo(values.dtype).max)


def disagreement(expected: np.ndarray, actual: np.ndarray, strict: bool = True) -> np.ndarray:
    """Per instance, whether ``actual`` differs from the reference ``expected``.

    Values are compared within a tolerance relative to the instance's largest
    reference value. ``strict``: a non-finite value must be non-finite in
    both; otherwise only a finite answer where the reference has none counts
    (the server refuses non-finite outputs, so those are never served).
    """
    rows = len(expected)
    expected, actual = expected.reshape(rows, -1), actual.reshape(rows, -1)
    if expected.dtype.kind != "f":  # Integers and booleans agree exactly or not at all.
        return (expected != actual).any(axis=1)
    expected_bad, actual_bad = not_finite(expected), not_finite(actual)
    with np.errstate(over="ignore", invalid="ignore"):
        scale = np.where(expected_bad, 0, np.abs(expected)).max(axis=1, keepdims=True)
        close = np.abs(actual - expected) <= GOLDEN_ATOL + GOLDEN_RTOL * scale
    both_finite = ~expected_bad & ~actual_bad
    wrong = both_finite & ~close
    wrong |= (expected_bad != actual_bad) if strict else (expected_bad & ~actual_bad)
    return wrong.any(axis=1)


def golden_mismatch(expected: np.ndarray, actual: np.ndarray) -> str | None:
    """Why ``actual`` does not reproduce ``expected``, or None when it does."""
    if actual.shape != expected.shape:
        return f"shape {actual.shape}, expected {expected.shape}"
    wrong = disagreement(expected, actual)
    if not wrong.any():
        return None
    row = int(np.flatnonzero(wrong)[0])
    if expected.dtype.kind == "f":
        column = int(np.argmax(np.abs(actual[row] - expected[row]).reshape(-1)))
    else:
        column = int(np.flatnonzero((actual[row] != expected[row]).reshape(-1))[0])
    index = [row, *np.unravel_index(column, expected.shape[1:])] if expected.ndim > 1 else [row]
    index = tuple(int(i) for i in index)
    return f"at {list(index)} gave {actual[index]!r}, the reference gave {expected[index]!r}"
