"""Faults against a real Gunicorn: dead workers, stuck clients, oversized bodies, bad models.

Run alone with ``.venv/bin/pytest tests/integration/test_faults.py``.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from app.grpc import open_inference_pb2 as pb
from tests.conftest import make_blocking, save_version
from tests.integration.clients import PREDICT, RequestStream, oip_call, served_by, wait_for
from tests.integration.server import ROOT, GunicornServer
from tests.models import slow_convolutions


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


def test_a_worker_whose_loop_is_stuck_is_replaced_after_the_timeout(store, make_server):
    # SIGSTOP stands for a request stuck in native code: the worker stops reporting.
    server = make_server(store, GUNICORN_TIMEOUT=2)
    victim, survivor = server.worker_pids()
    os.kill(victim, signal.SIGSTOP)
    wait_for(lambda: "WORKER TIMEOUT" in server.output(), timeout=30)
    wait_for(lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids())
    with RequestStream(server.url) as stream:
        wait_for(lambda: len(stream.versions) > 20)
    assert stream.failures == []
    assert survivor in server.worker_pids()


@pytest.fixture(scope="module")
def slow_store(tmp_path_factory):
    """A store holding the slow model (tests/models.py), saved and compiled once."""
    store = tmp_path_factory.mktemp("slow") / "slow"
    save_version(slow_convolutions(), store, 1)
    return store


def test_an_inference_longer_than_the_timeout_is_answered_and_probes_answer_meanwhile(
    slow_store, make_server
):
    server = make_server(slow_store, workers=1, GUNICORN_TIMEOUT=2)
    (worker,) = server.worker_pids()
    answers = {}

    def heavy():
        body = {"instances": [[0.5] * 8] * 1000}
        started = time.monotonic()
        answers["rest"] = requests.post(f"{server.url}/predict", json=body, timeout=60)
        answers["seconds"] = time.monotonic() - started

    def grpc_call():
        request = pb.ModelInferRequest(model_name="slow")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 8]).contents.fp32_contents.extend(
            [0.5] * 8
        )
        answers["grpc"] = oip_call(server.grpc_target, "ModelInfer", request, pb.ModelInferResponse)

    calls = [threading.Thread(target=heavy), threading.Thread(target=grpc_call)]
    for call in calls:
        call.start()
    probes = []
    while calls[0].is_alive():
        started = time.monotonic()
        status = requests.get(f"{server.url}/health/ready", timeout=5).status_code
        probes.append((status, time.monotonic() - started))
        time.sleep(0.1)
    for call in calls:
        call.join(timeout=60)
    assert answers["rest"].status_code == 200 and len(answers["rest"].json()["predictions"]) == 1000
    assert answers["seconds"] > 2, "the batch took less than the timeout: no test"
    assert len(answers["grpc"].raw_output_contents) == 1
    assert all(status == 200 for status, _ in probes), probes
    assert max(seconds for _, seconds in probes) < 1, probes
    assert server.worker_pids() == [worker] and "WORKER TIMEOUT" not in server.output()


def test_one_long_sequence_runs_off_the_loop_and_probes_answer_meanwhile(zoo, make_server):
    # One instance of an open length: estimated by its numbers, not as one instance.
    server = make_server(
        zoo["lstm_variable"].model_dir, workers=1, GUNICORN_TIMEOUT=1, MAX_CONTENT_LENGTH=8_000_000
    )
    (worker,) = server.worker_pids()
    answer = {}

    def long_sequence():
        body = {"instances": [[[0.5, 0.25, 0.0, 1.0]] * 240_000]}
        started = time.monotonic()
        answer["rest"] = requests.post(f"{server.url}/predict", json=body, timeout=60)
        answer["seconds"] = time.monotonic() - started

    call = threading.Thread(target=long_sequence)
    call.start()
    probes = []
    while call.is_alive():
        started = time.monotonic()
        status = requests.get(f"{server.url}/health/ready", timeout=5).status_code
        probes.append((status, time.monotonic() - started))
        time.sleep(0.1)
    call.join()
    assert answer["rest"].status_code == 200, answer["rest"].text
    assert answer["seconds"] > 1.5, "the sequence took less than the timeout: no test"
    assert all(status == 200 for status, _ in probes), probes
    assert max(seconds for _, seconds in probes) < 1, probes
    assert server.worker_pids() == [worker] and "WORKER TIMEOUT" not in server.output()


def test_a_version_whose_largest_batch_outlasts_the_drain_is_refused(slow_store, tmp_path):
    # Sync workers block on an inference: half of GUNICORN_TIMEOUT (1 s) bounds the batch.
    server = GunicornServer(
        slow_store, tmp_path / "server.log", GUNICORN_WORKER_CLASS="sync", GUNICORN_TIMEOUT=2
    )
    assert server.process.wait(timeout=120) != 0
    (line,) = [line for line in server.output().splitlines() if "no servable model" in line]
    assert "largest batch (1,000 instances)" in line and "MAX_BATCH_SIZE" in line
    server.stop()


def test_a_stop_just_after_the_start_is_as_quick_as_later(store, tmp_path):
    # SIGTERM once the first worker serves, while the second may still boot: a worker that
    # had not yet set its handlers lost the signal, and the stop waited 30 s for it.
    for attempt in range(4):
        server = GunicornServer(store, tmp_path / f"server-{attempt}.log", workers=2)
        server.wait_until_ready()
        started = time.monotonic()
        code = server.stop(timeout=60)
        assert code == 0, server.output()
        assert time.monotonic() - started < 10, f"attempt {attempt}: a stop took the timeout"


def test_the_in_flight_gauge_leaves_out_a_killed_worker_at_once(slow_store, make_server):
    server = make_server(slow_store, workers=2)

    def heavy():
        body = {"instances": [[0.5] * 8] * 1000}
        try:
            requests.post(f"{server.url}/predict", json=body, timeout=60)
        except requests.ConnectionError:  # Its worker is killed mid-request.
            pass

    threading.Thread(target=heavy, daemon=True).start()

    def cpu(pid: int) -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])

    before = {pid: cpu(pid) for pid in server.worker_pids()}
    time.sleep(0.5)
    busy = max(before, key=lambda pid: cpu(pid) - before[pid])
    # The master stopped, it cannot reap the worker and drop its files: /metrics must not
    # count the dead worker's request anyway.
    os.kill(server.pid, signal.SIGSTOP)
    try:
        os.kill(busy, signal.SIGKILL)
        wait_for(lambda: Path(f"/proc/{busy}/stat").read_text().split(") ")[1][0] == "Z")
        text = requests.get(f"{server.url}/metrics", timeout=5).text
    finally:
        os.kill(server.pid, signal.SIGCONT)
    (line,) = [line for line in text.splitlines() if line.startswith(IN_FLIGHT)]
    assert float(line.split()[-1]) == 1.0, line  # The scrape itself.


IN_FLIGHT = "model_server_http_requests_in_flight "


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
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n[[[[[", b"400"),
    ],
    ids=["not-http", "long-request-line", "too-many-headers", "no-content-type"],
)
def test_malformed_http_gets_a_json_error_and_the_server_keeps_serving(server, data, status):
    answer = raw_request(server.port, data)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:100]
    assert b"Content-Type: application/json" in answer
    assert requests.post(f"{server.url}/predict", json=PREDICT, timeout=5).status_code == 200


CHUNKED_HEAD = (
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
BODY = b'{"instances": [1]}'


def half_closed_request(port: int, data: bytes) -> bytes:
    """Send ``data``, close our sending side (as a client that gives up does), read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\n" + BODY + b"\r\n0\r\n\r\n",
        b"-11\r\n" + BODY + b"\r\n0\r\n\r\n",
        b"0x12\r\n" + BODY + b"\r\n0\r\n\r\n",
        b"12 \r\n" + BODY + b"\r\n0\r\n\r\n",
        b"12\r\n" + BODY + b"XX0\r\n\r\n",
        b"12\r\n" + BODY + b"\r\n0\r\nbad trailer\r\n\r\n",
        b"12\r\n" + BODY[:10],
        b"12\r\n" + BODY + b"\r\n",
    ],
    ids=[
        "size-not-hex",
        "size-negative",
        "size-0x-prefix",
        "size-trailing-space",
        "no-crlf-after-data",
        "bad-trailer",
        "cut-short",
        "no-last-chunk",
    ],
)
def test_malformed_chunked_bodies_are_400_json(server, body):
    answer = half_closed_request(server.port, CHUNKED_HEAD + body)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"application/json" in answer and b"Traceback" not in answer
    assert requests.post(f"{server.url}/predict", json=PREDICT, timeout=5).status_code == 200


