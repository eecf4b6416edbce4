"""Two servers on one machine from the README's ``make serve``, changing PORT alone.

Run alone with ``.venv/bin/pytest tests/integration/test_two_servers.py``.
"""

import os
import signal
import socket
import subprocess
import time

import requests

from tests.integration.server import ROOT, free_port


def free_pair() -> int:
    """A port P with P and P + 81 (its derived gRPC port) both free."""
    while True:
        port = free_port()
        if port + 81 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 81))
            except OSError:
                continue
        return port


def make_serve(port: int, store, log) -> subprocess.Popen:
    """``make serve PORT=port`` as a user runs it: every other setting the Makefile's default."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GRPC_", "GUNICORN_", "PROMETHEUS_", "MODEL_"))
    }
    return subprocess.Popen(
        ["make", "--no-print-directory", "serve", f"PORT={port}", f"MODEL_DIR={store}"],
        cwd=ROOT,
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def ready(port: int, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no server ready on {port}")


def test_a_second_server_needs_only_another_port_and_the_same_port_is_refused_in_one_line(
    store, tmp_path
):
    first_port, second_port = free_pair(), free_pair()
    logs = [open(tmp_path / f"server-{n}.log", "w") for n in range(3)]  # noqa: SIM115
    servers = [make_serve(first_port, store, logs[0]), make_serve(second_port, store, logs[1])]
    try:
        for port, server in zip((first_port, second_port), servers, strict=True):
            ready(port, server)
            answer = requests.post(
                f"http://127.0.0.1:{port}/predict", json={"instances": [1.0]}, timeout=5
            )
            assert answer.status_code == 200, answer.text
        started = (tmp_path / "server-1.log").read_text()
        assert f"gRPC on 127.0.0.1:{second_port + 81}" in started
        assert f".gunicorn-{second_port}.pid" in started
        again = make_serve(first_port, store, logs[2])
        assert again.wait(timeout=120) != 0
        output = (tmp_path / "server-2.log").read_text()
        (line,) = [line for line in output.splitlines() if line.startswith("model server:")]
        assert "already runs on pid" in line and "PORT=8001 make serve" in line
        assert "Traceback" not in output
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        for log in logs:
            log.close()
    assert not (ROOT / f".gunicorn-{first_port}.pid").exists()
