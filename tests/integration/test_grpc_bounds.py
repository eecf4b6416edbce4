"""gRPC clients that would take a worker's memory or connections, against a real Gunicorn.

A raw HTTP/2 client (tests/integration/raw_h2.py) sends calls and never reads
the answers, or sends messages and never finishes them; silent and idle
connections pile up. Each test checks a bound on one worker's memory or
connections, and that the server serves others meanwhile. Run alone with
``.venv/bin/pytest tests/integration/test_grpc_bounds.py``.
"""

import socket
import time

import grpc
import numpy as np
import pytest
import requests

from app.grpc import open_inference_pb2 as pb
from app.grpc.quota import STREAMS_PER_CONNECTION
from tests.integration.clients import metric_values, wait_for
from tests.integration.raw_h2 import RawGrpcConnection
from tests.integration.server import memory_mib
from tests.integration.test_grpc import infer, linear_request

# One connection that never reads its answers grew a worker by 1.2 GiB before the bound.
MEMORY_BOUND_MIB = 300


def peak_rss_mib(pid: int, seconds: float) -> float:
    peak, deadline = 0.0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, memory_mib(pid))
        time.sleep(0.1)
    return peak


def grpc_counts(server) -> dict[str, float]:
    """ModelInfer calls counted by status code."""
    return {
        dict(labels)["code"]: value
        for (name, labels), value in metric_values(server.url).items()
        if name == "model_server_grpc_requests_total" and dict(labels)["method"] == "ModelInfer"
    }


@pytest.fixture(scope="module")
def wide_server(zoo, tmp_path_factory):
    """One worker serving the wide-output model: 4 numbers in, up to 4 MB of answer out."""
    from tests.integration.conftest import start

    server = start(zoo["wide_output"].model_dir, tmp_path_factory, workers=1)
    yield server
    server.stop()


def wide_request(batch: int) -> bytes:
    request = pb.ModelInferRequest(model_name="wide_output")
    tensor = request.inputs.add(name="seed", datatype="FP32", shape=[batch, 4])
    tensor.contents.fp32_contents.extend([0.5] * batch * 4)
    return request.SerializeToString()


@pytest.fixture
def raw_connection():
    """Open raw HTTP/2 connections to a gRPC port; all are closed after the test."""
    opened = []

    def connect(target: str, window: int = 65_535) -> RawGrpcConnection:
        opened.append(RawGrpcConnection(target, window))
        return opened[-1]

    yield connect
    for connection in opened:
        connection.close()


def never_read(connection: RawGrpcConnection, calls: int) -> None:
    """Send ``calls`` calls of 1.6 kB whose answers are 4 MB each, ignoring the stream limit."""
    for _ in range(calls):
        if not connection.call(wide_request(100)):
            return


def test_a_client_that_never_reads_its_answers_holds_bounded_memory(wide_server, raw_connection):
    (worker,) = wide_server.worker_pids()
    before = memory_mib(worker)
    # The server can send none of the answers: the connection grants no window.
    never_read(raw_connection(wide_server.grpc_target, window=0), 600)
    peak = peak_rss_mib(worker, seconds=3)
    assert peak - before < MEMORY_BOUND_MIB, f"worker grew {peak - before:.0f} MiB"
    print(f"\nworker RSS {before:.0f} -> {peak:.0f} MiB with 600 unread 4 MB answers")
    # Meanwhile others are served, over gRPC and REST alike.
    small = pb.ModelInferRequest.FromString(wide_request(1))
    assert len(infer(wide_server, small).raw_output_contents[0]) == 100 * 100 * 4
    rest = requests.post(f"{wide_server.url}/predict", json={"instances": [[1, 2, 3, 4]]})
    assert rest.status_code == 200
    assert grpc_counts(wide_server).get("RESOURCE_EXHAUSTED", 0) >= 1


def test_many_connections_that_never_read_hold_the_quota_at_most(wide_server, raw_connection):
    (worker,) = wide_server.worker_pids()
    before = memory_mib(worker)
    for _ in range(20):
        never_read(raw_connection(wide_server.grpc_target, window=0), 50)
    peak = peak_rss_mib(worker, seconds=4)
    assert peak - before < MEMORY_BOUND_MIB, f"worker grew {peak - before:.0f} MiB"
    print(f"\nworker RSS {before:.0f} -> {peak:.0f} MiB with 20 connections not reading")
    # gRPC may be refused while they hold the quota; HTTP is not.
    rest = requests.post(f"{wide_server.url}/predict", json={"instances": [[1, 2, 3, 4]]})
    assert rest.status_code == 200


