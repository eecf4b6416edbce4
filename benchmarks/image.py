"""Benchmark an image model: ``make bench`` (or ``.venv/bin/python -m benchmarks.image``).

Builds MobileNetV3Small (224x224x3, random weights: nothing is downloaded)
and compiles it, then serves it three ways in one run, each with two
Gunicorn workers on 127.0.0.1: this server (``/predict`` and ``/v2``), and
Flask calling Keras' ``model.predict`` or a ``tf.function`` per request
(benchmarks/keras_server.py), which is what a team would otherwise deploy.
wrk posts one image per request, as JSON, at 1 and 4 connections. Writes
benchmarks/image-results.md: images/s, p50/p99, worker memory, ready time.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from benchmarks.bench import binary_script, memory_kib, summary, wrk
from tests.integration.server import ROOT, GunicornServer, free_port

HERE = Path(__file__).resolve().parent
CONNECTIONS = (1, 4)


def build_store(root: Path) -> Path:
    """MobileNetV3Small saved and compiled as ``root/mobilenet/1``; returns the model dir."""
    from tests.conftest import save_version
    from tests.models import mobilenet

    started = time.monotonic()
    save_version(mobilenet(), root / "mobilenet", 1)
    print(f"built and compiled MobileNetV3Small in {time.monotonic() - started:.1f} s")
    return root / "mobilenet"


def image_scripts(directory: Path, input_name: str) -> dict[str, Path]:
    """wrk scripts posting one image as a client's ``.tolist()`` writes it, per API."""
    image = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    values = image.tolist()
    bodies = {
        "predict": {"instances": values},
        "v2": {
            "inputs": [
                {
                    "name": input_name,
                    "shape": [1, 224, 224, 3],
                    "datatype": "FP32",
                    "data": image.ravel().tolist(),
                }
            ]
        },
    }
    scripts = {}
    for api, body in bodies.items():
        path = directory / f"image-{api}.lua"
        path.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
        scripts[api] = path
    scripts["v2bin"] = binary_script(directory, "image-v2bin", image, input_name)
    return scripts


def keras_server(model_file: Path, mode: str, log: Path, workers: int, body: str):
    """Gunicorn running benchmarks/keras_server.py; (process, url, launch to first answer s)."""
    port = free_port()
    environ = {**os.environ, "KERAS_MODEL": str(model_file), "KERAS_MODE": mode}
    started = time.monotonic()
    # Gunicorn's defaults, not this project's gunicorn.conf.py (which it reads from the cwd).
    defaults = log.with_suffix(".conf.py")
    defaults.write_text("")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(defaults), "-w", str(workers),
         "-b", f"127.0.0.1:{port}", "--timeout", "120", "benchmarks.keras_server:app"],
        cwd=ROOT, env=environ, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            response = requests.post(f"{url}/predict", data=body, timeout=120,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        except requests.ConnectionError:
            time.sleep(0.2)
            continue
        if response.status_code == 200:
            return process, url, time.monotonic() - started
        break
    process.kill()
    raise RuntimeError(f"the Keras server did not start:\n{log.read_text()}")


def worker_memory(pid: int) -> list[dict]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [memory_kib(int(child)) for child in children]


def measure(url: str, path: str, script: Path, seconds: int, label: str) -> list:
    # Warm each worker (Keras builds its predict function on the first call).
    for _ in range(4):
        subprocess.run(["wrk", "-t1", "-c2", "-d1s", "-s", str(script), url + path],
                       capture_output=True, check=True, timeout=60)  # fmt: skip
    results = []
    for connections in CONNECTIONS:
        result = wrk(url + path, script, label, connections, seconds)
        print(f"{label:>22} c={connections} {summary(result)}", flush=True)
        results.append((label, connections, result))
    return results


def markdown(rows, memory, ready, compile_note, seconds, workers) -> str:
    lines = [
        f"MobileNetV3Small (224x224x3, random weights), one image per request as JSON "
        f"(2.7 MB, as `.tolist()` writes it), {workers} Gunicorn workers each, wrk on the "
        f"same {os.cpu_count()}-core machine, {seconds} s a run. Command: `make bench`. "
        f"{compile_note}",
        "",
        "| server | connections | images/s | p50 ms | p99 ms | errors | ÷ model.predict |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    baseline = {c: r.requests_per_second for label, c, r in rows if label == "keras model.predict"}
    for label, connections, result in rows:
        ratio = result.requests_per_second / baseline[connections]
        lines.append(
            f"| {label} | {connections} | {result.requests_per_second:,.1f} | "
            f"{result.p50_ms:.1f} | {result.p99_ms:.1f} | {result.errors} | {ratio:.1f}× |"
        )
    lines += [
        "",
        "| server | launch to first answer s | worker PSS MiB (each) |",
        "|---|---:|---|",
    ]
    for label, sizes in memory.items():
        pss = ", ".join(f"{size['pss'] / 1024:.0f}" for size in sizes)
        lines.append(f"| {label} | {ready[label]:.1f} | {pss} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=HERE / "image-results.md")
    args = parser.parse_args(argv)
    rows, memory, ready = [], {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        started = time.monotonic()
        model_dir = build_store(scratch / "models")
        compile_note = f"Build and compile took {time.monotonic() - started:.0f} s."
        signature = json.loads((model_dir / "1" / "signature.json").read_text())
        scripts = image_scripts(scratch, signature["inputs"][0]["name"])

        for threads in (1, 2):
            label = "this server" if threads == 1 else "this server, LITERT_THREADS=2"
            server = GunicornServer(
                model_dir, scratch / f"server-{threads}.log", args.workers, LITERT_THREADS=threads
            )
            try:
                ready[label] = server.wait_until_all_workers_ready(args.workers)
                if threads == 1:
                    rows += measure(server.url, "/predict", scripts["predict"], args.seconds,
                                    f"{label} /predict")  # fmt: skip
                rows += measure(server.url, "/v2/models/mobilenet/infer", scripts["v2"],
                                args.seconds, f"{label} /v2")  # fmt: skip
                if threads == 1:
                    rows += measure(server.url, "/v2/models/mobilenet/infer", scripts["v2bin"],
                                    args.seconds, f"{label} /v2 binary")  # fmt: skip
                memory[label] = worker_memory(server.pid)
            finally:
                server.stop()

        for mode in ("predict", "tf.function"):
            label = f"keras {'model.predict' if mode == 'predict' else mode}"
            log = scratch / f"keras-{mode}.log"
            body = scripts_body(scripts["predict"])
            process, url, ready[label] = keras_server(
                model_dir / "1" / "model.keras", mode, log, args.workers, body
            )
            try:
                rows += measure(url, "/predict", scripts["predict"], args.seconds, label)
                memory[label] = worker_memory(process.pid)
            finally:
                process.terminate()
                process.wait(timeout=60)
    report = markdown(rows, memory, ready, compile_note, args.seconds, args.workers)
    args.output.write_text(report)
    print(report)
    return 0


def scripts_body(script: Path) -> str:
    """The JSON body a wrk script posts."""
    return json.loads(script.read_text().split("wrk.body = ", 1)[1])


if __name__ == "__main__":
    raise SystemExit(main())
