"""Idle, slow and kept-alive clients per worker class: ``make bench`` (or
``.venv/bin/python -m benchmarks.slow_clients``).

For each Gunicorn worker class (the default gevent worker of app/ops/worker.py,
sync, gthread with 8 threads), two workers serving MODEL_DIR, driven by wrk
at 20 keep-alive connections:

- GET /health/live and POST /predict (one instance), and their ratio at 16;
- POST /predict with 200 silent connections held open, and with 200 that
  were answered once and then left idle (kept alive);
- POST /predict while one client uploads a 3 MB body at 100 kB/s;
- the fewest silent connections that make a /health/live probe (1 s timeout) fail.

Then KServe's Python server (two uvicorn workers) on the same machine, for the
cost of its liveness endpoint side by side. Writes benchmarks/slow-clients.md.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from benchmarks.bench import WrkResult, wrk, wrk_script
from tests.integration.server import GunicornServer, free_port

HERE = Path(__file__).resolve().parent
CLASSES = {
    "gevent (default)": {},
    "sync": {"GUNICORN_WORKER_CLASS": "sync"},
    "gthread, 8 threads": {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": "8"},
}
IDLE = 200
UPLOAD_BYTES, UPLOAD_RATE = 3_000_000, 100_000
SILENT_STEPS = (1, 2, 4, 16, 100, 1000)


@contextmanager
def held_connections(port: int, count: int, one_request: bool = False):
    """``count`` connections held open: silent, or idle after one request (its answer
    unread: a server that keeps connections alive has answered it by then)."""
    connections = []
    try:
        for _ in range(count):
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            connections.append(connection)
            if one_request:
                connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(1)
        yield connections
    finally:
        for connection in connections:
            connection.close()


@contextmanager
def slow_upload(port: int):
    """One client sending a 3 MB /predict body at 100 kB/s in a thread."""
    stop = threading.Event()

    def upload():
        body = b'{"instances": [1.5]' + b" " * (UPLOAD_BYTES - 21) + b"}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
                connection.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                )
                for start in range(0, len(body), UPLOAD_RATE // 10):
                    if stop.is_set():
                        return
                    connection.sendall(body[start : start + UPLOAD_RATE // 10])
                    time.sleep(0.1)
        except OSError:
            pass

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    time.sleep(1)  # The upload is under way before anything is measured.
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def probes_fail_with(port: int, url: str, silent: int) -> bool:
    """Whether a /health/live probe fails within 1 s while ``silent`` connections are open."""
    with held_connections(port, silent):
        for _ in range(3):
            try:
                requests.get(f"{url}/health/live", timeout=1).raise_for_status()
            except requests.RequestException:
                return True
            time.sleep(0.3)
    return False


def measure_class(model_dir: Path, scratch: Path, env: dict, seconds: int) -> dict:
    server = GunicornServer(
        model_dir, scratch / "server.log", MAX_CONTENT_LENGTH=str(4 * UPLOAD_BYTES), **env
    )
    predict = wrk_script(scratch, "predict-1")
    row = {}
    try:
        server.wait_until_all_workers_ready(2)
        live, port = f"{server.url}/health/live", server.port
        row["live"] = wrk(live, None, "live", 20, seconds)
        row["predict"] = wrk(f"{server.url}/predict", predict, "predict-1", 20, seconds)
        row["live c16"] = wrk(live, None, "live", 16, seconds)
        row["predict c16"] = wrk(f"{server.url}/predict", predict, "predict-1", 16, seconds)
        for name, one_request in (("silent", False), ("kept-alive", True)):
            with held_connections(port, IDLE, one_request):
                row[name] = wrk(f"{server.url}/predict", predict, "predict-1", 20, seconds)
            time.sleep(1)
        with slow_upload(port):
            row["upload"] = wrk(f"{server.url}/predict", predict, "predict-1", 20, seconds)
        row["stalled by"] = next(
            (n for n in SILENT_STEPS if probes_fail_with(port, server.url, n)), None
        )
    finally:
        server.stop()
    return row


def measure_kserve(seconds: int) -> WrkResult:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.kserve_live", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/v2/health/live"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(url, timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        time.sleep(2)  # Both uvicorn workers up.
        return wrk(url, None, "live", 20, seconds)
    finally:
        process.terminate()
        process.wait(timeout=30)


def cell(result: WrkResult) -> str:
    if not result.requests_per_second:
        return "0 req/s"
    errors = f", {result.errors:,} errors" if result.errors else ""
    return f"{result.requests_per_second:,.0f} req/s, p99 {result.p99_ms:,.1f} ms{errors}"


def markdown(rows: dict, kserve: WrkResult, seconds: int) -> str:
    lines = [
        "# Idle, slow and kept-alive clients, per worker class",
        "",
        f"`make bench` (benchmarks/slow_clients.py): 2 workers, wrk -t1 for {seconds} s per "
        "cell at 20 keep-alive connections, one instance per /predict, on this machine "
        f"({os.cpu_count()} cores, shared with wrk).",
        "",
        "| worker class | `/health/live` c20 | `/predict` c20 | `/predict` ÷ `/health/live` c16 "
        f"| `/predict` with {IDLE} silent connections | with {IDLE} idle kept-alive connections "
        "| while a 3 MB body uploads at 100 kB/s | silent connections that stall a probe |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        ratio = row["predict c16"].requests_per_second / row["live c16"].requests_per_second
        stalled = row["stalled by"] or f"none up to {SILENT_STEPS[-1]:,}"
        lines.append(
            f"| {name} | {cell(row['live'])} | {cell(row['predict'])} | {ratio:.2f} "
            f"| {cell(row['silent'])} | {cell(row['kept-alive'])} | {cell(row['upload'])} "
            f"| {stalled} |"
        )
    ours = rows["gevent (default)"]["live"].requests_per_second
    lines += [
        "",
        f"KServe's Python server (`kserve.ModelServer`, 2 uvicorn workers), `/v2/health/live` "
        f"c20: {cell(kserve)}; ours ÷ KServe's: {ours / kserve.requests_per_second:.2f}.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", type=Path, default=Path(os.environ.get("MODEL_DIR", "models/linear"))
    )
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    parser.add_argument("--output", type=Path, default=HERE / "slow-clients.md")
    args = parser.parse_args(argv)
    rows = {}
    for name, env in CLASSES.items():
        with tempfile.TemporaryDirectory() as scratch:
            rows[name] = measure_class(args.model_dir, Path(scratch), env, args.seconds)
        print(name, {key: value for key, value in rows[name].items()}, flush=True)
    report = markdown(rows, measure_kserve(args.seconds), args.seconds)
    args.output.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
