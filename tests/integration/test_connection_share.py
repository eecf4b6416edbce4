"""Every worker takes its share of a burst of keep-alive connections, also while the CPU is
busy (app/ops/connections.py).

Each burst starts once the server has closed the last one's connections: a
worker that has not yet read its clients' closes still counts them, which is
the mechanism's known limit (its docstring), not what this test measures.

Run alone with ``.venv/bin/pytest tests/integration/test_connection_share.py``.
"""

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

BURSTS = 10
CONNECTIONS = 16
CLOSE_WAIT = "08"  # A TCP state in /proc/net/tcp: the peer closed, the socket is still open.


def worker_of(connection: socket.socket) -> str:
    """Send a keep-alive probe on ``connection``; the worker pid that answered it."""
    connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = connection.recv(4096)
        assert chunk, "the server closed the connection"
        head += chunk
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"x-worker-pid:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError(head)


def wait_until_closed(port: int, timeout: float = 10) -> None:
    """Wait until the server has closed every connection to ``port`` its client closed."""
    suffix = f":{port:04X}"
    deadline = time.monotonic() + timeout
    while True:
        rows = [row.split() for row in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        left = [row for row in rows if row[1].endswith(suffix) and row[3] == CLOSE_WAIT]
        if not left:
            return
        assert time.monotonic() < deadline, f"the server never closed {len(left)} connections"
        time.sleep(0.005)


@pytest.fixture
def busy_cpu():
    """Both cores kept busy by processes of lower priority than the server."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=lambda: os.nice(5))
        for _ in range(os.cpu_count() or 2)
    ]
    yield
    for hog in hogs:
        hog.kill()
        hog.wait()


def test_a_burst_of_keep_alive_connections_reaches_every_worker(server, busy_cpu):
    shares = []
    for _ in range(BURSTS):
        # Opened at once: the kernel completes them all before any worker accepts one.
        burst = [
            socket.create_connection(("127.0.0.1", server.port), timeout=10)
            for _ in range(CONNECTIONS)
        ]
        try:
            counts = Counter(worker_of(connection) for connection in burst)
        finally:
            for connection in burst:
                connection.close()
        wait_until_closed(server.port)
        shares.append(max(counts.values()) / CONNECTIONS)
        assert len(counts) == server.workers, f"one worker took the whole burst: {shares}"
    assert max(shares) <= 0.75, shares