def test_unfinished_messages_without_the_token_hold_no_memory(store, make_server, raw_connection):
    server = make_server(store, workers=1, API_TOKEN="s3cret")
    (worker,) = server.worker_pids()
    before = memory_mib(worker)
    connections = [raw_connection(server.grpc_target) for _ in range(10)]
    for connection in connections:
        for _ in range(30):
            connection.unfinished(990_000)
    peak = peak_rss_mib(worker, seconds=2)
    token = (("authorization", "Bearer s3cret"),)
    assert len(infer(server, linear_request(), metadata=token).raw_output_contents) == 1
    # Refused as soon as the headers arrive: the server reads none of the messages.
    assert peak - before < 50, f"worker grew {peak - before:.0f} MiB"
    assert grpc_counts(server)["UNAUTHENTICATED"] >= 10


def test_unfinished_messages_hold_bounded_memory_until_the_body_timeout(
    store, make_server, raw_connection
):
    server = make_server(store, workers=1, BODY_TIMEOUT=3)
    (worker,) = server.worker_pids()
    before = memory_mib(worker)
    for _ in range(20):
        connection = raw_connection(server.grpc_target)
        for _ in range(STREAMS_PER_CONNECTION):
            connection.unfinished(990_000)
    peak = peak_rss_mib(worker, seconds=2)
    assert peak - before < MEMORY_BOUND_MIB, f"worker grew {peak - before:.0f} MiB"
    # HTTP serves meanwhile; gRPC again once the unfinished calls are cut off.
    assert requests.post(f"{server.url}/predict", json={"instances": [1]}).status_code == 200
    time.sleep(3)
    assert len(infer(server, linear_request()).raw_output_contents) == 1
    assert grpc_counts(server)["DEADLINE_EXCEEDED"] >= 1


def test_a_message_over_the_limit_is_refused_counted_and_logged(server):
    request = pb.ModelInferRequest(model_name="linear")
    request.inputs.add(name="x", datatype="FP32", shape=[300_000, 1])
    request.raw_input_contents.append(b"\0" * 1_200_000)  # Past the 1 MiB limit.
    before = grpc_counts(server).get("RESOURCE_EXHAUSTED", 0)
    with pytest.raises(grpc.RpcError) as refused:
        infer(server, request)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_counts(server)["RESOURCE_EXHAUSTED"] == before + 1
    assert "gRPC ModelInfer RESOURCE_EXHAUSTED" in server.output()


def test_an_error_echoes_a_long_model_name_cut_short(server):
    with pytest.raises(grpc.RpcError) as refused:
        infer(server, pb.ModelInferRequest(model_name="m" * 20_000))
    # Whole, the name would pass the client's 16 kB metadata limit: RESOURCE_EXHAUSTED.
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(refused.value.details()) < 300


def lifetime(sock: socket.socket, limit: float = 30) -> float:
    """Seconds until the server closes ``sock``."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(65_536):
            pass
    except OSError:
        pass
    return time.monotonic() - started


def test_silent_idle_and_excess_connections_are_closed(store, make_server, raw_connection):
    server = make_server(store, workers=1, GUNICORN_KEEPALIVE=2, GUNICORN_WORKER_CONNECTIONS=20)
    host, port = server.grpc_target.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as silent:
        assert 1.5 < lifetime(silent) < 5, "a connection that never speaks HTTP/2 stays open"
    idle = raw_connection(server.grpc_target)
    assert 1.5 < lifetime(idle.sock) < 5, "a connection with no calls stays open"
    held = [socket.create_connection((host, int(port))) for _ in range(30)]
    time.sleep(0.5)
    closed = 0
    for sock in held:
        sock.setblocking(False)
        try:
            closed += sock.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    for sock in held:
        sock.close()
    assert closed >= 10, f"only {closed} of 30 connections over a cap of 20 were refused"
    # The closed connections leave grpcio's count within moments: then it serves again.
    wait_for(lambda: serves(server), timeout=5)


def serves(server) -> bool:
    """Whether one gRPC inference of the linear model is answered."""
    try:
        answer = infer(server, linear_request((10.0,)))
    except grpc.RpcError:
        return False
    return np.frombuffer(answer.raw_output_contents[0], "<f4").size == 1
