"""Serve a compiled model version through LiteRT, with no TensorFlow in the process."""

import threading
from dataclasses import dataclass, field

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from app.artifact import CompiledModel, golden_mismatch
from app.store import ModelVersion

# Warm-up batch sizes: the single-instance path and a typical large batch.
WARMUP_BATCH_SIZES = (1000, 2, 1)


class ModelLoadError(Exception):
    """A model version could not be loaded, checked or warmed up."""


@dataclass
class ModelBundle:
    """A verified version as the master holds it: bytes and facts, no runtime.

    The Gunicorn master keeps one and every worker it forks builds its
    runtime from it, so a worker never reads a file to start serving.
    """

    version: ModelVersion
    metadata: dict
    compiled: CompiledModel
    # "compiled" (read from the version's artifact) or "converted at load".
    artifact_source: str
    load_seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    # For a version from an MLflow registry: its name, version, alias, run id, and
    # whether it came from the registry or (at a start without it) from the cache.
    registry: dict | None = None


class LiteRTRuntime:
    """The LiteRT interpreter over the flatbuffer: a few µs a call."""

    name = "litert"

    def __init__(self, compiled: CompiledModel):
        # Without the default XNNPACK delegate: faster for models this small (1.3
        # against 1.4 µs a call here), and it prints nothing at creation.
        self._interpreter = Interpreter(
            model_content=compiled.flatbuffer,
            num_threads=1,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        # The converter names tensors in0.. and output_0.., in the Keras order.
        (signature,) = self._interpreter._get_full_signature_list().values()
        self._inputs = [signature["inputs"][f"in{i}"] for i in range(len(compiled.inputs))]
        self._outputs = [signature["outputs"][f"output_{i}"] for i in range(len(compiled.outputs))]
        self._batch = None

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One output array per output tensor for float32 input arrays of one batch size."""
        interpreter = self._interpreter
        batch = len(inputs[0])
        if batch != self._batch:
            for index, array in zip(self._inputs, inputs, strict=True):
                interpreter.resize_tensor_input(index, array.shape)
            interpreter.allocate_tensors()
            self._batch = batch
        for index, array in zip(self._inputs, inputs, strict=True):
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        # get_tensor copies: the caller's arrays outlive the next call.
        return [interpreter.get_tensor(index) for index in self._outputs]


class ModelRunner:
    """A servable version in this process: ``predict(array) -> array`` plus its facts."""

    def __init__(self, bundle: ModelBundle):
        self.bundle = bundle
        self.version = bundle.version
        self.metadata = bundle.metadata
        self.compiled = bundle.compiled
        self._runtime = LiteRTRuntime(bundle.compiled)
        (self._input,) = bundle.compiled.inputs[:1]
        # Neither the interpreter nor its tensors may be used from two threads at once.
        self._lock = threading.Lock()
        # Set in a worker that serves it: the input monitor (app/monitoring.py).
        self.monitor = None

    @classmethod
    def build(cls, bundle: ModelBundle) -> "ModelRunner":
        """A runner that reproduces the golden outputs and is warmed up, or ``ModelLoadError``."""
        try:
            runner = cls(bundle)
        except Exception as error:  # The interpreter raises ValueError and RuntimeError.
            raise ModelLoadError(
                f"{bundle.version.path}: LiteRT cannot load it ({error})"
            ) from error
        runner.check_golden()
        runner.warm_up()
        return runner

    def check_golden(self) -> None:
        """Refuse a runtime that does not reproduce the reference model's outputs."""
        compiled = self.compiled
        feed = [compiled.golden_inputs[spec.name] for spec in compiled.inputs]
        # As one batch and one row at a time: kernels may differ with the batch size.
        with np.errstate(over="ignore", invalid="ignore"):
            batched = self.run(feed)
            single = [self.run([array[i : i + 1] for array in feed]) for i in range(len(feed[0]))]
        for position, spec in enumerate(compiled.outputs):
            expected = compiled.golden_outputs[spec.name]
            one_by_one = np.concatenate([outputs[position] for outputs in single])
            for actual in (batched[position], one_by_one):
                problem = golden_mismatch(expected, actual)
                if problem:
                    raise ModelLoadError(
                        f"{self.version.path}: the runtime does not reproduce the golden "
                        f"outputs: output {spec.name!r} {problem}"
                    )

    def warm_up(self) -> None:
        """Run every warm-up batch size once, ending on the single-instance path."""
        for size in WARMUP_BATCH_SIZES:
            feed = [
                np.zeros((size, *spec.feature_shape), dtype=np.float32)
                for spec in self.compiled.inputs
            ]
            self.run(feed)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """All outputs for float32 inputs in the signature's order, in one call."""
        with self._lock:
            return self._runtime(inputs)

    def predict(self, instances: np.ndarray) -> np.ndarray:
        """One float32 output per float32 input, for a one-number-in, one-number-out model."""
        batch = instances.reshape(-1, *self._input.feature_shape)
        with self._lock:
            return self._runtime([batch])[0].reshape(-1)

    @property
    def scalar(self) -> bool:
        """Whether the model takes one number and gives one number, as /predict expects."""
        compiled = self.compiled
        return (
            len(compiled.inputs) == 1
            and len(compiled.outputs) == 1
            and compiled.inputs[0].feature_shape in ((), (1,))
            and compiled.outputs[0].feature_shape in ((), (1,))
        )

    @property
    def runtime(self) -> str:
        return self._runtime.name

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def number(self) -> int:
        return self.version.number

    @property
    def load_seconds(self) -> float:
        return self.bundle.load_seconds
