"""Load a saved Keras model once and serve it through the fastest runtime that agrees."""

import logging
import threading
import time
from contextlib import contextmanager

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from app.store import ModelVersion, StoreError, list_versions

log = logging.getLogger(__name__)

# Warm-up batch sizes: the single-instance path and a typical large batch.
WARMUP_BATCH_SIZES = (1, 2, 1000)

# How closely the fast runtime must match TensorFlow on the probe inputs:
# float32 rounding, a few units in the last place.
AGREEMENT_RTOL = 1e-5
AGREEMENT_ATOL = 1e-6


class ModelLoadError(Exception):
    """A model version could not be loaded, checked or warmed up."""


def configure_tensorflow_threads(threads: int) -> None:
    """Size TensorFlow's thread pools; call in a worker before any op runs."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


class TensorFlowRuntime:
    """The traced concrete function: TensorFlow's fastest call, kept as the reference."""

    name = "tensorflow"

    def __init__(self, model: keras.Model, input_rank: int):
        shape = [None, 1] if input_rank == 2 else [None]
        function = tf.function(
            lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)]
        )
        self.concrete_function = function.get_concrete_function()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.concrete_function(tf.constant(batch)).numpy()


class LiteRTRuntime:
    """The same graph, frozen and converted to LiteRT: about 2 µs a call instead of 400."""

    name = "litert"

    def __init__(self, reference: TensorFlowRuntime):
        # Variables must be frozen into constants first: converted as resource
        # variables, the interpreter silently returns garbage.
        frozen = convert_variables_to_constants_v2(reference.concrete_function)
        with quiet_logger("absl"):  # A deprecation notice about an argument that needs I/O.
            flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert()
        # Without the default XNNPACK delegate: faster for models this small (1.3
        # against 1.4 µs a call here), and it prints nothing at creation.
        self._interpreter = Interpreter(
            model_content=flatbuffer,
            num_threads=1,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input, batch.shape)
            self._interpreter.allocate_tensors()
            self._shape = batch.shape
        self._interpreter.set_tensor(self._input, batch)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)


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


def fastest_runtime(model: keras.Model, input_rank: int, version: ModelVersion):
    """LiteRT when the model converts and agrees with TensorFlow, else TensorFlow."""
    reference = TensorFlowRuntime(model, input_rank)
    try:
        candidate = LiteRTRuntime(reference)
        for probe in agreement_probes(input_rank):
            expected, actual = reference(probe), candidate(probe)
            if not np.allclose(actual, expected, rtol=AGREEMENT_RTOL, atol=AGREEMENT_ATOL):
                raise ValueError("LiteRT output differs from TensorFlow's")
    except Exception as error:  # The converter raises many types; any means "no".
        log.warning("version %s: serving with TensorFlow, not LiteRT: %s", version.number, error)
        return reference
    return candidate


def agreement_probes(input_rank: int) -> list[np.ndarray]:
    """Inputs spanning small and large magnitudes, as one batch and one at a time."""
    values = np.concatenate([np.linspace(-1000, 1000, 999), [0.0]]).astype(np.float32)
    batches = [values, values[:1], values[-1:]]
    return [b.reshape(-1, 1) if input_rank == 2 else b for b in batches]


class ModelRunner:
    """A loaded model version: ``predict(array) -> array`` plus its metadata.

    Loading does all the expensive work once (read the file, check the
    signature, trace, convert, check agreement, warm up), so ``predict`` is
    one call into a compiled runtime.
    """

    def __init__(self, version: ModelVersion, metadata: dict, model: keras.Model):
        self.version = version
        self.metadata = metadata
        self.load_seconds = 0.0
        self._input_rank = len(model.inputs[0].shape)
        self._runtime = fastest_runtime(model, self._input_rank, version)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, version: ModelVersion) -> "ModelRunner":
        """Load, check and warm up one version, or raise ``ModelLoadError``."""
        started = time.perf_counter()
        try:
            metadata = version.read_metadata()
            path = version.model_file
            model = keras.models.load_model(path, compile=False)
        except StoreError as error:
            raise ModelLoadError(str(error)) from error
        except Exception as error:  # Keras raises many types for a bad file.
            raise ModelLoadError(f"{version.path}: cannot load model ({error})") from error
        check_signature(model, version)
        runner = cls(version, metadata, model)
        runner.warm_up()
        runner.load_seconds = time.perf_counter() - started
        return runner

    def warm_up(self) -> None:
        """Run every warm-up batch size once and check the output shape."""
        for size in WARMUP_BATCH_SIZES:
            output = self.predict(np.linspace(-1.0, 1.0, size, dtype=np.float32))
            if output.shape != (size,):
                raise ModelLoadError(
                    f"{self.version.path}: model returned shape {output.shape} for {size} inputs"
                )

    def predict(self, instances: np.ndarray) -> np.ndarray:
        """Predict one float32 output per float32 input in a single call."""
        batch = instances.reshape(-1, 1) if self._input_rank == 2 else instances
        # Neither runtime may be called from two threads at once.
        with self._lock:
            return self._runtime(batch).reshape(-1)

    @property
    def runtime(self) -> str:
        return self._runtime.name

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def number(self) -> int:
        return self.version.number


def check_signature(model: keras.Model, version: ModelVersion) -> None:
    """Accept only models with one numeric input and one numeric output."""
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(
            f"{version.path}: expected one input and one output, "
            f"got {len(inputs)} inputs and {len(outputs)} outputs"
        )
    for role, tensor in (("input", inputs[0]), ("output", outputs[0])):
        feature_shape = tuple(tensor.shape)[1:]
        if feature_shape not in ((), (1,)):
            raise ModelLoadError(
                f"{version.path}: expected a single numeric {role}, got shape {tuple(tensor.shape)}"
            )


def load_newest(model_dir, pinned_version: int | None = None) -> tuple[ModelRunner, list[str]]:
    """Load the newest version that loads, or exactly ``pinned_version``.

    Returns the runner and one message per newer version that failed, so a
    broken new version never takes the service down while an older one works.
    Raises ``ModelLoadError`` when nothing can be served.
    """
    try:
        versions = list_versions(model_dir)
    except StoreError as error:
        raise ModelLoadError(str(error)) from error
    if pinned_version is not None:
        versions = [version for version in versions if version.number == pinned_version]
        if not versions:
            raise ModelLoadError(f"{model_dir}: pinned MODEL_VERSION {pinned_version} not found")
    failures = []
    for version in versions:
        try:
            return ModelRunner.load(version), failures
        except ModelLoadError as error:
            failures.append(str(error))
    raise ModelLoadError("; ".join(failures))
