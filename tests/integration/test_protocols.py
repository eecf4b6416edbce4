"""The standard protocols through their real clients, against a real Gunicorn.

tritonclient's ``InferenceServerClient`` (HTTP, JSON tensors) and KServe's
``InferenceRESTClient`` (Open Inference Protocol v2) get health, metadata and
predictions for the notebook model and for a two-input, two-output model,
checked against Keras. Run alone with ``.venv/bin/pytest tests/integration/test_protocols.py``.
"""

import asyncio

import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.integration.conftest import start
from tests.models import keras_outputs

RTOL, ATOL = 1e-4, 1e-5


def multi_batch(size=4, seed=5):
    rng = np.random.default_rng(seed)
    features = rng.uniform(-3, 3, (size, 3)).astype(np.float32)
    grid = rng.uniform(-3, 3, (size, 2, 2)).astype(np.float32)
    return features, grid


def triton_client(server):
    return triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")


def triton_input(name, array):
    tensor = triton.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=False)
    return tensor


def test_tritonclient_sees_a_live_ready_server_and_the_notebook_model(server, keras_model):
    client = triton_client(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("linear") and client.is_model_ready("linear", "1")
    assert not client.is_model_ready("linear", "2")
    assert client.get_server_metadata()["name"] == "model-server"
    metadata = client.get_model_metadata("linear")
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]
    inputs = np.array([[10.0], [-1.5], [2.0]], np.float32)
    result = client.infer(
        "linear",
        [triton_input("x", inputs)],
        outputs=[triton.InferRequestedOutput("y", binary_data=False)],
        request_id="triton-1",
    )
    assert result.get_response()["id"] == "triton-1"
    np.testing.assert_allclose(
        result.as_numpy("y"), keras_model.predict(inputs, verbose=0), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infers_int64_and_float32_inputs(typed_server, zoo, binary):
    age = np.array([[40.0], [-1.5]], np.float32)
    country = np.array([[7], [19]], np.int64)
    tensors = []
    for name, array, datatype in (("age", age, "FP32"), ("country", country, "INT64")):
        tensors.append(triton.InferInput(name, list(array.shape), datatype))
        tensors[-1].set_data_from_numpy(array, binary_data=binary)
    result = triton_client(typed_server).infer("tabular", tensors)
    expected = keras_outputs(zoo["tabular"].keras, {"age": age, "country": country})["risk"]
    np.testing.assert_allclose(result.as_numpy("risk"), expected, rtol=RTOL, atol=ATOL)
    metadata = triton_client(typed_server).get_model_metadata("tabular")
    assert [tensor["datatype"] for tensor in metadata["inputs"]] == ["FP32", "INT64"]


def test_tritonclient_infers_two_inputs_and_two_outputs(multi_server, multi_keras):
    client = triton_client(multi_server)
    features, grid = multi_batch()
    result = client.infer("multi", [triton_input("features", features), triton_input("grid", grid)])
    scores, total = multi_keras.predict([features, grid], verbose=0)
    np.testing.assert_allclose(result.as_numpy("scores"), scores, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(result.as_numpy("total"), total, rtol=RTOL, atol=ATOL)


def kserve_call(coroutine_function, *args, **kwargs):
    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=10))
        try:
            return await coroutine_function(client)(*args, **kwargs)
        finally:
            await client.close()  # Its kept-alive connection with it.

    return asyncio.run(call())


def kserve(method):
    return lambda client: getattr(client, method)


def kserve_input(name, array):
    tensor = InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=False)
    return tensor


def test_kserve_client_gets_health_metadata_and_predictions(server, keras_model):
    assert kserve_call(kserve("is_server_live"), server.url) is True
    assert kserve_call(kserve("is_server_ready"), server.url) is True
    assert kserve_call(kserve("is_model_ready"), server.url, "linear") is True
    inputs = np.array([[10.0], [0.5]], np.float32)
    request = InferRequest("linear", [kserve_input("x", inputs)], request_id="kserve-1")
    response = kserve_call(kserve("infer"), server.url, request, model_name="linear")
    assert response.id == "kserve-1"
    np.testing.assert_allclose(
        response.outputs[0].as_numpy(), keras_model.predict(inputs, verbose=0), rtol=RTOL, atol=ATOL
    )


