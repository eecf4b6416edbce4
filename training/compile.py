"""Compile a saved Keras model into the serving artifact: ``python -m training compile DIR``.

The artifact (app/artifact.py) is a LiteRT flatbuffer with its signature and
golden outputs, so the server never needs TensorFlow. Golden inputs span
zero, small, large and negative values and the extremes of float32 that the
API admits; golden outputs are what Keras itself computes for them.
"""

import argparse
import hashlib
import logging
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from app import artifact
from app.artifact import ArtifactError, CompiledModel, TensorSpec
from app.store import StoreError, find_model_file

log = logging.getLogger("training")

# Probe magnitudes: zero, float32's smallest, everyday values, and its largest.
PROBE_MAGNITUDES = (0.0, 1e-45, 1e-38, 1e-6, 0.5, 1.0, 3.0, 10.0, 1e3, 1e6, 1e12, 1e30, 1e38)
RANDOM_PROBES = 64


def load_keras_model(path: Path) -> keras.Model:
    with warnings.catch_warnings():
        # Keras warns that HDF5 is legacy; the notebook's .h5 is what we have.
        warnings.simplefilter("ignore", UserWarning)
        return keras.models.load_model(path, compile=False)


def tensor_specs(model: keras.Model) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The model's inputs and outputs, named as Keras names them (auto names replaced)."""

    def spec(tensor, name: str) -> TensorSpec:
        shape = (-1, *(-1 if n is None else int(n) for n in tuple(tensor.shape)[1:]))
        return TensorSpec(name, shape, str(tensor.dtype).removeprefix("<dtype: '").rstrip("'>"))

    inputs = tuple(
        spec(tensor, tensor.name if not tensor.name.startswith("keras_tensor") else f"input_{i}")
        for i, tensor in enumerate(model.inputs)
    )
    # Functional models name their outputs; a Sequential's one output is its last layer.
    output_names = list(getattr(model, "output_names", None) or [model.layers[-1].name])
    outputs = tuple(
        spec(tensor, output_names[i] if i < len(output_names) else f"output_{i}")
        for i, tensor in enumerate(model.outputs)
    )
    return inputs, outputs


def golden_inputs(inputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """Probe rows: every magnitude with both signs in every feature, then seeded random rows."""
    magnitudes = np.array(PROBE_MAGNITUDES + (artifact.FLOAT32_MAX,), dtype=np.float32)
    values = np.concatenate([magnitudes, -magnitudes[1:]])
    rng = np.random.default_rng(0)
    probes = {}
    for spec in inputs:
        features = spec.feature_shape
        constant_rows = np.broadcast_to(
            values.reshape(-1, *[1] * len(features)), (len(values), *features)
        )
        random_rows = rng.uniform(-1000, 1000, (RANDOM_PROBES, *features))
        probes[spec.name] = np.concatenate([constant_rows, random_rows]).astype(np.float32)
    return probes


def convert(model: keras.Model, inputs) -> bytes:
    """Trace the model with a batch-polymorphic signature, freeze it, convert it to LiteRT."""
    specs = [
        tf.TensorSpec([None, *spec.feature_shape], tf.float32, name=f"in{i}")
        for i, spec in enumerate(inputs)
    ]

    def serve(*tensors):
        outputs = model(list(tensors) if len(tensors) > 1 else tensors[0], training=False)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        return {f"out{i}": output for i, output in enumerate(outputs)}

    function = tf.function(serve, input_signature=specs).get_concrete_function()
    # Variables must be frozen into constants first: converted as resource
    # variables, the interpreter silently returns garbage.
    frozen = convert_variables_to_constants_v2(function)
    # absl: a deprecation notice about the trackable argument; tensorflow: "Assets written".
    with quiet_logger("absl"), quiet_logger("tensorflow"):
        return tf.lite.TFLiteConverter.from_concrete_functions([frozen], model).convert()


def compile_model(model: keras.Model) -> CompiledModel:
    """The serving artifact for a Keras model, or ``ArtifactError`` saying why not."""
    inputs, outputs = tensor_specs(model)
    artifact.check_servable(inputs, outputs)
    try:
        flatbuffer = convert(model, inputs)
    except Exception as error:  # The converter raises many types; any means "no".
        raise ArtifactError(f"LiteRT cannot convert the model ({error})") from error
    probes = golden_inputs(inputs)
    feed = [probes[spec.name] for spec in inputs]
    with np.errstate(over="ignore", invalid="ignore"):
        results = model(feed if len(feed) > 1 else feed[0], training=False)
    results = results if isinstance(results, list | tuple) else [results]
    golden = {
        spec.name: np.asarray(result, dtype=np.float32)
        for spec, result in zip(outputs, results, strict=True)
    }
    return CompiledModel(flatbuffer, inputs, outputs, probes, golden)


def compile_version(version_dir: Path) -> CompiledModel:
    """Compile the saved model in ``version_dir`` and write the artifact beside it."""
    try:
        model_file = find_model_file(version_dir)
        model = load_keras_model(model_file)
    except StoreError as error:
        raise ArtifactError(str(error)) from error
    except Exception as error:  # Keras raises many types for a bad file.
        raise ArtifactError(f"{model_file}: cannot load model ({error})") from error
    compiled = compile_model(model)
    source = {
        "file": model_file.name,
        "sha256": sha256_file(model_file),
        "tensorflow": tf.__version__,
    }
    artifact.write(version_dir, compiled, source)
    return compiled


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training compile",
        description="Write the serving artifact (model.tflite, signature.json) for saved versions.",
    )
    parser.add_argument("version_dirs", nargs="+", type=Path, help="version directories")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for version_dir in args.version_dirs:
        try:
            compiled = compile_version(version_dir)
        except ArtifactError as error:
            print(f"cannot compile {version_dir}: {error}", file=sys.stderr)
            return 1
        log.info(
            "compiled %s (%s, sha256 %s)",
            version_dir,
            artifact.FLATBUFFER_FILE,
            compiled.sha256[:12],
        )
    return 0
