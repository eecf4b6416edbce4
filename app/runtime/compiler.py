"""Compile a saved model into the serving artifact (needs TensorFlow).

The artifact (app/runtime/artifact.py) is a LiteRT flatbuffer, or a SavedModel
for the TensorFlow runtime when LiteRT cannot run the model as Keras does,
with its signature and golden outputs. Training compiles each version it
writes, ``python -m training compile DIR`` an existing one, and the loader a
version that has no artifact when TensorFlow is installed; so the compiler
lives in the runtime, which all three use. What a team saves is read by
app/runtime/saved_models.py.

Agreement is checked where the model is used: probe inputs come from the
input domain (the training profile's range with a margin, else
``DEFAULT_DOMAIN``), and the runtime must reproduce Keras there. Beyond the
domain, compile walks up a ladder of magnitudes to float32's largest and
records, per input, the range in which LiteRT still agrees with Keras; the
server refuses values outside it rather than answer a different number.
"""

import json
import logging
import math
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from app.runtime import artifact
from app.runtime.artifact import FLOAT32_MAX, ArtifactError, CompiledModel, Probes, TensorSpec
from app.runtime.graph_ops import first_denied
from app.runtime.litert import LiteRTRuntime, native_stderr_logged
from app.runtime.model_code import INSTALLED_ONLY, CodePolicy
from app.runtime.saved_models import load_model
from app.runtime.store import SAVED_MODEL_FILE, StoreError, find_model_file

log = logging.getLogger("training")

# Where probes are drawn when the version has no training profile: values a
# model meets in practice, standardised features and raw pixels (0..255) alike.
# Integer inputs of up to 16 bits (uint8 pixels) get their dtype's whole range.
DEFAULT_DOMAIN = (-1000.0, 1000.0)
# The profile's range widened by this share of its span on each side.
DOMAIN_MARGIN = 0.1
# Probe rows: at most this many, and at most PROBE_ELEMENTS numbers per input
# and GOLDEN_OUTPUT_BYTES of outputs, so golden.npz stays small (at least one row).
PROBE_ROWS = 64
PROBE_ELEMENTS = 1_000_000
GOLDEN_OUTPUT_BYTES = 4 * 1024 * 1024
PROBE_SEED = 20240917
# Magnitudes tried beyond the domain, up to float32's largest.
LADDER = tuple(10.0**k for k in range(2, 39, 2)) + (FLOAT32_MAX,)
# Keras runs the reference on at most this many numbers at a time.
REFERENCE_CHUNK_ELEMENTS = 4_000_000


def _structure(model: keras.Model, role: str):
    """The model's inputs or outputs as it takes or gives them: a tensor, a list or a dict."""
    struct = getattr(model, f"_{role}_struct", None)
    if struct is None:  # A Sequential: one input, one output.
        struct = getattr(model, role)
        struct = struct[0] if len(struct) == 1 else struct
    return struct


def _named(struct, role: str) -> list[tuple[str, object]]:
    """``(name, tensor)`` in ``keras.tree.flatten`` order.

    Named by dict key, else by the layer that makes the tensor (an input's
    ``keras.Input(name=...)``, an output's last layer): names that survive
    saving and loading, unlike Keras' tensor names.
    """
    named = []
    for index, (path, tensor) in enumerate(keras.tree.flatten_with_path(struct)):
        if path and all(isinstance(part, str) for part in path):
            name = "/".join(path)
        else:
            history = getattr(tensor, "_keras_history", None)
            name = getattr(getattr(history, "operation", None), "name", None)
        named.append((name or f"{role}_{index}", tensor))
    names = [name for name, _ in named]
    if len(set(names)) != len(names):  # Several outputs of one layer.
        named = [(f"{name}_{i}", tensor) for i, (name, tensor) in enumerate(named)]
    return named


