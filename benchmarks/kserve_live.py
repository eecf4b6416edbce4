"""KServe's Python model server with two uvicorn workers, for side-by-side timings.

``python -m benchmarks.kserve_live PORT``: a model named "linear" that answers
nothing but health and metadata (benchmarks/slow_clients.py times its liveness).
"""

import sys

import kserve


class Idle(kserve.Model):
    def __init__(self):
        super().__init__("linear")
        self.ready = True


if __name__ == "__main__":
    server = kserve.ModelServer(
        http_port=int(sys.argv[1]), workers=2, enable_grpc=False, enable_docs_url=False
    )
    server.start([Idle()])
