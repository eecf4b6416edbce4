"""A version in memory: the verified bundle the master holds, the runner a worker serves."""

import threading
import time
from dataclasses import dataclass, field, replace
from importlib.util import find_spec

import numpy as np

from app.runtime.artifact import CompiledModel, golden_mismatch
from app.runtime.litert import LiteRTRuntime
from app.runtime.rollout import Rollout
from app.runtime.store import ModelVersion

# The install that brings TensorFlow's runtime to the server (app/runtime/tensorflow_runtime.py).
EXTRA = "pip install 'model-server[tensorflow]' (the image: --build-arg SERVE_EXTRAS=tensorflow)"

# An inference expected to take longer than this runs off the worker's event loop
# (when the worker offers a thread): shorter ones cost less than the hand-over.
OFFLOAD_SECONDS = 0.005
# One expected to take this long or longer (and run on the loop) lets the loop take a
# turn first: a probe then waits behind one such inference, not behind a round of them.
TURN_SECONDS = 0.001


class ModelLoadError(Exception):
    """A model version could not be loaded, checked or warmed up."""


@dataclass
class ModelBundle:
    """A verified version as the master holds it: bytes and facts, and perhaps a runtime.

    The Gunicorn master keeps one and every worker it forks builds its
    runtime from it, so a worker never reads a file to start serving; or
    takes the LiteRT runtime the master built (``share_runtime``), whose
    packed weights it then shares with its siblings.
    """

    version: ModelVersion
    metadata: dict
    compiled: CompiledModel
    # "compiled" (read from the version's artifact) or "converted at load".
    artifact_source: str
    load_seconds: float = 0.0
    # What one request may carry (app/runtime/limits.py), known once loaded.
    max_batch: int = 1
    max_body_bytes: int = 1024 * 1024
    # How long the loader's trial of the largest batch took.
    largest_batch_seconds: float = 0.0
    # An inference's time per number it is given, from the loader's trials (the largest
    # batch, and for open dimensions one instance as long as that batch).
    seconds_per_element: float = 0.0
    # Why newer versions did not load: at most ten messages, and how many there were.
    skipped: list[str] = field(default_factory=list)
    failure_count: int = 0
    # For a version from an MLflow registry: its name, version, alias, run id, and
    # whether it came from the registry or (at a start without it) from the cache.
    registry: dict | None = None
    # For a version from an object store (s3:// MODEL_DIR): its URI, and whether it
    # came from the store or (at a start without it) from the cache's mirror.
    store: dict | None = None
    # A LiteRT runtime built in the master before the fork (share_runtime).
    shared_runtime: LiteRTRuntime | None = None
    # The older versions a repository's version policy serves beside this, newest first.
    older: list["ModelBundle"] = field(default_factory=list)
    # The policy's rollout over the versions served: labels, weights and a shadow.
    rollout: Rollout = field(default_factory=Rollout)

    @property
    def served(self) -> list["ModelBundle"]:
        """Every version served under this model's name, newest (this one) first."""
        return [self, *self.older]

    @property
    def size_bytes(self) -> int:
        """The artifact bytes of every version served."""
        return sum(bundle.compiled.size_bytes for bundle in self.served)

    def share_runtime(self, threads: int) -> None:
        """In the master: build the LiteRT runtime once, for the workers it forks.

        XNNPACK repacks a model's weights into memory of its own when the
        runtime is built: built in each worker, every worker held a private
        copy (ResNet50: 97 MiB each); built before the fork, the workers share
        the master's pages, since packed weights are only ever read. Each worker
        resizes its copy, so its activations are its own. Only one thread: a
        thread pool does not survive a fork. The TensorFlow runtime is built in
        each worker, after gevent has patched it.
        """
        for bundle in self.served:
            bundle.shared_runtime = None
            if bundle.compiled.runtime == "litert" and threads == 1:
                bundle.shared_runtime = runtime_for(bundle.compiled, threads)

    def without_runtime(self) -> "ModelBundle":
        """A copy to pickle: no runtime, which a pickle cannot carry."""
        older = [replace(bundle, shared_runtime=None) for bundle in self.older]
        return replace(self, shared_runtime=None, older=older)


