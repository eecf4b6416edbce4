"""LiteRT, the runtime that runs a compiled flatbuffer: no TensorFlow in the process."""

import logging
import os
import sys
import tempfile
from contextlib import contextmanager

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

log = logging.getLogger(__name__)


class LiteRTRuntime:
    """The LiteRT interpreter over a flatbuffer: a few µs a call for a small model.

    ``kernels`` is "xnnpack" (LiteRT's optimised CPU delegate; it prints one
    INFO line on stderr when created) or "builtin" (its reference kernels).
    Compile records which (app/runtime/artifact.py).
    """

    name = "litert"

    def __init__(self, flatbuffer: bytes, inputs: int, outputs: int, kernels: str, threads=1):
        resolver = (
            OpResolverType.AUTO
            if kernels == "xnnpack"
            else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        with native_stderr_logged():
            self._interpreter = Interpreter(
                model_content=flatbuffer,
                num_threads=threads,
                experimental_op_resolver_type=resolver,
            )
            # The default delegate (XNNPACK) is applied at the first allocation.
            self._interpreter.allocate_tensors()
        # The converter names tensors in0.. and output_0.., in the Keras order.
        (signature,) = self._interpreter._get_full_signature_list().values()
        self._inputs = [signature["inputs"][f"in{i}"] for i in range(inputs)]
        self._outputs = [signature["outputs"][f"output_{i}"] for i in range(outputs)]
        self._shapes = None

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One output array per output tensor, for input arrays of the signature's dtypes and
        one batch size; the tensors are resized when a shape changes (the batch, or a
        dimension the model leaves open)."""
        interpreter = self._interpreter
        shapes = tuple(array.shape for array in inputs)
        if shapes != self._shapes:
            for index, shape in zip(self._inputs, shapes, strict=True):
                interpreter.resize_tensor_input(index, shape)
            interpreter.allocate_tensors()
            self._shapes = shapes
        for index, array in zip(self._inputs, inputs, strict=True):
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        # get_tensor copies: the caller's arrays outlive the next call.
        return [interpreter.get_tensor(index) for index in self._outputs]


@contextmanager
def native_stderr_logged():
    """Log, as records of this logger, what native code prints on stderr meanwhile.

    XNNPACK announces itself with a plain "INFO: Created ..." line on stderr,
    where Gunicorn writes its JSON log lines: one plain line would break
    every log parser. A temporary file, unlike a pipe, never blocks the writer.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read(64 * 1024).decode(errors="replace").splitlines():
                if line.strip():
                    log.debug("litert: %s", line.strip())
