"""/v2: the Open Inference Protocol, for the notebook model and the multi-tensor model."""

import numpy as np
import pytest


def infer_body(data, shape, datatype="FP32", name="x", **extra):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}], **extra}


def test_server_metadata_and_health(client):
    assert client.get("/v2").json == {"name": "model-server", "version": "1.0.0", "extensions": []}
    assert client.get("/v2/health/live").json == {"live": True}
    assert client.get("/v2/health/ready").json == {"ready": True}


def test_readiness_is_503_without_a_model(app, client):
    app.extensions["serving"].runner = None
    response = client.get("/v2/health/ready")
    assert response.status_code == 503 and response.json == {"ready": False}


@pytest.mark.parametrize("path", ["/v2/models/linear", "/v2/models/linear/versions/1"])
def test_model_metadata_names_inputs_and_outputs_with_minus_one_for_the_batch(client, path):
    assert client.get(path).json == {
        "name": "linear",
        "versions": ["1"],
        "platform": "litert",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }
    assert client.get(f"{path}/ready").json == {"name": "linear", "ready": True}


@pytest.mark.parametrize(
    "path, message",
    [
        ("/v2/models/nope", "Model 'nope' is not served; this server serves 'linear'."),
        (
            "/v2/models/linear/versions/7",
            "Version '7' of model 'linear' is not served; version 1 is.",
        ),
        ("/v2/models/nope/ready", "Model 'nope' is not served"),
    ],
)
def test_an_unknown_model_or_version_is_404_saying_what_is_served(client, path, message):
    response = client.get(path)
    assert response.status_code == 404
    assert list(response.json) == ["error"] and response.json["error"].startswith(message)


@pytest.mark.parametrize("data", [[10, -1.5], [[10], [-1.5]]], ids=["flat", "nested"])
def test_infer_takes_flat_or_nested_data_and_echoes_the_id(client, runner, data):
    response = client.post("/v2/models/linear/infer", json=infer_body(data, [2, 1], id="req-7"))
    assert response.status_code == 200, response.json
    body = response.json
    assert (body["model_name"], body["model_version"], body["id"]) == ("linear", "1", "req-7")
    (output,) = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("y", "FP32", [2, 1])
    expected = runner.predict(np.array([10, -1.5], np.float32))
    np.testing.assert_array_equal(np.array(output["data"], np.float32), expected)


@pytest.mark.parametrize("datatype", ["INT8", "INT16", "UINT8", "UINT16", "FP16"])
def test_datatypes_float32_holds_exactly_are_taken(client, datatype):
    response = client.post("/v2/models/linear/infer", json=infer_body([1, 2], [2, 1], datatype))
    assert response.status_code == 200, response.json


