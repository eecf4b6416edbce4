"""/v1/models: TensorFlow Serving's REST API, with its documented request bodies byte for byte."""

import json

import numpy as np
import pytest

JSON = "application/json"


def post(client, path, raw: bytes):
    return client.post(path, data=raw, content_type=JSON)


@pytest.mark.parametrize("path", ["/v1/models/linear", "/v1/models/linear/versions/1"])
def test_model_status_is_available(client, path):
    assert client.get(path).json == {
        "name": "linear",
        "ready": True,
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ],
    }


def test_metadata_describes_the_serving_default_signature(client):
    body = client.get("/v1/models/linear/metadata").json
    assert body["model_spec"] == {"name": "linear", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert signature["inputs"]["x"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""},
        {"size": "1", "name": ""},
    ]
    assert list(signature["outputs"]) == ["y"]


# The documentation's example (half_plus_three), sent byte for byte.
DOCS_ROW = b'{"instances": [1.0, 2.0, 5.0]}'
DOCS_ROW_SIGNATURE = b'{"signature_name": "serving_default", "instances": [1.0, 2.0, 5.0]}'
DOCS_COLUMNAR = b'{"inputs": [1.0, 2.0, 5.0]}'


@pytest.mark.parametrize("raw", [DOCS_ROW, DOCS_ROW_SIGNATURE], ids=["row", "row-signature"])
def test_the_documented_row_request_answers_predictions(client, runner, raw):
    response = post(client, "/v1/models/linear:predict", raw)
    assert response.status_code == 200, response.json
    expected = runner.predict(np.array([1.0, 2.0, 5.0], np.float32))
    assert list(response.json) == ["predictions"]
    # A (None, 1) output, as TensorFlow Serving writes it: [[v], [v], [v]].
    predictions = response.json["predictions"]
    assert [len(row) for row in predictions] == [1, 1, 1]
    np.testing.assert_array_equal(np.array(predictions, np.float32)[:, 0], expected)


def test_the_documented_curl_command_works_as_curl_sends_it(client, runner):
    # `curl -d '{"instances": [1.0, 2.0, 5.0]}'` declares a form body; TF Serving reads JSON.
    response = client.post(
        "/v1/models/linear:predict", data=DOCS_ROW, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200, response.json
    assert len(response.json["predictions"]) == 3


def test_the_documented_columnar_request_answers_outputs(client, runner):
    response = post(client, "/v1/models/linear/versions/1:predict", DOCS_COLUMNAR)
    assert response.status_code == 200, response.json
    expected = runner.predict(np.array([1.0, 2.0, 5.0], np.float32))
    outputs = np.array(response.json["outputs"], np.float32)
    assert outputs.shape == (3, 1)  # TensorFlow Serving's [N, 1] tensor.
    np.testing.assert_array_equal(outputs[:, 0], expected)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"signature_name": "", "instances": [1.0]}',
        b'{"instances": [1.0], "extra": 1, "options": {"a": 1}}',
    ],
    ids=["empty-signature-name", "unknown-keys"],
)
def test_requests_tf_serving_accepts_are_accepted(client, raw):
    response = post(client, "/v1/models/linear:predict", raw)
    assert response.status_code == 200, response.json


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_classify_and_regress_answer_as_tf_serving_does_for_a_predict_only_model(client, method):
    response = post(client, f"/v1/models/linear:{method}", b'{"examples": []}')
    assert response.status_code == 400
    assert response.json["error"].startswith(
        f"Expected {'classification' if method == 'classify' else 'regression'} signature"
    )


def test_kserve_v1_liveness_and_readiness(client, app):
    assert client.get("/").json == {"status": "alive"}
    assert client.get("/v1/models/linear").json["ready"] is True
    app.extensions["serving"].draining = True
    assert client.get("/v1/models/linear").json["ready"] is False


@pytest.mark.parametrize(
    "path, raw, status, fragment",
    [
        ("/v1/models/nope:predict", DOCS_ROW, 404, "Servable not found for request: Latest(nope)"),
        ("/v1/models/linear/versions/9:predict", DOCS_ROW, 404, "served: 1"),
        ("/v1/models/linear:predict", b'{"instances": [1], "inputs": [1]}', 400, "exactly one"),
        ("/v1/models/linear:predict", b"{}", 400, "exactly one"),
        ("/v1/models/linear:predict", b'{"signature_name": "x", "instances": [1]}', 400, '"x"'),
        ("/v1/models/linear:predict", b'{"instances": ["a"]}', 400, "finite number"),
        ("/v1/models/linear:predict", b'{"instances": []}', 400, "non-empty"),
        ("/v1/models/linear:predict", b'{"inputs": {"z": [1]}}', 400, "exactly the model"),
        ("/v1/models/linear:predict", b"[", 400, "not valid JSON"),
    ],
)
def test_errors_are_an_error_object_with_the_status(client, path, raw, status, fragment):
    response = post(client, path, raw)
    assert response.status_code == status, response.json
    assert list(response.json) == ["error"] and fragment in response.json["error"]


class TestMultiTensorModel:
    @pytest.fixture
    def client(self, multi_app):
        return multi_app.test_client()

    ROW = (
        b'{"instances": [{"features": [1, 2, 3], "grid": [[1, 2], [3, 4]]},'
        b' {"features": [4, 5, 6], "grid": [[5, 6], [7, 8]]}]}'
    )
    COLUMNAR = (
        b'{"inputs": {"features": [[1, 2, 3], [4, 5, 6]],'
        b' "grid": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}}'
    )

    def expected(self, multi_keras):
        features = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
        grid = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], np.float32)
        return multi_keras.predict([features, grid], verbose=0)

    def test_row_format_with_named_inputs_answers_one_object_per_instance(
        self, client, multi_keras
    ):
        response = post(client, "/v1/models/multi:predict", self.ROW)
        assert response.status_code == 200, response.json
        scores, total = self.expected(multi_keras)
        predictions = response.json["predictions"]
        np.testing.assert_allclose([p["scores"] for p in predictions], scores, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose([p["total"] for p in predictions], total, rtol=1e-4, atol=1e-5)

    def test_columnar_format_answers_outputs_by_name(self, client, multi_keras):
        response = post(client, "/v1/models/multi:predict", self.COLUMNAR)
        assert response.status_code == 200, response.json
        scores, total = self.expected(multi_keras)
        outputs = response.json["outputs"]
        np.testing.assert_allclose(outputs["scores"], scores, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(outputs["total"], total, rtol=1e-4, atol=1e-5)


def test_the_binary_tensor_header_of_v2_is_not_honoured(client):
    # TF Serving's API has no binary extension: the whole body is the JSON document.
    document = json.dumps({"instances": [1.0]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(document))}
    plain = client.post("/v1/models/linear:predict", data=document, headers=headers)
    assert plain.status_code == 200, plain.json
    trailing = client.post(
        "/v1/models/linear:predict", data=document + b"\0\0\0\0", headers=headers
    )
    assert trailing.status_code == 400 and "not valid JSON" in trailing.json["error"]