def runtime_for(compiled: CompiledModel, threads: int):
    """The runtime the version was compiled for, built from its bytes.

    LiteRT comes with the server; TensorFlow only with its extra, and a
    version that needs it is refused in one line naming the install.
    """
    if compiled.runtime == "tensorflow":
        if find_spec("tensorflow") is None:
            raise ModelLoadError(f"it needs the TensorFlow runtime ({compiled.why}): {EXTRA}")
        from app.runtime.tensorflow_runtime import TensorFlowRuntime

        return TensorFlowRuntime(
            compiled.saved_model, len(compiled.inputs), len(compiled.outputs), threads
        )
    return LiteRTRuntime(
        compiled.flatbuffer, len(compiled.inputs), len(compiled.outputs), compiled.kernels, threads
    )


def elements(inputs: list[np.ndarray]) -> int:
    """How many numbers (or strings) ``inputs`` hold."""
    return sum(array.size for array in inputs)


class ModelRunner:
    """A servable version in this process: ``run(arrays) -> arrays`` plus its facts."""

    def __init__(self, bundle: ModelBundle, threads: int = 1):
        self.bundle = bundle
        self.version = bundle.version
        self.metadata = bundle.metadata
        self.compiled = bundle.compiled
        self._runtime = bundle.shared_runtime or runtime_for(bundle.compiled, threads)
        # Neither the interpreter nor its tensors may be used by two requests at
        # once; the gevent worker swaps in its turns (app/ops/worker.py).
        self.turns = threading.Lock()
        # Set by the gevent worker: ``offload(function, inputs)`` runs a long inference
        # in a thread, so the worker's loop answers probes and heartbeats meanwhile;
        # ``yield_to_ready()`` returns once the connections ready now have run: an
        # inference too short to offload waits for it, so a probe waits behind one.
        self.offload = None
        self.yield_to_ready = None
        # Set in a worker that serves it: the input monitor (app/ops/monitoring.py).
        self.monitor = None
        # The older versions a version policy serves beside this one, by number.
        self.older: dict[int, ModelRunner] = {}
        # The last inference's seconds waiting for its turn and computing.
        self.timings = (0.0, 0.0)
        # Set in a worker when a shadow compares this version's inferences: the shadow's
        # runner, its sample and the worker's queue of copies (app/core/shadow.py).
        self.shadow = None

    @classmethod
    def build(cls, bundle: ModelBundle, threads: int = 1, full_check: bool = True):
        """A runner that reproduces the golden outputs, or ``ModelLoadError``.

        ``full_check`` (the loader, once per version): every golden row, as
        one batch and one at a time, then a trial at the largest batch a
        request can carry. Otherwise (a worker, after the loader passed): the
        first golden row only, which also warms the single-instance path, so
        a worker is ready in milliseconds.
        """
        try:
            runner = cls(bundle, threads)
        except ModelLoadError:
            raise
        except Exception as error:  # The runtimes raise ValueError, RuntimeError, more.
            runtime = "TensorFlow" if bundle.compiled.runtime == "tensorflow" else "LiteRT"
            first_line = (str(error).strip().splitlines() or [""])[0][:300]
            raise ModelLoadError(
                f"{bundle.version.path}: {runtime} cannot load it ({first_line})"
            ) from error
        if full_check:
            runner.check_golden(batched=True)
            largest = runner.trial_inputs(bundle.max_batch)
            bundle.largest_batch_seconds = runner.timed(largest)
            bundle.seconds_per_element = bundle.largest_batch_seconds / elements(largest)
            if bundle.compiled.open:
                runner.time_long_instance(elements(largest))
        runner.check_golden(batched=False, rows=None if full_check else 1)
        return runner

    def timed(self, inputs: list[np.ndarray]) -> float:
        """Seconds one inference of ``inputs`` takes."""
        started = time.perf_counter()
        self.run(inputs)
        return time.perf_counter() - started

    def time_long_instance(self, count: int) -> None:
        """Raise ``seconds_per_element`` to one instance's of ``count`` numbers, its open
        dimensions stretched: a step of a sequence can cost more than a row of a batch
        (an LSTM's steps run one after another). A model that refuses the length keeps
        the batch's figure."""
        inputs, stretch = [], max(1, count // elements(self.trial_inputs(1)))
        for spec, array in zip(self.compiled.inputs, self.trial_inputs(1), strict=True):
            if spec.open:
                axis = 1 + spec.feature_shape.index(-1)
                array = np.repeat(array, stretch, axis=axis)
            inputs.append(array)
        try:
            seconds = self.timed(inputs)
        except Exception:  # noqa: BLE001 - any refusal of the length means "no figure".
            return
        bundle = self.bundle
        bundle.seconds_per_element = max(bundle.seconds_per_element, seconds / elements(inputs))

    def check_golden(self, batched: bool, rows: int | None = None) -> None:
        """Refuse a runtime that does not reproduce the reference model's outputs.

        As one batch, or one row at a time (kernels may differ with the batch size).
        """
        compiled = self.compiled
        feed = [compiled.golden_inputs[spec.name][:rows] for spec in compiled.inputs]
        with np.errstate(over="ignore", invalid="ignore"):
            if batched:
                actual = self.run(feed)
            else:
                single = [
                    self.run([array[i : i + 1] for array in feed]) for i in range(len(feed[0]))
                ]
                actual = [np.concatenate(outputs) for outputs in zip(*single, strict=True)]
        for spec, output in zip(compiled.outputs, actual, strict=True):
            problem = golden_mismatch(compiled.golden_outputs[spec.name][:rows], output)
            if problem:
                raise ModelLoadError(
                    f"{self.version.path}: the runtime does not reproduce the golden "
                    f"outputs: output {spec.name!r} {problem}"
                )

    def trial_inputs(self, batch: int) -> list[np.ndarray]:
        """``batch`` instances the model takes: the first golden probe (each input's
        midpoint), repeated."""
        golden = self.compiled.golden_inputs
        return [np.repeat(golden[spec.name][:1], batch, axis=0) for spec in self.compiled.inputs]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """All outputs for float32 inputs in the signature's order, in one call.

        One that should take OFFLOAD_SECONDS or more (by the loader's trials, for the
        numbers it is given) runs through ``offload`` when the worker sets one; one of
        TURN_SECONDS or more first waits for ``yield_to_ready``.
        """
        asked = time.perf_counter()
        with self.turns:
            expected = self.expected_seconds(inputs)
            if self.yield_to_ready is not None and TURN_SECONDS <= expected < OFFLOAD_SECONDS:
                self.yield_to_ready()
            started = time.perf_counter()
            if self.offload is not None and expected >= OFFLOAD_SECONDS:
                outputs = self.offload(self._runtime, inputs)
            else:
                outputs = self._runtime(inputs)
            # Read by the caller at once, while no other inference can have run (statistics).
            self.timings = (started - asked, time.perf_counter() - started)
            return outputs

    def predict(self, instances: np.ndarray) -> np.ndarray:
        """One float32 output per float32 input, for a one-number-in, one-number-out model."""
        (spec,) = self.compiled.inputs
        return self.run([instances.reshape(-1, *spec.feature_shape)])[0].reshape(-1)

    def expected_seconds(self, inputs: list[np.ndarray]) -> float:
        """The time an inference of ``inputs`` should take, by the numbers it is given."""
        return self.bundle.seconds_per_element * elements(inputs)

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
    def served(self) -> list["ModelRunner"]:
        """This version and the older ones served beside it, newest first."""
        return [self, *self.older.values()]

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
