"""Load a saved Keras model once and serve it through a traced, warmed-up function."""

import logging
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from app.store import ModelVersion, StoreError, list_versions

log = logging.getLogger(__name__)

# Warm-up batch sizes: the single-instance path and a typical large batch.
WARMUP_BATCH_SIZES = (1, 2, 1000)


class ModelLoadError(Exception):
    """A model version could not be loaded, checked or warmed up."""


def configure_tensorflow_threads(threads: int) -> None:
    """Size TensorFlow's thread pools; call in a worker before any op runs."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


class ModelRunner:
    """A loaded model version: ``predict(array) -> array`` plus its metadata.

    Loading does all the expensive work once (read the file, check the
    signature, trace a concrete function with a fixed input signature, warm
    it up), so ``predict`` is one call into the compiled graph.
    """

    runtime = "tensorflow"

    def __init__(self, version: ModelVersion, metadata: dict, model: keras.Model):
        self.version = version
        self.metadata = metadata
        self.load_seconds = 0.0
        self._model = model
        self._input_rank = len(model.inputs[0].shape)
        self._function = self._trace(model, self._input_rank)
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

    @staticmethod
    def _trace(model: keras.Model, input_rank: int):
        shape = [None, 1] if input_rank == 2 else [None]
        function = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec(shape, tf.float32)],
            reduce_retracing=True,
        )
        return function.get_concrete_function()

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
        with self._lock:
            output = self._function(tf.constant(batch, dtype=tf.float32))
        return output.numpy().reshape(-1)

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
            log.warning("skipping model version %s: %s", version.number, error)
            failures.append(str(error))
    raise ModelLoadError("; ".join(failures))
