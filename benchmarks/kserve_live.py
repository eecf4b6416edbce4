"""KServe's Python model server with two uvicorn workers, for side-by-side timings.

``python -m benchmarks.kserve_live PORT [MODEL.tflite]``: a model named "linear"
that answers health and metadata (benchmarks/slow_clients.py times its
liveness) and, given a flatbuffer, KServe's v1 ``predict`` with the same LiteRT
interpreter this server runs (benchmarks/speed.py times both stacks on it).
"""

import sys

import kserve
import numpy as np


class Linear(kserve.Model):
    def __init__(self, flatbuffer: str | None):
        super().__init__("linear")
        self.flatbuffer = flatbuffer
        self.interpreter = None
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        if self.interpreter is None:  # In the uvicorn worker, never before its fork.
            from ai_edge_litert.interpreter import Interpreter

            self.interpreter = Interpreter(model_path=self.flatbuffer, num_threads=1)
            self.interpreter.allocate_tensors()
        interpreter = self.interpreter
        instances = np.asarray(payload["instances"], dtype=np.float32).reshape(-1, 1)
        (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
        if tuple(source["shape"]) != instances.shape:
            interpreter.resize_tensor_input(source["index"], instances.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], instances)
        interpreter.invoke()
        return {"predictions": interpreter.get_tensor(target["index"]).reshape(-1).tolist()}


if __name__ == "__main__":
    server = kserve.ModelServer(
        http_port=int(sys.argv[1]), workers=2, enable_grpc=False, enable_docs_url=False
    )
    server.start([Linear(sys.argv[2] if len(sys.argv) > 2 else None)])
