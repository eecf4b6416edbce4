"""Faults against a real Gunicorn: dead workers, stuck clients, oversized bodies, bad models.

Run alone with ``.venv/bin/pytest tests/integration/test_faults.py``.
"""

import os
import signal
import socket
import time

import pytest
import requests

from tests.integration.clients import PREDICT, RequestStream, served_by, wait_for
from tests.integration.server import GunicornServer


def raw_request(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes over a fresh connection and return all that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(store, make_server):
    server = make_server(store)
    victim, survivor = server.worker_pids()
    with RequestStream(server.url) as stream:
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids())
        wait_for(lambda: len(stream.versions) > 50)
    assert stream.failures == []
    (replacement,) = set(server.worker_pids()) - {survivor}
    wait_for(lambda: str(replacement) in served_by(server.url))


def test_a_request_that_outlives_the_timeout_is_cut_off_and_its_worker_replaced(store, make_server):
    server = make_server(store, GUNICORN_TIMEOUT=2)
    before = set(server.worker_pids())
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as stuck:
        # Promise a body and never send it: the worker blocks reading it.
        stuck.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"instances": ['
        )
        with RequestStream(server.url) as stream:
            wait_for(lambda: "WORKER TIMEOUT" in server.output(), timeout=30)
            wait_for(lambda: len(set(server.worker_pids()) - before) == 1, timeout=30)
            wait_for(lambda: len(stream.versions) > 20)
        answer = stuck.recv(65536)
        # Gunicorn answers the cut-off request itself: in the API's JSON shape, not HTML.
        assert answer.startswith(b"HTTP/1.1 500") and b"application/json" in answer
        assert answer.endswith(b'"errors":{}}')
    assert stream.failures == []


def test_sigterm_drains_serving_while_not_ready_then_exits_zero(store, make_server):
    server = make_server(store, DRAIN_SECONDS=3)
    with RequestStream(server.url) as stream:
        wait_for(lambda: len(stream.versions) > 20)
        server.process.send_signal(signal.SIGTERM)
        served_before = len(stream.versions)
        time.sleep(0.3)
        ready = requests.get(f"{server.url}/health/ready", timeout=5)
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        # Still serving while a load balancer would take the instance out.
        wait_for(lambda: len(stream.versions) > served_before + 20, timeout=2)
    assert stream.failures == []
    assert server.process.wait(timeout=30) == 0


@pytest.mark.parametrize(
    "setup, cause",
    [
        ("missing", "does not exist"),
        ("no-versions", "no model versions"),
        ("empty-file", "cannot load model"),
        ("not-a-zip", "cannot load model"),
        ("corrupt-archive", "cannot load model"),
    ],
)
def test_without_a_servable_model_the_server_refuses_to_start(tmp_path, setup, cause):
    store = tmp_path / "linear"
    if setup != "missing":
        store.mkdir()
    if setup in ("empty-file", "not-a-zip", "corrupt-archive"):
        (store / "1").mkdir()
        model_file = store / "1" / "model.keras"
        if setup == "empty-file":
            model_file.write_bytes(b"")
        elif setup == "not-a-zip":
            model_file.write_bytes(b"garbage")
        else:
            import zipfile

            with zipfile.ZipFile(model_file, "w") as archive:
                archive.writestr("config.json", "{not json")
    server = GunicornServer(store, tmp_path / "server.log")
    code = server.process.wait(timeout=60)
    server.stop()
    output = server.output()
    assert code != 0
    (error,) = [line for line in output.splitlines() if "no servable model" in line]
    assert str(store) in error and cause in error
    assert "Traceback" not in output
    assert "Booting worker" not in output


def test_an_oversized_body_is_413_without_being_read(server):
    body = b'{"instances": [' + b"1," * 600_000 + b"1]}"
    response = raw_request(
        server.port,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert response.startswith(b"HTTP/1.1 413")
    assert b'"code":413' in response


def test_an_oversized_chunked_body_is_413(server):
    chunk = b'{"instances": [' + b"1," * 300_000
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(head)
        try:
            for _ in range(4):  # Four chunks of 600 kB: well past the 1 MiB limit.
                connection.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # The server may stop reading once it has refused the body.
        response = connection.recv(65536)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", b"431"),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n[[[[[", b"415"),
    ],
    ids=["not-http", "long-request-line", "too-many-headers", "no-content-type"],
)
def test_malformed_http_gets_a_json_error_and_the_server_keeps_serving(server, data, status):
    answer = raw_request(server.port, data)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:100]
    assert b"Content-Type: application/json" in answer
    assert requests.post(f"{server.url}/predict", json=PREDICT, timeout=5).status_code == 200