def test_a_gzip_transfer_coding_is_refused_not_read_as_json(server):
    answer = raw_request(
        server.port,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: gzip, chunked\r\n\r\n12\r\n" + BODY + b"\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 415"), answer[:200]


def test_a_body_shorter_than_its_content_length_is_400_not_a_prediction(server):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 40\r\n\r\n"
    )
    answer = half_closed_request(server.port, head + b'{"instances": [1, 2]}')
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"Content-Length" in answer.split(b"\r\n\r\n", 1)[1]
    assert b"ERROR" not in server.output().encode()


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GARBAGE\r\n\r\n", b"400 Bad Request"),
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414 Request-URI Too Long"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", b"431"),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo\r\n\r\n", b"501 Not Impl"),
    ],
    ids=["not-http", "long-request-line", "too-many-headers", "unsupported-transfer-coding"],
)
def test_gunicorns_own_errors_carry_the_headers_of_every_response(server, data, status):
    answer = raw_request(server.port, data)
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 " + status), head
    for header in (b"X-Request-ID: ", b"X-Content-Type-Options: nosniff", b"Cache-Control: "):
        assert header in head
    code = int(status[:3])
    assert f'"code":{code}'.encode() in answer


@pytest.mark.parametrize(
    "variable, value",
    [
        ("WEB_CONCURRENCY", "0"),
        ("WEB_CONCURRENCY", "abc"),
        ("PORT", "99999"),
        ("GUNICORN_TIMEOUT", "-5"),
        ("MAX_BATCH_SIZE", "0"),
        ("LOG_LEVEL", "verbose"),
        ("PROMETHEUS_MULTIPROC_DIR", ""),
        ("API_TOKEN", "two words"),
        ("API_TOKEN", "tab\tinside"),
        ("MODEL_LOAD_TIMEOUT", "never"),
        ("GUNICORN_WORKER_CLASS", "eventlet"),
    ],
)
def test_a_nonsense_setting_stops_the_start_with_one_line_naming_it(
    store, tmp_path, variable, value
):
    temp_dirs_before = set(Path(tempfile.gettempdir()).glob("model-server-metrics-*"))
    environ = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    environ.update(MODEL_DIR=str(store), **{variable: value})
    result = subprocess.run(
        [sys.executable, "-m", "app.serve"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0
    assert len(output.splitlines()) == 1 and variable in output, output
    assert "Traceback" not in output
    assert set(Path(tempfile.gettempdir()).glob("model-server-metrics-*")) == temp_dirs_before


def test_a_model_file_that_blocks_at_start_is_a_refusal_after_the_load_timeout(store, tmp_path):
    make_blocking(store / "1")
    server = GunicornServer(store, tmp_path / "server.log", MODEL_LOAD_TIMEOUT=1)
    code = server.process.wait(timeout=60)
    server.stop()
    assert code != 0
    (error,) = [line for line in server.output().splitlines() if "no servable model" in line]
    assert "MODEL_LOAD_TIMEOUT=1 s" in error and "Traceback" not in server.output()


@pytest.mark.parametrize("pidfile", ["missing", "stale", "gunicorn-in-its-arguments"])
def test_make_reload_without_a_running_server_says_so(tmp_path, pidfile):
    path = tmp_path / "gunicorn.pid"
    # A live process, but not a Gunicorn; the last one names a file test_gunicorn.py, as
    # `pytest tests/integration/test_gunicorn.py` does (it was sent the SIGHUP).
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "test_gunicorn.py"]
    )
    if pidfile != "missing":
        path.write_text(f"{os.getpid() if pidfile == 'stale' else sleeper.pid}\n")
    try:
        result = subprocess.run(
            ["make", "--no-print-directory", "reload", f"GUNICORN_PIDFILE={path}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sleeper.poll() is None, "a process that is not Gunicorn was signalled"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode != 0
    assert result.stdout.startswith("no server is running")
    assert "usage" not in result.stderr and "No such file" not in result.stderr