def tensor_specs(model: keras.Model) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The model's inputs and outputs, named as ``_named`` says."""

    def spec(name: str, tensor) -> TensorSpec:
        shape = (-1, *(-1 if n is None else int(n) for n in tuple(tensor.shape)[1:]))
        return TensorSpec(name, shape, str(tensor.dtype).removeprefix("<dtype: '").rstrip("'>"))

    inputs = _named(_structure(model, "inputs"), "input")
    outputs = _named(_structure(model, "outputs"), "output")
    return (
        tuple(spec(name, tensor) for name, tensor in inputs),
        tuple(spec(name, tensor) for name, tensor in outputs),
    )


def reference(model: keras.Model, feed: list[np.ndarray]) -> list[np.ndarray]:
    """Keras' outputs for inputs in the signature's order, run in chunks."""
    struct = _structure(model, "inputs")
    rows = len(feed[0])
    per_row = max(1, sum(int(np.prod(array.shape[1:])) for array in feed))
    step = max(1, REFERENCE_CHUNK_ELEMENTS // per_row)
    chunks = []
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, rows, step):
            part = [array[start : start + step] for array in feed]
            structured = keras.tree.pack_sequence_as(struct, part)
            outputs = keras.tree.flatten(model(structured, training=False))
            chunks.append([np.asarray(output) for output in outputs])
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def serving_function(model: keras.Model, inputs):
    """The model as a function of positional tensors in0, in1, … returning a dict of out0,
    out1, …, and the batch-polymorphic input signature to trace it with."""
    specs = [
        tf.TensorSpec(
            [None, *(None if n == -1 else n for n in spec.feature_shape)],
            tf.as_dtype(spec.dtype),
            name=f"in{i}",
        )
        for i, spec in enumerate(inputs)
    ]
    struct = _structure(model, "inputs")

    def serve(*tensors):
        outputs = model(keras.tree.pack_sequence_as(struct, list(tensors)), training=False)
        return {f"out{i}": output for i, output in enumerate(keras.tree.flatten(outputs))}

    return specs, serve


def convert(model: keras.Model, inputs) -> bytes:
    """Trace the model with a batch-polymorphic signature, freeze it, convert it to LiteRT."""
    specs, serve = serving_function(model, inputs)
    function = tf.function(serve, input_signature=specs).get_concrete_function()
    # Variables must be frozen into constants first: converted as resource
    # variables, the interpreter silently returns garbage.
    frozen = convert_variables_to_constants_v2(function)
    # absl: a deprecation notice about the trackable argument; tensorflow: "Assets written".
    with quiet_logger("absl"), quiet_logger("tensorflow"):
        return tf.lite.TFLiteConverter.from_concrete_functions([frozen], model).convert()


