"""KServe's Python model server with two uvicorn workers, for side-by-side timings.

``python -m benchmarks.kserve_live PORT [MODEL.tflite]``: a model named "linear"
that answers health and metadata (benchmarks/slow_clients.py times its
liveness) and, given a flatbuffer, KServe's v1 ``predict`` with the same LiteRT
interpreter this server runs (benchmarks/speed.py times both stacks on it).
"""

import sys

import kserve
import numpy as np

from benchmarks.litert_call import LiteRTCall


class Linear(kserve.Model):
    def __init__(self, flatbuffer: str | None):
        super().__init__("linear")
        # Built in the uvicorn worker at the first call, never before its fork.
        self.call = LiteRTCall(flatbuffer)
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        instances = np.asarray(payload["instances"], dtype=np.float32).reshape(-1, 1)
        return {"predictions": self.call(instances).reshape(-1).tolist()}


if __name__ == "__main__":
    server = kserve.ModelServer(
        http_port=int(sys.argv[1]), workers=2, enable_grpc=False, enable_docs_url=False
    )
    server.start([Linear(sys.argv[2] if len(sys.argv) > 2 else None)])