@pytest.mark.parametrize(
    "body, fragment",
    [
        (infer_body([1, 2], [2, 1], "INT32"), "cannot hold every INT32 value exactly"),
        (infer_body([1.5], [1, 1], "FP64"), "cannot hold every FP64 value exactly"),
        (infer_body([True], [1, 1], "BOOL"), "BOOL"),
        (infer_body(["a"], [1, 1], "BYTES"), "BYTES"),
        (infer_body([300], [1, 1], "UINT8"), "not an integer from 0 to 255"),
        (infer_body([1.5], [1, 1], "INT8"), "not an integer"),
        (infer_body([1, 2, 3], [2, 1]), "has 3 values; shape [2, 1] needs 2"),
        (infer_body([1, 2], [1, 2]), "has shape [1, 2]; the model takes [-1, 1]"),
        (infer_body([1, 2], [2]), "has shape [2]"),
        (infer_body([1, "2"], [2, 1]), "'2' is not a finite number"),
        (infer_body([1, 1e39], [2, 1]), "not a finite number within float32 range"),
        (infer_body([1], [1, 1], name="z"), "Unknown input 'z'"),
        ({"inputs": []}, "Give each of the model's inputs once"),
        (infer_body([1], [1, 1], outputs=[{"name": "nope"}]), "Unknown output 'nope'"),
        ({"inputs": [{"name": "x", "shape": [1, 1], "data": [1]}]}, "datatype"),
        ({"inputs": [{"name": "x", "shape": "1", "datatype": "FP32", "data": [1]}]}, "shape"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_input_the_model_cannot_take_exactly_is_400_with_an_error(client, body, fragment):
    response = client.post("/v2/models/linear/infer", json=body)
    assert response.status_code == 400, response.json
    assert list(response.json) == ["error"] and fragment in response.json["error"]


def test_a_batch_over_max_batch_size_is_413(client):
    response = client.post("/v2/models/linear/infer", json=infer_body([1] * 1001, [1001, 1]))
    assert response.status_code == 413 and "MAX_BATCH_SIZE" in response.json["error"]


def test_an_overflowing_output_is_refused_not_saturated(client):
    response = client.post("/v2/models/linear/infer", json=infer_body([1, 3e38], [2, 1]))
    assert response.status_code == 400 and "not a finite float32" in response.json["error"]


def test_a_body_that_is_not_json_gets_the_protocols_error_shape(client):
    response = client.post("/v2/models/linear/infer", data="{", content_type="application/json")
    assert response.status_code == 400 and list(response.json) == ["error"]


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_the_body_is_json_whatever_its_declared_type_as_triton_reads_it(client, content_type):
    # tritonclient sends no Content-Type; `curl -d` sends form-urlencoded.
    body = b'{"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}'
    response = client.post("/v2/models/linear/infer", data=body, content_type=content_type)
    assert response.status_code == 200, response.json


@pytest.mark.parametrize(
    "headers", [{"Content-Encoding": "gzip"}, {"Content-Type": "application/json; charset=latin-1"}]
)
def test_an_encoding_or_charset_it_cannot_read_is_still_415(client, headers):
    response = client.post("/v2/models/linear/infer", data=b"{}", headers=headers)
    assert response.status_code == 415 and list(response.json) == ["error"]


def test_the_binary_tensor_extension_is_refused_with_the_way_out(client):
    response = client.post(
        "/v2/models/linear/infer",
        data=b"{}",
        headers={"Inference-Header-Content-Length": "2"},
        content_type="application/octet-stream",
    )
    assert response.status_code == 400 and "binary_data=False" in response.json["error"]


def test_fields_a_client_adds_are_ignored(client):
    body = infer_body([1], [1, 1], model_name="linear", parameters={"binary_data_output": False})
    assert client.post("/v2/models/linear/infer", json=body).status_code == 200


class TestMultiTensorModel:
    @pytest.fixture
    def client(self, multi_app):
        return multi_app.test_client()

    def test_two_inputs_give_two_outputs_as_keras_computes_them(self, client, multi_keras):
        rng = np.random.default_rng(1)
        features = rng.uniform(-3, 3, (4, 3)).astype(np.float32)
        grid = rng.uniform(-3, 3, (4, 2, 2)).astype(np.float32)
        body = {
            "inputs": [
                {"name": "grid", "shape": [4, 2, 2], "datatype": "FP32", "data": grid.tolist()},
                {
                    "name": "features",
                    "shape": [4, 3],
                    "datatype": "FP32",
                    "data": features.reshape(-1).tolist(),
                },
            ],
            "outputs": [{"name": "total"}],
        }
        response = client.post("/v2/models/multi/versions/1/infer", json=body)
        assert response.status_code == 200, response.json
        (total,) = response.json["outputs"]
        assert total["name"] == "total" and total["shape"] == [4, 1]
        expected = multi_keras.predict([features, grid], verbose=0)[1]
        np.testing.assert_allclose(total["data"], expected.reshape(-1), rtol=1e-4, atol=1e-5)

    def test_inputs_with_different_batch_sizes_are_400(self, client):
        body = {
            "inputs": [
                {"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
                {"name": "grid", "shape": [2, 2, 2], "datatype": "FP32", "data": [0] * 8},
            ]
        }
        response = client.post("/v2/models/multi/infer", json=body)
        assert response.status_code == 400 and "same batch size" in response.json["error"]
