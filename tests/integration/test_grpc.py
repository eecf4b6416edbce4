"""The Open Inference Protocol over gRPC through its real clients, against a real Gunicorn.

tritonclient's gRPC clients (sync and asyncio) and KServe's ``InferenceGRPCClient``
(each in a process of its own: tests/integration/grpc_clients.py): health,
metadata and inference with raw and with typed tensor contents, for the
notebook model and a two-input, two-output model, checked against Keras; the
token, malformed calls, grpc.health.v1, metrics and a reload under a stream of
calls. Run alone with ``.venv/bin/pytest tests/integration/test_grpc.py``.
"""

import shutil
import signal
import socket
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.grpc import open_inference_pb2 as pb
from app.grpc.server import CONNECTION_AGE_SECONDS
from tests.integration.clients import metric_values, oip_call, served_versions, wait_for
from tests.integration.grpc_clients import TritonStream, client
from tests.integration.server import GunicornServer
from tests.integration.test_protocols import multi_batch
from tests.models import keras_outputs

RTOL, ATOL = 1e-4, 1e-5


def infer(server, request: pb.ModelInferRequest, **kwargs) -> pb.ModelInferResponse:
    return oip_call(server.grpc_target, "ModelInfer", request, pb.ModelInferResponse, **kwargs)


def linear_request(values=(1.0, 2.0)) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="linear")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[len(values), 1])
    tensor.contents.fp32_contents.extend(values)
    return request


def test_tritonclient_gets_health_metadata_and_raw_predictions(server, keras_model):
    values = [10.0, 2.0, -1.5]
    answer = client("triton_linear", target=server.grpc_target, values=values)
    assert answer["live"] and answer["ready"] and answer["model_ready"]
    assert answer["metadata"]["versions"] == ["1"]
    assert answer["metadata"]["platform"] == "litert_tflite"
    assert answer["metadata"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "1"]}]
    assert answer["server"]["extensions"] == [
        "binary_tensor_data",
        "model_repository",
        "statistics",
    ]
    expected = keras_model.predict(np.array(values).reshape(-1, 1), verbose=0)
    np.testing.assert_allclose(answer["y"], expected, rtol=RTOL, atol=ATOL)
    assert answer["response"]["id"] == "grpc-1" and answer["response"]["model_version"] == "1"


