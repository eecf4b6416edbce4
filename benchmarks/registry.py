"""What serving from an MLflow registry costs: ``.venv/bin/python -m benchmarks.registry``.

Starts a real MLflow server (from .venv-mlflow, as the tests do), trains and
registers one version, then starts the real Gunicorn three times from the
local store and three times from ``models:/linear@production``, and prints
the time to all workers ready and the PSS of the workers and the master.
"""

import statistics
import tempfile
from pathlib import Path

from benchmarks.bench import memory_kib
from tests.integration.server import GunicornServer
from tests.integration.test_registry import MlflowServer, train_and_register

STARTS = 3


def measure(label: str, store: Path, scratch: Path, **env) -> None:
    seconds, memory = [], []
    for attempt in range(STARTS):
        server = GunicornServer(store, scratch / f"{label}-{attempt}.log", **env)
        try:
            seconds.append(server.wait_until_all_workers_ready(server.workers))
            pids = [*server.worker_pids(), server.pid]
            memory = [round(memory_kib(pid)["pss"] / 1024) for pid in pids]
        finally:
            server.stop()
    print(
        f"{label}: ready in {', '.join(f'{s:.2f}' for s in seconds)} s "
        f"(median {statistics.median(seconds):.2f}); PSS MiB workers {memory[:-1]}, "
        f"master {memory[-1]}"
    )


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        mlflow = MlflowServer(scratch)
        try:
            train_and_register(mlflow, scratch / "models")
            measure("local store", scratch / "models" / "linear", scratch)
            measure(
                "registry",
                scratch / "models" / "linear",
                scratch,
                MODEL_URI="models:/linear@production",
                MLFLOW_TRACKING_URI=mlflow.url,
                MODEL_CACHE_DIR=scratch / "cache",
            )
        finally:
            mlflow.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
