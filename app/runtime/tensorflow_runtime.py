"""The TensorFlow runtime: a SavedModel run by TensorFlow, for what LiteRT's builtins cannot run.

String inputs (``TextVectorization``), TensorFlow-only ops (``Cumprod``) and
graphs the LiteRT converter refuses are compiled to a SavedModel instead of a
flatbuffer (app/runtime/compiler.py). Serving one needs TensorFlow in the
worker: the ``tensorflow`` extra, an optional install. The runtime answers to
the same small interface as ``LiteRTRuntime``: built from the version's bytes,
called with one array per input, it returns one array per output.
"""

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def configure(threads: int) -> None:
    """TensorFlow's thread pools, sized once before its first op: ``threads`` per worker."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # Already initialised in this process: its pools stay as they are.
        pass


class TensorFlowRuntime:
    """A SavedModel's ``serve`` endpoint, loaded from the version's files.

    The files are written to a private temporary directory, loaded, and the
    directory removed: TensorFlow holds the graph and the variables in memory,
    so a worker never reads the store to serve.
    """

    name = "tensorflow"

    def __init__(self, files: dict[str, bytes], inputs: int, outputs: int, threads: int = 1):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        configure(threads)
        with tempfile.TemporaryDirectory(prefix="model-server-savedmodel-") as directory:
            for name, data in files.items():
                path = Path(directory, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            self._module = tf.saved_model.load(directory)
        self._serve = self._module.serve
        self._constant = tf.constant
        self._outputs = [f"out{i}" for i in range(outputs)]
        # What the graph's kernels raise for inputs they cannot compute (a reshape that
        # does not fit, an index out of range): the client's fault, as LiteRT's are.
        self._refusals = (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError)

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One output array per output tensor (strings as bytes objects); ``RuntimeError``,
        as LiteRT raises it, for inputs the graph refuses."""
        try:
            result = self._serve(*[self._constant(array) for array in inputs])
        except self._refusals as error:
            raise RuntimeError(kernel_message(error.message)) from None
        return [result[name].numpy() for name in self._outputs]


def kernel_message(text: str) -> str:
    """What a kernel said, without TensorFlow's frame: "Graph execution error:", the node's
    traceback and the ``[[{{node ...}}]]`` line."""
    for line in text.splitlines():
        line = line.strip()
        framing = ("Graph execution error", "Detected at node", "<stack traces", "File ", "[[")
        if line and not line.startswith(framing):
            return line
    return "the TensorFlow runtime refused them"