def input_domain(spec: TensorSpec, profile: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature low and high bounds for probes: the profile's range widened, else the
    default, within the dtype (float32 bounds for a float32 input, float64 for others)."""
    tensor_kind = spec.kind
    bound_type = np.float32 if spec.dtype == "float32" else np.float64
    if tensor_kind.family in ("bool", "bytes"):  # Strings are drawn from words, not bounds.
        return np.float64(0), np.float64(1)
    features = _profile_features(spec, profile or {})
    if features is None:
        low, high = DEFAULT_DOMAIN
        if tensor_kind.family == "int" and tensor_kind.bits <= 16:
            low, high = tensor_kind.low, tensor_kind.high
        low, high = max(low, tensor_kind.low), min(high, tensor_kind.high)
        return bound_type(low), bound_type(high)
    lows = np.array([feature["min"] for feature in features], dtype=np.float64)
    highs = np.array([feature["max"] for feature in features], dtype=np.float64)
    span = highs - lows
    margin = np.where(span > 0, span * DOMAIN_MARGIN, np.maximum(np.abs(highs), 1) * DOMAIN_MARGIN)
    lows = np.clip(lows - margin, tensor_kind.low, tensor_kind.high).astype(bound_type)
    highs = np.clip(highs + margin, tensor_kind.low, tensor_kind.high).astype(bound_type)
    shape = spec.example_shape if spec.size > 1 else ()
    return lows.reshape(shape), highs.reshape(shape)


def accepted_range(model, inputs, index: int, domains: dict) -> tuple[int, int] | None:
    """For an integer input whose domain Keras refuses in part (an embedding refuses ids past
    its vocabulary): the range it takes, found by bisection, and the domain narrowed to it.
    None when Keras takes the whole domain (or the input is not an integer)."""
    spec = inputs[index]
    if spec.kind.family != "int":
        return None
    low, high = int(np.min(domains[spec.name][0])), int(np.max(domains[spec.name][1]))

    def takes(value: int) -> bool:
        feed = middle_feed(inputs, domains, 1)
        feed[index] = np.full((1, *spec.example_shape), value, dtype=spec.kind.numpy)
        try:
            reference(model, feed)
        except Exception:  # noqa: BLE001 - TensorFlow refuses with many types.
            return False
        return True

    anchor = min(max(0, low), high)
    if not takes(anchor):
        raise ArtifactError(f"input {spec.name!r}: the model refuses {anchor}, its domain's base")
    if takes(low) and takes(high):
        return None
    while low < anchor and not takes(low):  # The lowest value it takes, above low.
        bad, good = low, anchor
        while good - bad > 1:
            middle = (bad + good) // 2
            bad, good = (bad, middle) if takes(middle) else (middle, good)
        low = good
    if not takes(high):
        good, bad = anchor, high
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if takes(middle) else (good, middle)
        high = good
    bound_type = domains[spec.name][0].dtype.type
    domains[spec.name] = (bound_type(low), bound_type(high))
    return (low, high)


def middle_feed(inputs, domains: dict, rows: int) -> list[np.ndarray]:
    """Every input at its domain's midpoint, ``rows`` times, in its dtype."""
    feed = []
    for spec in inputs:
        low, high = domains[spec.name]
        middle = np.broadcast_to(np.asarray(low / 2 + high / 2, np.float64), spec.example_shape)
        values = np.broadcast_to(middle, (rows, *spec.example_shape))
        feed.append(artifact.in_dtype(np.array(values), spec))
    return feed


def _profile_features(spec: TensorSpec, profile: dict) -> list[dict] | None:
    """The profile's entries for every feature of ``spec`` (training/profile.py names), or None."""
    if spec.open:  # Training profiles are per feature, of fixed-shape inputs only.
        return None
    names = [spec.name] if spec.size == 1 else [f"{spec.name}[{i}]" for i in range(spec.size)]
    features = [profile.get(name) for name in names]
    usable = all(
        isinstance(feature, dict)
        and all(
            isinstance(feature.get(key), int | float) and math.isfinite(feature[key])
            for key in ("min", "max")
        )
        and feature["min"] <= feature["max"]
        for feature in features
    )
    return features if usable else None


def probe_rows(inputs, outputs) -> int:
    """Rows of golden probes: bounded by count, input numbers and stored output bytes."""
    in_numbers = max(spec.size for spec in inputs)
    out_bytes = sum(spec.size * spec.kind.numpy.itemsize for spec in outputs)
    return max(1, min(PROBE_ROWS, PROBE_ELEMENTS // in_numbers, GOLDEN_OUTPUT_BYTES // out_bytes))


def choose_kernels(flatbuffer: bytes, inputs, outputs, feed, expected) -> tuple[str, str | None]:
    """The first of LiteRT's kernel sets that reproduces Keras on the probes, or why none does."""
    problems = []
    for kernels in artifact.KERNELS:
        runtime = LiteRTRuntime(flatbuffer, len(inputs), len(outputs), kernels)
        with np.errstate(over="ignore", invalid="ignore"):
            actual = runtime(feed)
        for spec, want, got in zip(outputs, expected, actual, strict=True):
            mismatch = artifact.golden_mismatch(want, got)
            if mismatch:
                problems.append(f"{kernels}: output {spec.name!r} {mismatch}")
                break
        else:
            return kernels, None
    return "", "; ".join(problems)


def valid_range(model, runtime, inputs, index: int, domains: dict) -> tuple[float, float] | None:
    """The symmetric range, beyond the domain, in which input ``index`` keeps LiteRT agreeing.

    The other inputs stay at their domain's midpoint. None when LiteRT agrees
    with Keras up to the dtype's largest value (and for booleans).
    """
    spec = inputs[index]
    tensor_kind = spec.kind
    if tensor_kind.family == "bool":
        return None
    low, high = domains[spec.name]
    agreed = float(max(np.max(np.abs(low)), np.max(np.abs(high)), 1.0))
    rng = np.random.default_rng(PROBE_SEED + index)
    largest = float(tensor_kind.high)
    steps = [min(magnitude, largest) for magnitude in (*LADDER[:-1], largest) if magnitude > agreed]
    steps = sorted(set(steps))
    per_step = 2 if spec.size > 10_000 else 4
    rows = []
    for magnitude in steps:
        signs = rng.choice(np.array([-1.0, 1.0]), (per_step - 1, *spec.example_shape))
        uniform = rng.uniform(0, 1, (per_step - 1, *spec.example_shape)) ** 0.25
        rows.append(np.full((1, *spec.example_shape), magnitude))
        rows.append(magnitude * signs * uniform)
    if not steps:
        return None
    probes = artifact.in_dtype(np.concatenate(rows), spec)
    feed = middle_feed(inputs, domains, len(probes))
    feed[index] = probes
    wrong = np.zeros(len(probes), dtype=bool)
    try:
        expected = reference(model, feed)
    except Exception:  # noqa: BLE001 - Keras refuses some of them: step by step, then.
        expected = None
    if expected is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            actual = runtime(feed)
        for want, got in zip(expected, actual, strict=True):
            wrong |= artifact.disagreement(want, got, strict=False)
    for position, magnitude in enumerate(steps):
        rows_of_step = slice(position * per_step, (position + 1) * per_step)
        if expected is None and not agrees_at(model, runtime, feed, rows_of_step):
            wrong[rows_of_step] = True
        if wrong[rows_of_step].any():
            return symmetric(agreed, tensor_kind)
        agreed = magnitude
    return None


def agrees_at(model, runtime, feed: list[np.ndarray], rows: slice) -> bool:
    """Whether LiteRT gives what Keras gives on some rows of ``feed``; False if Keras refuses."""
    part = [array[rows] for array in feed]
    try:
        expected = reference(model, part)
    except Exception:  # noqa: BLE001 - TensorFlow refuses with many types.
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        actual = runtime(part)
    return not any(
        artifact.disagreement(want, got, strict=False).any()
        for want, got in zip(expected, actual, strict=True)
    )


def symmetric(magnitude: float, tensor_kind) -> tuple:
    """(-magnitude, magnitude) within the dtype: integers for an integer input."""
    if tensor_kind.family == "int":
        whole = int(magnitude)
        return (max(-whole, tensor_kind.low), min(whole, tensor_kind.high))
    return (-magnitude, magnitude)


def compile_model(
    model: keras.Model, profile: dict | None = None, policy: CodePolicy = INSTALLED_ONLY
) -> CompiledModel:
    """The serving artifact for a Keras model, or ``ArtifactError`` saying why not in one line.

    LiteRT when it converts the model and reproduces Keras in its domain; else
    the TensorFlow runtime (a SavedModel, whose graph ``policy`` must allow), with
    the reason LiteRT was not used.
    """
    try:
        try:
            return compile_litert(model, profile)
        except LiteRTRefused as refusal:
            return compile_tensorflow(model, profile, str(refusal), policy)
    except ArtifactError:
        raise
    except Exception as error:  # Keras and the converter raise many types; any means "no".
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        problem = f"{type(error).__name__}: {first_line}"
        raise ArtifactError(f"cannot compile the model ({problem})") from None


class LiteRTRefused(ArtifactError):
    """LiteRT cannot serve the model as Keras computes it; TensorFlow's runtime may."""


def probes_and_reference(model, inputs, outputs, profile):
    """Each input's domain, the integer ranges the model takes, the probes drawn from the
    domains, and Keras' outputs for them (the golden outputs)."""
    domains = {spec.name: input_domain(spec, profile) for spec in inputs}
    accepted = {
        spec.name: found
        for i, spec in enumerate(inputs)
        if (found := accepted_range(model, inputs, i, domains)) is not None
    }
    probes = Probes(
        probe_rows(inputs, outputs),
        PROBE_SEED,
        {name: low for name, (low, _) in domains.items()},
        {name: high for name, (_, high) in domains.items()},
    )
    feed_by_name = probes.inputs(inputs)
    feed = [feed_by_name[spec.name] for spec in inputs]
    return domains, accepted, probes, feed, reference(model, feed)


def compile_litert(model: keras.Model, profile: dict | None) -> CompiledModel:
    inputs, outputs = tensor_specs(model)
    artifact.check_servable(inputs, outputs, "tensorflow")
    try:
        artifact.check_servable(inputs, outputs)
    except ArtifactError as error:  # A string tensor.
        raise LiteRTRefused(str(error)) from None
    try:
        flatbuffer = convert_quietly(model, inputs)
    except Exception as error:  # The converter raises many types; any means "no".
        unrolled = unrolled_clone(model)
        try:
            if unrolled is None:
                raise
            flatbuffer = convert_quietly(unrolled, inputs)
        except Exception:  # noqa: BLE001 - the first error says why.
            problem = converter_problem(error)
            raise LiteRTRefused(f"LiteRT cannot convert the model ({problem})") from None
    domains, accepted, probes, feed, expected = probes_and_reference(
        model, inputs, outputs, profile
    )
    kernels, problem = choose_kernels(flatbuffer, inputs, outputs, feed, expected)
    if problem:
        raise LiteRTRefused(f"LiteRT does not reproduce Keras within the input domain: {problem}")
    runtime = LiteRTRuntime(flatbuffer, len(inputs), len(outputs), kernels)
    ranged = tuple(
        TensorSpec(
            spec.name,
            spec.shape,
            spec.dtype,
            accepted.get(spec.name) or valid_range(model, runtime, inputs, i, domains),
        )
        for i, spec in enumerate(inputs)
    )
    return CompiledModel(flatbuffer, ranged, outputs, probes, golden(outputs, expected), kernels)


def compile_tensorflow(
    model: keras.Model, profile: dict | None, why: str, policy: CodePolicy = INSTALLED_ONLY
) -> CompiledModel:
    """The model as a SavedModel for the TensorFlow runtime, which must reproduce Keras on
    the probes as LiteRT would have had to. ``why``: what kept it off LiteRT."""
    from app.runtime.tensorflow_runtime import TensorFlowRuntime

    inputs, outputs = tensor_specs(model)
    files = export_saved_model(model, inputs)
    refused = first_denied(files[SAVED_MODEL_FILE], policy.graph_ops)
    if refused:
        raise ArtifactError(f"the TensorFlow runtime's SavedModel cannot be served: {refused}")
    _, accepted, probes, feed, expected = probes_and_reference(model, inputs, outputs, profile)
    runtime = TensorFlowRuntime(files, len(inputs), len(outputs))
    for spec, want, got in zip(outputs, expected, runtime(feed), strict=True):
        mismatch = artifact.golden_mismatch(want, got)
        if mismatch:
            raise ArtifactError(
                f"the SavedModel does not reproduce Keras: {spec.name!r} {mismatch}"
            )
    ranged = tuple(
        TensorSpec(spec.name, spec.shape, spec.dtype, accepted.get(spec.name)) for spec in inputs
    )
    return CompiledModel(
        b"", ranged, outputs, probes, golden(outputs, expected), "builtin", "tensorflow", files, why
    )


def export_saved_model(model: keras.Model, inputs) -> dict[str, bytes]:
    """The model as a SavedModel with one ``serve`` endpoint (``serving_function``): its
    files' bytes by relative path."""
    specs, serve = serving_function(model, inputs)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=serve, input_signature=specs)
    with (
        tempfile.TemporaryDirectory() as directory,
        quiet_logger("absl"),
        quiet_logger("tensorflow"),
    ):
        archive.write_out(directory, verbose=False)
        root = Path(directory)
        return {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }


def golden(outputs, expected) -> dict[str, np.ndarray]:
    return {
        spec.name: output.astype(spec.kind.numpy)
        for spec, output in zip(outputs, expected, strict=True)
    }


def convert_quietly(model: keras.Model, inputs) -> bytes:
    """``convert``, with the converter's MLIR diagnostics (printed on stderr) logged at debug."""
    with native_stderr_logged():
        return convert(model, inputs)


def unrolled_clone(model: keras.Model) -> keras.Model | None:
    """The model with its recurrent layers unrolled, which LiteRT's builtins can run
    (a loop over a fixed number of steps, not TensorFlow's tensor lists); None when it
    has none, or a sequence length it leaves open."""
    recurrent = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.RNN)]
    if not recurrent:
        return None

    def unrolled(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.RNN):
            config["unroll"] = True
        return layer.__class__.from_config(config)

    try:
        clone = keras.models.clone_model(model, clone_function=unrolled)
    except (ValueError, TypeError):  # An open length cannot unroll; a subclassed model.
        return None
    clone.set_weights(model.get_weights())
    return clone