def test_kserve_client_infers_two_inputs_and_two_outputs(multi_server, multi_keras):
    features, grid = multi_batch(seed=9)
    request = InferRequest(
        "multi", [kserve_input("features", features), kserve_input("grid", grid)]
    )
    response = kserve_call(kserve("infer"), multi_server.url, request, model_name="multi")
    outputs = {output.name: output.as_numpy() for output in response.outputs}
    scores, total = multi_keras.predict([features, grid], verbose=0)
    np.testing.assert_allclose(outputs["scores"], scores, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(outputs["total"], total, rtol=RTOL, atol=ATOL)


# The clients at their defaults: binary tensors both ways (the binary tensor data
# extension), as every example in tritonclient's and KServe's documentation sends them.


def default_triton_input(name, array):
    tensor = triton.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


def test_tritonclient_defaults_send_and_receive_binary_tensors(multi_server, multi_keras):
    client = triton_client(multi_server)
    features, grid = multi_batch(seed=11)
    inputs = [default_triton_input("features", features), default_triton_input("grid", grid)]
    result = client.infer("multi", inputs)
    response = result.get_response()
    assert all("binary_data_size" in output["parameters"] for output in response["outputs"])
    scores, total = multi_keras.predict([features, grid], verbose=0)
    np.testing.assert_allclose(result.as_numpy("scores"), scores, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(result.as_numpy("total"), total, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_async_infer_with_compressed_requests(server, keras_model, algorithm):
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}", concurrency=2)
    inputs = np.array([[10.0], [-2.0], [3.5]], np.float32)
    pending = client.async_infer(
        "linear",
        [default_triton_input("x", inputs)],
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    np.testing.assert_allclose(
        pending.get_result().as_numpy("y"),
        keras_model.predict(inputs, verbose=0),
        rtol=RTOL,
        atol=ATOL,
    )


def test_tritonclient_aio_defaults(server, keras_model):
    import tritonclient.http.aio as triton_aio

    async def infer():
        client = triton_aio.InferenceServerClient(url=f"127.0.0.1:{server.port}")
        try:
            tensor = triton_aio.InferInput("x", [2, 1], "FP32")
            tensor.set_data_from_numpy(np.array([[1.0], [2.0]], np.float32))
            result = await client.infer("linear", [tensor])
            return result.as_numpy("y")
        finally:
            await client.close()

    expected = keras_model.predict(np.array([[1.0], [2.0]], np.float32), verbose=0)
    np.testing.assert_allclose(asyncio.run(infer()), expected, rtol=RTOL, atol=ATOL)


def test_kserve_default_client_speaks_v1_liveness_and_readiness(server):
    async def call():
        client = InferenceRESTClient(RESTConfig(retries=0, timeout=10))
        try:
            return (
                await client.is_server_live(server.url),
                await client.is_model_ready(server.url, "linear"),
            )
        finally:
            await client.close()

    assert asyncio.run(call()) == (True, True)


def test_kserve_v2_client_with_binary_inputs(server, keras_model):
    inputs = np.array([[10.0], [0.25]], np.float32)
    tensor = InferInput("x", list(inputs.shape), "FP32")
    tensor.set_data_from_numpy(inputs)  # binary_data=True by default
    request = InferRequest("linear", [tensor], request_id="kserve-binary")
    response = kserve_call(kserve("infer"), server.url, request, model_name="linear")
    np.testing.assert_allclose(
        response.outputs[0].as_numpy(), keras_model.predict(inputs, verbose=0), rtol=RTOL, atol=ATOL
    )


def test_an_image_as_binary_tensors_through_tritonclient(zoo, tmp_path_factory):
    from tests.models import in_domain, keras_outputs

    entry = zoo["mobilenet"]
    server = start(entry.model_dir, tmp_path_factory)
    try:
        ((name, image),) = in_domain(entry.keras, 2).items()  # Keras names the input.
        client = triton_client(server)
        result = client.infer("mobilenet", [default_triton_input(name, image)])
        expected = keras_outputs(entry.keras, {name: image})["predictions"]
        np.testing.assert_allclose(result.as_numpy("predictions"), expected, rtol=1e-3, atol=1e-5)
    finally:
        server.stop()