def test_tritonclient_aio_infers_a_multi_input_model(multi_server, multi_keras):
    features, grid = multi_batch()
    inputs = {"features": features.tolist(), "grid": grid.tolist()}
    answer = client("triton_aio_multi", target=multi_server.grpc_target, inputs=inputs)
    scores, total = multi_keras.predict([features, grid], verbose=0)
    np.testing.assert_allclose(answer["scores"], scores, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(answer["total"], total, rtol=RTOL, atol=ATOL)
    assert not answer["only_total_has_scores"]
    np.testing.assert_allclose(answer["only_total"], total, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed-contents"])
def test_kserve_grpc_client_infers_the_multi_input_model(multi_server, multi_keras, raw):
    features, grid = multi_batch()
    inputs = {"features": features.tolist(), "grid": grid.tolist()}
    answer = client("kserve_multi", target=multi_server.grpc_target, raw=raw, inputs=inputs)
    assert answer["live"] and answer["ready"] and answer["id"] == "kserve-grpc"
    scores, total = multi_keras.predict([features, grid], verbose=0)
    np.testing.assert_allclose(answer["outputs"]["scores"], scores, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(answer["outputs"]["total"], total, rtol=RTOL, atol=ATOL)


def test_typed_contents_of_an_integer_datatype_are_taken_exactly(server, keras_model):
    request = pb.ModelInferRequest(model_name="linear", id="ints")
    tensor = request.inputs.add(name="x", datatype="INT16", shape=[2, 1])
    tensor.contents.int_contents.extend([-300, 7])
    response = infer(server, request)
    assert response.id == "ints" and list(response.outputs[0].shape) == [2, 1]
    values = np.frombuffer(response.raw_output_contents[0], "<f4")
    expected = keras_model.predict(np.array([[-300.0], [7.0]]), verbose=0).reshape(-1)
    np.testing.assert_allclose(values, expected, rtol=RTOL, atol=ATOL)


def set_first_value(request, value):
    request.inputs[0].contents.fp32_contents[0] = value


@pytest.mark.parametrize(
    "change, code, words",
    [
        (lambda r: setattr(r, "model_name", "nope"), grpc.StatusCode.NOT_FOUND, "not served"),
        (lambda r: setattr(r, "model_version", "9"), grpc.StatusCode.NOT_FOUND, "Version"),
        (lambda r: r.inputs[0].shape.append(3), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        (
            lambda r: setattr(r.inputs[0], "datatype", "FP64"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FP64",
        ),
        (lambda r: r.raw_input_contents.append(b"\0" * 8), grpc.StatusCode.INVALID_ARGUMENT, "raw"),
        (lambda r: r.outputs.add(name="zz"), grpc.StatusCode.INVALID_ARGUMENT, "zz"),
        (
            lambda r: r.inputs[0].contents.fp32_contents.append(1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "shape",
        ),
        (lambda r: set_first_value(r, float("nan")), grpc.StatusCode.INVALID_ARGUMENT, "finite"),
        (
            lambda r: r.inputs[0].shape.__setitem__(0, 5000),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "MAX_BATCH_SIZE",
        ),
        (
            lambda r: r.inputs.add(name="x", datatype="FP32", shape=[2, 1]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "once",
        ),
    ],
    ids=[
        "model",
        "version",
        "rank",
        "datatype",
        "raw-and-contents",
        "output",
        "count",
        "nan",
        "batch",
        "twice",
    ],
)
def test_a_bad_call_is_refused_with_the_protocol_code_and_the_server_serves_on(
    server, change, code, words
):
    request = linear_request()
    change(request)
    with pytest.raises(grpc.RpcError) as refused:
        infer(server, request)
    assert refused.value.code() == code and words in refused.value.details()
    assert len(infer(server, linear_request()).raw_output_contents) == 1


def test_bytes_that_are_not_a_message_are_refused_and_the_server_serves_on(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as refused:
            call(b"\xff\xff\xff\xff garbage", timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ModelInferRequest" in refused.value.details()
    assert "Exception deserializing" not in server.output(), "grpc logged a traceback"
    assert len(infer(server, linear_request()).raw_output_contents) == 1


def test_a_message_over_the_body_limit_is_resource_exhausted(server):
    request = pb.ModelInferRequest(model_name="linear")
    request.inputs.add(name="x", datatype="FP32", shape=[300_000, 1])
    request.raw_input_contents.append(b"\0" * 1_200_000)  # Past the 1 MiB limit.
    with pytest.raises(grpc.RpcError) as refused:
        infer(server, request)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_token_is_required_for_inference_only(store, make_server):
    server = make_server(store, API_TOKEN="s3cret")
    refused = client("triton_linear", target=server.grpc_target, values=[1.0])
    assert refused["live"] and refused["metadata"]["name"] == "linear"
    assert refused["error"] == "StatusCode.UNAUTHENTICATED"
    wrong = client(
        "triton_linear",
        target=server.grpc_target,
        values=[1.0],
        headers={"authorization": "Bearer no"},
    )
    assert wrong["error"] == "StatusCode.UNAUTHENTICATED"
    accepted = client(
        "triton_linear",
        target=server.grpc_target,
        values=[1.0],
        headers={"authorization": "Bearer s3cret"},
    )
    assert len(accepted["y"]) == 1


def test_request_ids_are_echoed_in_metadata_and_calls_counted(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        _, answer = call.with_call(linear_request(), metadata=[("x-request-id", "abc-123")])
    assert ("x-request-id", "abc-123") in answer.trailing_metadata()
    with pytest.raises(grpc.RpcError):
        infer(server, pb.ModelInferRequest(model_name="nope"))
    values = metric_values(server.url)
    ok = ("model_server_grpc_requests_total", (("code", "OK"), ("method", "ModelInfer")))
    missing = (
        "model_server_grpc_requests_total",
        (("code", "NOT_FOUND"), ("method", "ModelInfer")),
    )
    assert values[ok] >= 1 and values[missing] >= 1


def test_grpc_health_checks_serve_then_drain(store, make_server):
    server = make_server(store, DRAIN_SECONDS=3)
    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        server.process.send_signal(signal.SIGTERM)
        wait_for(
            lambda: (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.NOT_SERVING
            ),
            timeout=5,
        )
        # Draining, not gone: calls are answered, and the server says it is not ready.
        assert len(infer(server, linear_request()).raw_output_contents) == 1
        ready = oip_call(
            server.grpc_target, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse
        )
        assert not ready.ready
    assert server.process.wait(timeout=30) == 0


def grpc_versions(server) -> set[str]:
    """The versions that calls over fresh connections are answered with."""
    request = pb.ModelMetadataRequest(name="linear")
    return {
        version
        for _ in range(20)
        for version in oip_call(
            server.grpc_target, "ModelMetadata", request, pb.ModelMetadataResponse
        ).versions
    }


def test_a_reload_under_a_stream_of_tritonclient_calls_fails_none(store, make_server, model_dir):
    server = make_server(store)
    with TritonStream(server.grpc_target) as stream:
        shutil.copytree(model_dir / "1", store / "2")
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: served_versions(server.url) == {"2"}, timeout=90)
        # Old workers keep the gRPC port until new ones listen (app/ops/handover.py).
        wait_for(lambda: grpc_versions(server) == {"2"}, timeout=10)
        # Each client's connection to an old worker is sent away within its age.
        time.sleep(CONNECTION_AGE_SECONDS * 1.2 + 1)
        result = stream.stop()
    assert result["failures"] == [], result["failures"][:3]
    assert {"1", "2"} <= set(result["versions"]) and result["versions"][-20:] == ["2"] * 20


TABULAR = {
    "age": {"data": [[40.0], [-1.5], [3.0]], "dtype": "float32"},
    "country": {"data": [[7], [19], [0]], "dtype": "int64"},
}


def tabular_expected(zoo) -> list:
    inputs = {name: np.array(given["data"], given["dtype"]) for name, given in TABULAR.items()}
    return keras_outputs(zoo["tabular"].keras, inputs)["risk"]


@pytest.mark.parametrize(
    "name, arguments",
    [("triton_typed", {}), ("kserve_typed", {"raw": True}), ("kserve_typed", {"raw": False})],
    ids=["tritonclient-raw", "kserve-raw", "kserve-typed-contents"],
)
def test_int64_and_float32_inputs_are_served_to_the_protocols_clients(
    typed_server, zoo, name, arguments
):
    answer = client(
        name, target=typed_server.grpc_target, model="tabular", inputs=TABULAR, **arguments
    )
    assert answer["risk"]["datatype"] == "FP32"
    np.testing.assert_allclose(answer["risk"]["data"], tabular_expected(zoo), rtol=RTOL, atol=ATOL)


def test_a_code_past_the_embedding_or_of_another_type_is_invalid_argument(typed_server):
    request = pb.ModelInferRequest(model_name="tabular")
    request.inputs.add(name="age", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(1)
    country = request.inputs.add(name="country", datatype="INT64", shape=[1, 1])
    country.contents.int64_contents.append(20)
    with pytest.raises(grpc.RpcError) as refused:
        infer(typed_server, request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "within [-20, 19]" in refused.value.details()
    country.datatype = "FP64"
    with pytest.raises(grpc.RpcError) as refused:
        infer(typed_server, request)
    assert "has datatype FP64; the model takes INT64" in refused.value.details()


@pytest.fixture(scope="module")
def text_server(zoo, tmp_path_factory):
    """A two-worker Gunicorn serving the zoo's text classifier on the TensorFlow runtime."""
    from tests.integration.conftest import start

    server = start(zoo["text_classifier"].model_dir, tmp_path_factory)
    yield server
    server.stop()


@pytest.mark.parametrize(
    "name, arguments",
    [("triton_typed", {}), ("kserve_typed", {"raw": True}), ("kserve_typed", {"raw": False})],
    ids=["tritonclient-raw", "kserve-raw", "kserve-bytes-contents"],
)
def test_strings_reach_a_model_on_the_tensorflow_runtime(text_server, zoo, name, arguments):
    texts = [["the quick brown fox"], ["hello world"], ["jumps over a lazy dog"]]
    inputs = {"text": {"data": texts, "dtype": "bytes"}}
    answer = client(
        name, target=text_server.grpc_target, model="text_classifier", inputs=inputs, **arguments
    )
    expected = keras_outputs(zoo["text_classifier"].keras, {"text": np.array(texts, dtype=object)})
    np.testing.assert_allclose(
        answer["sentiment"]["data"], expected["sentiment"], rtol=RTOL, atol=ATOL
    )
    metadata = oip_call(
        text_server.grpc_target,
        "ModelMetadata",
        pb.ModelMetadataRequest(name="text_classifier"),
        pb.ModelMetadataResponse,
    )
    assert metadata.platform == "tensorflow_savedmodel" and metadata.inputs[0].datatype == "BYTES"


def test_a_restart_serves_the_same_grpc_port_while_old_clients_hang_on(
    model_dir, make_server, tmp_path
):
    first = make_server(model_dir, workers=1)
    # A client that keeps its connection after the server stops: the server's
    # side lingers (FIN-WAIT-2, then TIME_WAIT) on the gRPC port meanwhile.
    with socket.create_connection(("127.0.0.1", first.grpc_port), timeout=5):
        assert infer(first, linear_request()).model_name == "linear"
        first.stop()
        second = make_server(model_dir, workers=1, GRPC_PORT=first.grpc_port)
    second.grpc_target = first.grpc_target
    assert infer(second, linear_request()).model_name == "linear"
    # A port another server listens on is still refused (SO_REUSEPORT would share it).
    third = GunicornServer(model_dir, tmp_path / "third.log", 1, GRPC_PORT=first.grpc_port)
    try:
        assert third.process.wait(timeout=60) != 0
        assert f"GRPC_PORT {first.grpc_port} is in use" in third.output()
    finally:
        third.stop()
