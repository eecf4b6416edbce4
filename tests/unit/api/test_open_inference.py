"""/v2: the Open Inference Protocol, for the notebook model and the multi-tensor model."""

import gzip
import json
import zlib

import numpy as np
import pytest


def infer_body(data, shape, datatype="FP32", name="x", **extra):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}], **extra}


def test_server_metadata_and_health(client):
    assert client.get("/v2").json == {
        "name": "model-server",
        "version": "1.0.0",
        "extensions": ["binary_tensor_data", "model_repository", "statistics"],
    }
    assert client.get("/v2/health/live").json == {"live": True}
    assert client.get("/v2/health/ready").json == {"ready": True}


def test_readiness_is_503_without_a_model(app, client):
    app.extensions["serving"].runners = {}
    response = client.get("/v2/health/ready")
    assert response.status_code == 503 and response.json == {"ready": False}


@pytest.mark.parametrize("path", ["/v2/models/linear", "/v2/models/linear/versions/1"])
def test_model_metadata_names_inputs_and_outputs_with_minus_one_for_the_batch(client, path):
    assert client.get(path).json == {
        "name": "linear",
        "versions": ["1"],
        "platform": "litert_tflite",
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
            "Version '7' of model 'linear' is not served; served: 1.",
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
        (infer_body([1, 2, 3], [2, 1]), "data of shape [3]; shape [2, 1] needs 2 values"),
        (infer_body([[1], [], [2]], [2, 1]), "nested data is ragged"),
        (infer_body([[1, 2]], [2, 1]), "data of shape [1, 2]; shape [2, 1] needs 2"),
        (infer_body([70000], [1, 1], datatype="FP16"), "not a finite number within float16 range"),
        (infer_body([1e30], [1, 1], datatype="FP16"), "not a finite number within float16 range"),
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
    assert response.status_code == 400 and "not a finite number" in response.json["error"]


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
    "headers", [{"Content-Encoding": "br"}, {"Content-Type": "application/json; charset=latin-1"}]
)
def test_an_encoding_or_charset_it_cannot_read_is_still_415(client, headers):
    response = client.post("/v2/models/linear/infer", data=b"{}", headers=headers)
    assert response.status_code == 415 and list(response.json) == ["error"]


def binary_request(tensors: dict, header: dict | None = None, **extra):
    """A request in the binary tensor data extension: JSON header, then raw tensors."""
    inputs = [
        {
            "name": name,
            "shape": list(array.shape),
            "datatype": datatype,
            "parameters": {"binary_data_size": array.nbytes},
        }
        for name, (array, datatype) in tensors.items()
    ]
    document = json.dumps({"inputs": inputs, **extra}).encode()
    data = document + b"".join(array.tobytes() for array, _ in tensors.values())
    headers = {"Inference-Header-Content-Length": str(len(document)), **(header or {})}
    return data, headers


def read_binary_response(response) -> tuple[dict, dict]:
    """The JSON header and each binary output as a float32 array."""
    length = int(response.headers["Inference-Header-Content-Length"])
    header, rest, arrays = json.loads(response.data[:length]), response.data[length:], {}
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            arrays[output["name"]] = np.frombuffer(rest[:size], "<f4").reshape(output["shape"])
            rest = rest[size:]
    assert rest == b""
    return header, arrays


@pytest.mark.parametrize(
    "datatype, array",
    [
        ("FP32", np.array([[10.0], [-1.5]], "<f4")),
        ("FP16", np.array([[10.0], [-1.5]], "<f2")),
        ("UINT8", np.array([[10], [255]], "u1")),
        ("INT16", np.array([[-300], [7]], "<i2")),
    ],
)
def test_binary_inputs_and_outputs_match_the_json_answer(client, runner, datatype, array):
    data, headers = binary_request(
        {"x": (array, datatype)}, parameters={"binary_data_output": True}
    )
    response = client.post("/v2/models/linear/infer", data=data, headers=headers)
    assert response.status_code == 200, response.data[:300]
    header, arrays = read_binary_response(response)
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert "data" not in header["outputs"][0]
    expected = runner.run([array.astype(np.float32)])[0]
    np.testing.assert_array_equal(arrays["y"], expected)


def test_binary_outputs_are_chosen_per_output(multi_app, multi_runner):
    features = np.ones((2, 3), "<f4")
    grid = np.zeros((2, 2, 2), "<f4")
    outputs = [
        {"name": "scores", "parameters": {"binary_data": True}},
        {"name": "total", "parameters": {"binary_data": False}},
    ]
    data, headers = binary_request(
        {"features": (features, "FP32"), "grid": (grid, "FP32")}, outputs=outputs
    )
    response = multi_app.test_client().post("/v2/models/multi/infer", data=data, headers=headers)
    header, arrays = read_binary_response(response)
    scores, total = multi_runner.run([features, grid])
    np.testing.assert_array_equal(arrays["scores"], scores)
    assert header["outputs"][1]["data"] == pytest.approx(total.ravel().tolist())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d, h: (d + b"\0\0\0\0", h), "4 bytes of binary data follow"),
        (lambda d, h: (d[:-4], h), "needs 8 bytes of binary data; 4 remain"),
        (lambda d, h: (d, {**h, "Inference-Header-Content-Length": "9999"}), "not a length"),
        (lambda d, h: (d, {**h, "Inference-Header-Content-Length": "-1"}), "not a length"),
        # str.isdigit() takes a superscript two, which int() refuses: a 500 before.
        (lambda d, h: (d, {**h, "Inference-Header-Content-Length": "²"}), "not a length"),
        (lambda d, h: (d, {**h, "Inference-Header-Content-Length": "+5"}), "not a length"),
        (lambda d, h: (d.replace(b'"binary_data_size": 8', b'"binary_data_size": 4'), h), "is 8"),
    ],
)
def test_binary_data_that_does_not_add_up_is_400(client, change, message):
    data, headers = binary_request({"x": (np.array([[1.0], [2.0]], "<f4"), "FP32")})
    data, headers = change(data, headers)
    response = client.post("/v2/models/linear/infer", data=data, headers=headers)
    assert response.status_code == 400 and message in response.json["error"], response.json


