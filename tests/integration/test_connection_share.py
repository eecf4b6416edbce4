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
from collections import Counter

import pytest

from tests.integration.clients import CLOSE_WAIT, connections_to, wait_for

BURSTS = 10
CONNECTIONS = 16


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
        # The server has closed its side of every connection of this burst.
        wait_for(lambda: connections_to(server.port, CLOSE_WAIT) == 0, timeout=10, interval=0.005)
        shares.append(max(counts.values()) / CONNECTIONS)
        assert len(counts) == server.workers, f"one worker took the whole burst: {shares}"
    assert max(shares) <= 0.75, shares
