"""Worker memory for a big model: ``.venv/bin/python -m benchmarks.memory [--store DIR]``.

Builds ``keras.applications.ResNet50`` (random weights: nothing is
downloaded) and compiles it into ``--store`` (kept, so that a second run
skips the minute of compiling), serves it with two Gunicorn workers on
127.0.0.1, posts 20 images so both workers answer, and prints each
process's RSS and PSS (a page shared by n processes counts 1/n to each).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from benchmarks.bench import memory_kib
from tests.integration.server import GunicornServer


def build_store(root: Path) -> Path:
    """ResNet50 saved and compiled as ``root/resnet50/1``, unless it is there."""
    if (root / "resnet50" / "1" / "signature.json").exists():
        return root / "resnet50"
    import keras

    from tests.conftest import save_version

    started = time.monotonic()
    save_version(keras.applications.ResNet50(weights=None), root / "resnet50", 1)
    print(f"built and compiled ResNet50 in {time.monotonic() - started:.1f} s")
    return root / "resnet50"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "bench-models")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    model_dir = build_store(args.store)
    flatbuffer = (model_dir / "1" / "model.tflite").stat().st_size / 2**20
    with tempfile.TemporaryDirectory() as scratch:
        started = time.monotonic()
        server = GunicornServer(model_dir, Path(scratch) / "server.log", args.workers)
        try:
            server.wait_until_all_workers_ready(args.workers)
            ready = time.monotonic() - started
            image = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).round(1)
            for _ in range(20):
                answer = requests.post(
                    f"{server.url}/predict", json={"instances": image.tolist()}, timeout=60
                )
                answer.raise_for_status()
            rows = [("master", server.process.pid)]
            rows += [(f"worker {i + 1}", pid) for i, pid in enumerate(server.worker_pids())]
            print(f"ResNet50: {flatbuffer:.0f} MiB flatbuffer, ready in {ready:.1f} s")
            print("| process | RSS MiB | PSS MiB |\n|---|---|---|")
            for label, pid in rows:
                memory = memory_kib(pid)
                print(f"| {label} | {memory['rss'] / 1024:.0f} | {memory['pss'] / 1024:.0f} |")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