def converter_problem(error: Exception) -> str:
    """The converter's error in one line: the TensorFlow ops LiteRT's builtins lack, or the
    op it stopped at, when that is the cause; else its first line."""
    text = str(error)
    missing = re.search(r"TF Select ops: ([^\n]+)", text)
    if missing:
        return f"LiteRT's builtin ops lack the TensorFlow ops {missing.group(1).strip()}"
    stopped = re.search(r"'tf\.(\w+)' op ([^\n]+)", text)
    if stopped:
        return f"TensorFlow's {stopped.group(1)} op {stopped.group(2).strip()}"[:300]
    return (text.strip().splitlines() or [""])[0][:300]


def compile_version(
    version_dir: Path, profile: dict | None = None, policy: CodePolicy = INSTALLED_ONLY
) -> CompiledModel:
    """Compile the saved model in ``version_dir`` and write the artifact beside it, running
    only the code and graph ops ``policy`` allows.

    Probes come from ``profile``, else from the version's ``metadata.json``
    input profile when it has one.
    """
    try:
        model_path = find_model_file(version_dir)
    except StoreError as error:
        raise ArtifactError(str(error)) from error
    model = load_model(model_path, policy)
    if profile is None:
        profile = saved_profile(version_dir)
    compiled = compile_model(model, profile, policy)
    hashed = model_path / SAVED_MODEL_FILE if model_path.is_dir() else model_path
    source = {
        "file": hashed.relative_to(version_dir).as_posix(),
        "sha256": artifact.sha256_file(hashed, artifact.MAX_ARTIFACT_BYTES),
        "tensorflow": tf.__version__,
        "probes": "training profile" if profile else f"default domain {list(DEFAULT_DOMAIN)}",
    }
    artifact.write(version_dir, compiled, source)
    return compiled


def saved_profile(version_dir: Path) -> dict | None:
    """The input profile in a version's ``metadata.json``, if it has a readable one."""
    try:
        profile = json.loads((version_dir / "metadata.json").read_text()).get("input_profile")
    except (OSError, ValueError, AttributeError):
        return None
    return profile if isinstance(profile, dict) else None


@contextmanager
def quiet_logger(name: str):
    """Drop a library logger's records below ERROR for the duration."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
