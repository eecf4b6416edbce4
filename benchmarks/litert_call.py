"""The one LiteRT call both benchmark peers make (the bare stack and KServe's), so they run
exactly the same code: an interpreter built at the first call, in the worker."""

import numpy as np


class LiteRTCall:
    """One LiteRT interpreter over a flatbuffer file, built at its first call (never before a
    fork); a call resizes it to the batch it is given."""

    def __init__(self, path: str):
        self.path, self.interpreter = path, None

    def __call__(self, instances: np.ndarray) -> np.ndarray:
        if self.interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            self.interpreter = Interpreter(model_path=self.path, num_threads=1)
            self.interpreter.allocate_tensors()
        interpreter = self.interpreter
        (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
        if tuple(source["shape"]) != instances.shape:
            interpreter.resize_tensor_input(source["index"], instances.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], instances)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])
