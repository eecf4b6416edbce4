"""Per-request latency, one request at a time: ``.venv/bin/python -m benchmarks.sequential``.

Starts the real server from gunicorn.conf.py on 127.0.0.1 against MODEL_DIR
and sends 1,000 sequential requests (a new connection each, as the sync
workers close them) to GET /health/live and POST /predict with one instance,
printing the median and 99th percentile of each.
"""

import http.client
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.integration.server import GunicornServer

REQUESTS = 1000


def latencies_ms(port: int, method: str, path: str, body: str | None) -> list[float]:
    timings = []
    for _ in range(REQUESTS):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        started = time.perf_counter()
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        timings.append((time.perf_counter() - started) * 1000)
        connection.close()
        if response.status != 200:
            sys.exit(f"{method} {path} answered {response.status}")
    return sorted(timings)


def main() -> int:
    model_dir = Path(os.environ.get("MODEL_DIR", "models/linear"))
    with tempfile.TemporaryDirectory() as scratch:
        server = GunicornServer(model_dir, Path(scratch) / "server.log")
        try:
            server.wait_until_all_workers_ready(server.workers)
            for method, path, body in (
                ("GET", "/health/live", None),
                ("POST", "/predict", '{"instances": [10.0]}'),
            ):
                timings = latencies_ms(server.port, method, path, body)
                p99 = timings[int(len(timings) * 0.99)]
                print(f"{method} {path}: p50 {statistics.median(timings):.2f} ms, p99 {p99:.2f} ms")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
