"""Benchmark the real server: ``make bench`` (or ``.venv/bin/python -m benchmarks.bench``).

Starts Gunicorn from gunicorn.conf.py on 127.0.0.1 against MODEL_DIR, drives
it with wrk in bounded runs (GET /health/live, POST /predict with 1 and with
1,000 instances, at each concurrency), times the model runner alone against
Keras' model.predict, reads the memory of the master and of each worker, and
writes benchmarks/results.md and benchmarks/results.png.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.runtime.store import list_versions
from tests.integration.server import GunicornServer

HERE = Path(__file__).resolve().parent
BATCH = 1000
# /predict and the Open Inference Protocol's infer (v2: JSON tensors; v2bin: the
# binary tensor data extension, as tritonclient sends by default), 1 and BATCH instances.
SCENARIOS = (
    "live",
    "predict-1",
    f"predict-{BATCH}",
    "v2-1",
    f"v2-{BATCH}",
    "v2bin-1",
    f"v2bin-{BATCH}",
)
PATHS = {
    "live": "/health/live",
    "predict": "/predict",
    "v2": "/v2/models/linear/infer",
    "v2bin": "/v2/models/linear/infer",
}


@dataclass
class WrkResult:
    scenario: str
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def instances_per_second(self) -> float:
        batch = int(self.scenario.split("-")[1]) if "-" in self.scenario else 0
        return self.requests_per_second * batch


def wrk_script(directory: Path, scenario: str) -> Path | None:
    """A wrk Lua script POSTing the scenario's batch, or None for a GET."""
    if scenario == "live":
        return None
    protocol, size = scenario.split("-")[0], int(scenario.split("-")[1])
    values = np.random.default_rng(0).uniform(-100, 100, size).round(3).tolist()
    if protocol == "v2bin":
        return binary_script(directory, scenario, np.array(values, "<f4").reshape(size, 1))
    if protocol == "v2":
        tensor = {"name": "x", "shape": [size, 1], "datatype": "FP32", "data": values}
        body = json.dumps({"inputs": [tensor]})
    else:
        body = json.dumps({"instances": values})
    path = directory / f"{scenario}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    return path


def binary_script(directory: Path, scenario: str, array: np.ndarray, name: str = "x") -> Path:
    """A wrk script POSTing ``array`` as tritonclient does by default: JSON header, raw bytes."""
    tensor = {
        "name": name,
        "shape": list(array.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": array.nbytes},
    }
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    body = directory / f"{scenario}.bin"
    body.write_bytes(header.encode() + array.tobytes())
    path = directory / f"{scenario}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n'
        f'wrk.headers["Inference-Header-Content-Length"] = "{len(header)}"\n'
        f'local file = io.open("{body}", "rb")\n'
        'wrk.body = file:read("*a")\n'
        "file:close()\n"
    )
    return path


def parse_duration_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, scenario: str, connections: int, seconds: int, scripts: Path) -> WrkResult:
    path = PATHS[scenario.split("-")[0]]
    return wrk(url + path, wrk_script(scripts, scenario), scenario, connections, seconds)


