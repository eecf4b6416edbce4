"""Idle, slow and kept-alive clients against a real Gunicorn: none may stall the workers.

Run alone with ``.venv/bin/pytest tests/integration/test_slow_clients.py``.
"""

import json
import signal
import socket
import threading
import time

import numpy as np
import pytest
import requests
import tritonclient.http as triton_http

from tests.integration.clients import (
    PROBE_LIMIT_SECONDS,
    ProbeStream,
    RequestStream,
    connections_to,
    reload_under_load,
    served_versions,
    wait_for,
)

IDLE_CONNECTIONS = 1000
# What an idle connection has sent: nothing, half a request's headers, or the
# headers and the start of a body it never finishes.
IDLE_KINDS = {
    "silent": b"",
    "half-sent headers": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: applic",
    "unfinished body": (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100000\r\n\r\n{"instances": [1.5, '
    ),
}


def open_connections(port: int, count: int, first_bytes: bytes) -> list[socket.socket]:
    connections = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        if first_bytes:
            connection.sendall(first_bytes)
        connections.append(connection)
    return connections


def seconds_until_closed(connection: socket.socket, trickle: bytes = b"") -> float:
    """Seconds until the server closes ``connection``, sending ``trickle`` a byte at a time."""
    started = time.monotonic()
    connection.settimeout(0.2)
    for byte in [trickle[i : i + 1] for i in range(len(trickle))] or [b""] * 1000:
        try:
            if byte:
                connection.sendall(byte)
            if connection.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
    pytest.fail("the server never closed the connection")


@pytest.mark.parametrize("kind", IDLE_KINDS)
def test_a_thousand_idle_connections_stall_neither_probes_nor_predictions(store, make_server, kind):
    # Long timeouts: the idle connections stay open for the whole test.
    server = make_server(store, GUNICORN_KEEPALIVE=60, BODY_TIMEOUT=60)
    idle = open_connections(server.port, IDLE_CONNECTIONS, IDLE_KINDS[kind])
    try:
        with RequestStream(server.url) as stream, ProbeStream(server.url) as probes:
            wait_for(lambda: len(stream.versions) > 100, timeout=20)
            wait_for(lambda: len(probes.answers) > 20, timeout=20)
        assert connections_to(server.port) >= IDLE_CONNECTIONS
    finally:
        for connection in idle:
            connection.close()
    assert stream.failures == [], stream.failures[:3]
    assert probes.failures == [], probes.failures[:3]
    assert probes.slowest < PROBE_LIMIT_SECONDS, f"a probe waited {probes.slowest:.2f} s"


def test_idle_and_slow_headers_are_cut_off_after_the_keepalive_timeout(store, make_server):
    server = make_server(store, GUNICORN_KEEPALIVE=1)
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        assert 0.9 < seconds_until_closed(silent) < 3
    # A byte every 0.2 s never lets a read wait long: the bound is on the whole header.
    with socket.create_connection(("127.0.0.1", server.port)) as slowloris:
        assert seconds_until_closed(slowloris, b"GET /health/live HTTP/1.1\r\n" * 10) < 3
    # After an answer, a kept-alive connection left idle is closed too.
    with socket.create_connection(("127.0.0.1", server.port)) as kept:
        kept.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"Connection: keep-alive" in kept.recv(65536)
        assert 0.9 < seconds_until_closed(kept) < 3


def test_a_body_trickled_past_the_body_timeout_is_answered_408(store, make_server):
    server = make_server(store, BODY_TIMEOUT=2)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n"
        )
        started = time.monotonic()
        slow.settimeout(0.25)
        answer = b""
        while not answer and time.monotonic() - started < 10:
            slow.sendall(b" ")  # A byte every 0.25 s: each read waits briefly.
            try:
                answer = slow.recv(65536)
            except TimeoutError:
                pass
        elapsed = time.monotonic() - started
        slow.settimeout(5)
        while not answer.endswith(b"}"):
            answer += slow.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["code"] == 408 and "BODY_TIMEOUT" in body["message"]
    assert 1.9 < elapsed < 4
    assert requests.post(f"{server.url}/predict", json={"instances": [1]}, timeout=5).ok


def test_a_slow_upload_is_served_without_holding_up_other_clients(server):
    # 300 kB at about 100 kB/s: three seconds of upload, as from a slow link.
    body = b'{"instances": [1.5]' + b" " * 300_000 + b"}"
    answers = []

    def upload():
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
            connection.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            for start in range(0, len(body), 10_000):
                connection.sendall(body[start : start + 10_000])
                time.sleep(0.1)
            answers.append(connection.recv(65536))

    uploader = threading.Thread(target=upload)
    with RequestStream(server.url) as stream, ProbeStream(server.url) as probes:
        uploader.start()
        uploader.join(timeout=30)
    assert answers and answers[0].startswith(b"HTTP/1.1 200"), answers
    assert stream.failures == [] and len(stream.versions) > 100
    assert probes.failures == []
    assert probes.slowest < PROBE_LIMIT_SECONDS, f"a probe waited {probes.slowest:.2f} s"


def test_a_session_reuses_one_connection_and_reconnects_after_the_keepalive_timeout(
    store, make_server
):
    server = make_server(store, GUNICORN_KEEPALIVE=1)
    with requests.Session() as session:
        for _ in range(20):
            answer = session.post(f"{server.url}/predict", json={"instances": [1]}, timeout=5)
            assert answer.ok and answer.headers["Connection"] == "keep-alive"
        pools = session.get_adapter(server.url).poolmanager.pools
        assert [pools[key].num_connections for key in pools.keys()] == [1]
        time.sleep(2)  # The server closes the idle connection; the next call reconnects.
        assert session.post(f"{server.url}/predict", json={"instances": [1]}, timeout=5).ok


def test_tritonclient_keeps_its_connection_alive(store, make_server):
    server = make_server(store, GUNICORN_KEEPALIVE=1)
    wait_for(lambda: connections_to(server.port) == 0, timeout=5)  # The start's probes
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.port}", concurrency=1)
    data = triton_http.InferInput("x", [2, 1], "FP32")
    data.set_data_from_numpy(np.array([[1.0], [2.0]], np.float32))
    try:
        for _ in range(20):
            assert client.infer("linear", [data]).as_numpy("y").shape == (2, 1)
        # Without keep-alive the server would have closed each one: none would be left.
        wait_for(lambda: connections_to(server.port) == 1, timeout=5)
        time.sleep(2)
        assert client.infer("linear", [data]).as_numpy("y").shape == (2, 1)
    finally:
        client.close()


def test_a_reload_under_keep_alive_clients_fails_no_request(store, make_server, model_dir):
    import shutil

    server = make_server(store)
    reload_under_load(
        server,
        lambda: shutil.copytree(model_dir / "1", store / "2"),
        lambda: served_versions(server.url) == {"2"},
        keep_alive=True,
    )


def test_a_draining_worker_serves_kept_alive_clients_and_closes_their_connections(
    store, make_server
):
    server = make_server(store, DRAIN_SECONDS=3)
    with requests.Session() as session, RequestStream(server.url, keep_alive=True) as stream:
        wait_for(lambda: len(stream.versions) > 20)
        assert session.get(f"{server.url}/health/live", timeout=5).headers["Connection"] == (
            "keep-alive"
        )
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: session.get(f"{server.url}/health/ready", timeout=5).status_code == 503)
        served = len(stream.versions)
        answer = session.post(f"{server.url}/predict", json={"instances": [1]}, timeout=5)
        assert answer.ok and answer.headers["Connection"] == "close"
        wait_for(lambda: len(stream.versions) > served + 20, timeout=2)
    assert stream.failures == [], stream.failures[:3]
    assert server.process.wait(timeout=30) == 0