@pytest.mark.parametrize(
    "value", [np.nan, np.inf, -np.inf, np.finfo(np.float32).max, np.finfo(np.float32).min]
)
def test_binary_floats_that_are_not_finite_float32_are_400(client, value):
    data, headers = binary_request({"x": (np.array([[1.0], [value]], "<f4"), "FP32")})
    response = client.post("/v2/models/linear/infer", data=data, headers=headers)
    assert response.status_code == 400
    assert "Input 'x' has values that are not finite FP32" in response.json["error"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_request_is_read_as_tritonclient_sends_it(client, encoding):
    body = json.dumps(infer_body([10.0], [1, 1])).encode()
    data = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    response = client.post(
        "/v2/models/linear/infer", data=data, headers={"Content-Encoding": encoding}
    )
    assert response.status_code == 200, response.json


@pytest.mark.parametrize(
    "encoding, compress",
    [
        ("gzip", lambda body: gzip.compress(body) + b"trailing garbage"),
        ("gzip", lambda body: gzip.compress(body) + gzip.compress(b"{}")),
        ("deflate", lambda body: zlib.compress(body) + b"\0"),
    ],
    ids=["gzip-garbage", "gzip-second-member", "deflate-garbage"],
)
def test_bytes_after_the_end_of_a_compressed_body_are_400(client, encoding, compress):
    data = compress(json.dumps(infer_body([10.0], [1, 1])).encode())
    response = client.post(
        "/v2/models/linear/infer", data=data, headers={"Content-Encoding": encoding}
    )
    assert response.status_code == 400 and "follow the end" in response.json["error"]


def test_a_raw_binary_request_is_the_one_inputs_tensor(client, runner):
    values = np.array([[10.0], [-1.5], [3.0]], "<f4")
    response = client.post(
        "/v2/models/linear/infer",
        data=values.tobytes(),
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert response.status_code == 200, response.data[:300]
    header, arrays = read_binary_response(response)
    assert header["model_name"] == "linear" and header["outputs"][0]["shape"] == [3, 1]
    np.testing.assert_array_equal(arrays["y"], runner.run([values])[0])


@pytest.mark.parametrize(
    "data, message",
    [(b"", "0 bytes"), (b"\0" * 6, "6 bytes is not a whole number"), (b"\xff" * 4, "finite")],
)
def test_a_raw_binary_body_that_is_no_batch_of_the_input_is_400(client, data, message):
    response = client.post(
        "/v2/models/linear/infer", data=data, headers={"Inference-Header-Content-Length": "0"}
    )
    assert response.status_code == 400 and message in response.json["error"], response.json


def test_a_raw_binary_request_to_a_model_of_two_inputs_is_400(multi_app):
    response = multi_app.test_client().post(
        "/v2/models/multi/infer",
        data=b"\0" * 28,
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert response.status_code == 400 and "one input; this one has 2" in response.json["error"]


def test_a_zip_bomb_is_413_after_inflating_no_more_than_the_limit(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    bomb = gzip.compress(b"[" + b" " * (64 * 1024 * 1024) + b"]", compresslevel=9)
    assert len(bomb) < 1024 * 1024
    response = client.post(
        "/v2/models/linear/infer", data=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 413 and list(response.json) == ["error"]


def test_corrupt_compressed_data_is_400(client):
    response = client.post(
        "/v2/models/linear/infer", data=b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 400 and "not valid gzip" in response.json["error"]


def test_model_readiness_agrees_with_server_readiness_while_draining(app, client):
    app.extensions["serving"].draining = True
    assert client.get("/v2/health/ready").status_code == 503
    response = client.get("/v2/models/linear/ready")
    assert response.status_code == 503 and response.json == {"name": "linear", "ready": False}


def test_an_output_requested_twice_is_400(client):
    body = infer_body([1.0], [1, 1], outputs=[{"name": "y"}, {"name": "y"}])
    response = client.post("/v2/models/linear/infer", json=body)
    assert response.status_code == 400 and "once" in response.json["error"]


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


def test_an_error_echoes_a_long_client_string_cut_short(client):
    body = infer_body([1.0], [1, 1])
    body["inputs"][0]["name"] = "n" * 20_000
    response = client.post("/v2/models/linear/infer", json=body)
    assert response.status_code == 400 and "Unknown input 'nnnn" in response.json["error"]
    assert len(response.json["error"]) < 300