def wrk(target: str, script: Path | None, scenario: str, connections: int, seconds: int):
    """One bounded wrk run against ``target`` (POSTing what ``script`` says, else GET)."""
    command = [
        "wrk",
        "-t1",  # one event loop drives every connection and leaves the most CPU to the server
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    if script:
        command += ["-s", str(script)]
    output = subprocess.run(
        [*command, target], capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(n) for n in socket.groups()) if socket else 0
    return WrkResult(
        scenario,
        connections,
        float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        # No answer at all (a stalled server) leaves wrk without percentiles.
        parse_duration_ms(percentiles["50"]) if percentiles else float("nan"),
        parse_duration_ms(percentiles["99"]) if percentiles else float("nan"),
        errors,
    )


def summary(result: WrkResult) -> str:
    return (
        f"{result.requests_per_second:9,.0f} req/s p50 {result.p50_ms:6.2f} ms "
        f"p99 {result.p99_ms:6.2f} ms errors {result.errors}"
    )


def memory_kib(pid: int) -> dict:
    """RSS and PSS of one process, from /proc/<pid>/smaps_rollup."""
    fields = dict(
        re.findall(r"^(\w+):\s+(\d+) kB", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M)
    )
    return {"rss": int(fields["Rss"]), "pss": int(fields["Pss"])}


def time_per_call_us(function, argument, seconds: float = 1.0) -> float:
    """Median over 5 rounds of the mean time per call."""
    function(argument)
    rounds = []
    for _ in range(5):
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 5:
            function(argument)
            calls += 1
        rounds.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(rounds)


def runner_latencies(model_dir: Path) -> dict:
    """Per-call latency of the model runner and of Keras' model.predict."""
    import keras

    from app.runtime.loader import load_version
    from app.runtime.model import ModelRunner

    runner = ModelRunner.build(load_version(list_versions(model_dir)[0]))
    model = keras.models.load_model(runner.version.model_file, compile=False)
    results = {"runtime": runner.runtime}
    for size in (1, BATCH):
        batch = np.linspace(-100, 100, size, dtype=np.float32)
        results[f"runner-{size}"] = time_per_call_us(runner.predict, batch)
        results[f"predict-{size}"] = time_per_call_us(
            lambda x: model.predict(x, verbose=0), batch.reshape(-1, 1), seconds=3.0
        )
    return results


def markdown(results, latencies, memory, ready_seconds, args) -> str:
    by_key = {(r.scenario, r.connections): r for r in results}
    lines = [
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}; wrk shares the cores with "
        f"{args.workers} Gunicorn workers. "
        f"{args.seconds} s per run. Command: `make bench`.",
        "",
        "| endpoint | connections | req/s | instances/s | p50 ms | p99 ms | errors | ÷ live |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        for connections in args.connections:
            r = by_key[(scenario, connections)]
            live = by_key[("live", connections)].requests_per_second
            ratio = "" if scenario == "live" else f"{r.requests_per_second / live:.2f}"
            instances = f"{r.instances_per_second:,.0f}" if r.instances_per_second else ""
            lines.append(
                f"| {scenario} | {connections} | {r.requests_per_second:,.0f} | {instances} | "
                f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {ratio} |"
            )
    lines += [
        "",
        f"Model runner alone ({latencies['runtime']}) against Keras `model.predict`, per call:",
        "",
        "| instances | runner µs | model.predict µs | speed-up |",
        "|---:|---:|---:|---:|",
    ]
    for size in (1, BATCH):
        fast, slow = latencies[f"runner-{size}"], latencies[f"predict-{size}"]
        lines.append(f"| {size} | {fast:,.1f} | {slow:,.0f} | {slow / fast:,.0f}× |")
    lines += ["", "| process | RSS MiB | PSS MiB |", "|---|---:|---:|"]
    for name, values in memory.items():
        lines.append(f"| {name} | {values['rss'] / 1024:.0f} | {values['pss'] / 1024:.0f} |")
    lines += ["", f"Launch to ready (all workers answering): {ready_seconds:.1f} s.", ""]
    return "\n".join(lines)


def plot(results, connections, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, tail) = plt.subplots(1, 2, figsize=(10, 4))
    for scenario in SCENARIOS:
        rows = [r for r in results if r.scenario == scenario]
        throughput.plot(
            connections, [r.requests_per_second for r in rows], marker="o", label=scenario
        )
        tail.plot(connections, [r.p99_ms for r in rows], marker="o", label=scenario)
    throughput.set(xlabel="connections", ylabel="requests/s", title="Throughput", xscale="log")
    tail.set(xlabel="connections", ylabel="p99 latency (ms)", title="p99 latency", xscale="log")
    for axes in (throughput, tail):
        axes.set_xticks(connections, [str(c) for c in connections])
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", type=Path, default=Path(os.environ.get("MODEL_DIR", "models/linear"))
    )
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 2)))
    parser.add_argument("--output", type=Path, default=HERE / "results.md")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed: `apt-get install wrk` (make bench does this)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        server = GunicornServer(args.model_dir, scratch / "server.log", workers=args.workers)
        try:
            ready_seconds = server.wait_until_all_workers_ready(args.workers)
            results = []
            for connections in args.connections:
                for scenario in SCENARIOS:
                    result = run_wrk(server.url, scenario, connections, args.seconds, scratch)
                    print(f"{scenario:>13} c={connections:<3} {summary(result)}", flush=True)
                    results.append(result)
            memory = {"master": memory_kib(server.pid)}
            for index, pid in enumerate(server.worker_pids(), start=1):
                memory[f"worker {index}"] = memory_kib(pid)
        finally:
            server.stop()
    latencies = runner_latencies(args.model_dir)
    report = markdown(results, latencies, memory, ready_seconds, args)
    args.output.write_text(report)
    plot(results, args.connections, args.output.with_suffix(".png"))
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
