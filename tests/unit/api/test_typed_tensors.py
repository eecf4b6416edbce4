"""Typed tensors: integer, unsigned, boolean and string inputs and outputs, taken exactly.

The zoo's token classifier (int32 ids into an embedding of 1,000, an int32 top
class out), uint8 image and tabular model (float32 age, int64 country code)
and text classifier (strings, on the TensorFlow runtime) through /predict, /v2
(JSON and binary) and /v1: a value the input's dtype does not hold is a 4xx
naming the input and the type, never a silent cast.
"""

import base64
import json

import numpy as np
import pytest

from tests.conftest import serving_app, watched_runner
from tests.models import in_domain, keras_outputs
from tests.unit.api.test_open_inference import binary_request, read_binary_response


@pytest.fixture(scope="module")
def runners(zoo):
    return {
        name: watched_runner(zoo[name].model_dir)
        for name in ("token_classifier", "uint8_image", "tabular", "text_classifier")
    }


@pytest.fixture
def client_of(zoo, runners):
    """A test client of an app serving the named zoo model."""

    def client(name):
        return serving_app(zoo[name].model_dir, runners[name]).test_client()

    return client


def test_signatures_and_metadata_name_the_real_types(client_of):
    tokens = client_of("token_classifier")
    metadata = tokens.get("/v2/models/token_classifier").json
    assert metadata["inputs"] == [{"name": "tokens", "datatype": "INT32", "shape": [-1, 32]}]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {
        "label": "INT32",
        "probs": "FP32",
    }
    tabular = client_of("tabular").get("/v1/models/tabular/metadata").json
    signature = tabular["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert {name: info["dtype"] for name, info in signature["inputs"].items()} == {
        "age": "DT_FLOAT",
        "country": "DT_INT64",
    }
    (spec,) = client_of("token_classifier").get("/model").json["signature"]["inputs"]
    assert spec == {
        "name": "tokens",
        "shape": [-1, 32],
        "dtype": "int32",
        "valid_range": [-1000, 999],
    }


def test_token_ids_are_answered_as_keras_answers_on_every_api(client_of, zoo):
    client, model = client_of("token_classifier"), zoo["token_classifier"].keras
    ids = in_domain(model, 3)["tokens"]
    expected = keras_outputs(model, {"tokens": ids})
    predicted = client.post("/predict", json={"instances": ids.tolist()}).json["predictions"]
    assert [row["label"] for row in predicted] == expected["label"].ravel().tolist()
    np.testing.assert_allclose([row["probs"] for row in predicted], expected["probs"], rtol=1e-4)
    body = {
        "inputs": [
            {"name": "tokens", "shape": [3, 32], "datatype": "INT32", "data": ids.ravel().tolist()}
        ]
    }
    answer = {
        o["name"]: o
        for o in client.post("/v2/models/token_classifier/infer", json=body).json["outputs"]
    }
    assert (
        answer["label"]["datatype"] == "INT32"
        and answer["label"]["data"] == expected["label"].ravel().tolist()
    )
    # Narrower types are held exactly: INT8 and UINT16 ids are taken for an INT32 input.
    for datatype, dtype in (("INT8", "i1"), ("UINT16", "<u2")):
        data, headers = binary_request(
            {"tokens": (ids.astype(dtype), datatype)}, parameters={"binary_data_output": True}
        )
        response = client.post("/v2/models/token_classifier/infer", data=data, headers=headers)
        header, arrays = read_binary_response_typed(response)
        np.testing.assert_array_equal(arrays["label"], expected["label"])
        assert header["outputs"][0]["datatype"] == "INT32"
    rows = client.post("/v1/models/token_classifier:predict", json={"instances": ids.tolist()}).json
    assert [row["label"] for row in rows["predictions"]] == expected["label"].tolist()  # [[v]]


def read_binary_response_typed(response) -> tuple[dict, dict]:
    """The JSON header and each binary output in the datatype the header names."""
    dtypes = {"INT32": "<i4", "FP32": "<f4", "INT64": "<i8"}
    length = int(response.headers["Inference-Header-Content-Length"])
    header, rest, arrays = json.loads(response.data[:length]), response.data[length:], {}
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        arrays[output["name"]] = np.frombuffer(rest[:size], dtypes[output["datatype"]]).reshape(
            output["shape"]
        )
        rest = rest[size:]
    return header, arrays


def test_uint8_pixels_and_int64_codes_are_answered_as_keras_answers(client_of, zoo):
    image = in_domain(zoo["uint8_image"].keras, 2)["pixels"]
    data, headers = binary_request(
        {"pixels": (image, "UINT8")}, parameters={"binary_data_output": True}
    )
    response = client_of("uint8_image").post(
        "/v2/models/uint8_image/infer", data=data, headers=headers
    )
    assert response.status_code == 200, response.data[:300]
    _, arrays = read_binary_response(response)
    expected = keras_outputs(zoo["uint8_image"].keras, {"pixels": image})["classes"]
    np.testing.assert_allclose(arrays["classes"], expected, rtol=1e-4, atol=1e-6)
    rows = [{"age": [40.0], "country": [7]}, {"age": [-1.5], "country": [19]}]
    answer = client_of("tabular").post("/predict", json={"instances": rows}).json["predictions"]
    inputs = {
        "age": np.array([[40.0], [-1.5]], np.float32),
        "country": np.array([[7], [19]], np.int64),
    }
    np.testing.assert_allclose(
        answer, keras_outputs(zoo["tabular"].keras, inputs)["risk"].ravel(), rtol=1e-4
    )


@pytest.mark.parametrize(
    "name, instance, words",
    [
        ("uint8_image", 1.5, "an integer from 0 to 255"),
        ("uint8_image", 300, "an integer from 0 to 255"),
        ("uint8_image", -1, "an integer from 0 to 255"),
        ("uint8_image", True, "an integer from 0 to 255"),
        ("token_classifier", 3.0, "an integer from -2147483648 to 2147483647"),
        ("token_classifier", "7", "an integer"),
    ],
)
def test_a_json_value_the_input_type_does_not_hold_is_422_naming_the_type(
    client_of, zoo, name, instance, words
):
    example = in_domain(zoo[name].keras, 1)
    (array,) = example.values()
    row = np.full(array.shape[1:], 0, dtype=object)
    row.flat[0] = instance
    response = client_of(name).post("/predict", json={"instances": [row.tolist()]})
    assert response.status_code == 422, response.json
    assert words in json.dumps(response.json["errors"]), response.json


@pytest.mark.parametrize(
    "body, words",
    [
        ({"age": [1.0], "country": [2**63]}, "an integer from -9223372036854775808"),
        ({"age": [1.0], "country": [20]}, "within [-20, 19]"),
        ({"age": [1.0], "country": [-21]}, "within [-20, 19]"),
        ({"age": [True], "country": [2]}, "finite number"),
    ],
)
def test_a_code_beyond_the_embedding_or_the_type_is_refused_naming_it(client_of, body, words):
    response = client_of("tabular").post("/predict", json={"instances": [body]})
    assert response.status_code == 422 and words in json.dumps(response.json), response.json


@pytest.mark.parametrize(
    "datatype, data, words",
    [
        ("INT64", [1] * 32, "has datatype INT64; the model takes INT32"),
        ("FP32", [1.0] * 32, "has datatype FP32; the model takes INT32"),
        ("BOOL", [True] * 32, "has datatype BOOL"),
        ("INT32", [1.5] + [1] * 31, "1.5 is not an integer"),
        ("INT32", [1000] + [1] * 31, "within [-1000, 999]"),
    ],
)
def test_v2_refuses_a_datatype_or_value_the_input_does_not_hold(client_of, datatype, data, words):
    body = {"inputs": [{"name": "tokens", "shape": [1, 32], "datatype": datatype, "data": data}]}
    response = client_of("token_classifier").post("/v2/models/token_classifier/infer", json=body)
    assert response.status_code == 400 and words in response.json["error"], response.json


TEXTS = ["the quick brown fox", "hello world"]


def text_expected(zoo) -> np.ndarray:
    texts = np.array([[text] for text in TEXTS], dtype=object)
    return keras_outputs(zoo["text_classifier"].keras, {"text": texts})["sentiment"]


def test_strings_as_json_b64_and_length_prefixed_binary_are_answered_as_keras(client_of, zoo):
    client, expected = client_of("text_classifier"), text_expected(zoo)
    plain = client.post("/predict", json={"instances": TEXTS}).json["predictions"]
    np.testing.assert_allclose(plain, expected, rtol=1e-4)
    b64 = [{"b64": base64.b64encode(text.encode()).decode()} for text in TEXTS]
    tfs = client.post("/v1/models/text_classifier:predict", json={"instances": b64}).json
    np.testing.assert_allclose(tfs["predictions"], expected, rtol=1e-4)
    prefixed = b"".join(len(t.encode()).to_bytes(4, "little") + t.encode() for t in TEXTS)
    header = {
        "inputs": [
            {
                "name": "text",
                "shape": [2, 1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(prefixed)},
            }
        ]
    }
    document = json.dumps(header).encode()
    response = client.post(
        "/v2/models/text_classifier/infer",
        data=document + prefixed,
        headers={"Inference-Header-Content-Length": str(len(document))},
    )
    assert response.status_code == 200, response.data[:300]
    (output,) = response.json["outputs"]
    np.testing.assert_allclose(np.reshape(output["data"], (2, 2)), expected, rtol=1e-4)
    metadata = client.get("/v2/models/text_classifier").json
    assert metadata["platform"] == "tensorflow_savedmodel"
    assert metadata["inputs"][0]["datatype"] == "BYTES"
    model = client.get("/model").json
    assert model["runtime"] == "tensorflow" and model["artifact"]["file"] == "compiled_savedmodel/"


@pytest.mark.parametrize(
    "instance, words",
    [({"b64": "not base64!"}, "a string"), (7, "a string"), ([["nested"]], "one-element list")],
)
def test_a_value_that_is_no_string_is_refused_for_a_string_input(client_of, instance, words):
    response = client_of("text_classifier").post("/predict", json={"instances": [instance]})
    assert response.status_code == 422 and words in json.dumps(response.json), response.json


@pytest.mark.parametrize(
    "prefixed",
    [
        (100).to_bytes(4, "little") + b"short",  # A length past the data.
        (2).to_bytes(4, "little") + b"ab" + b"extra",  # Bytes after the last element.
        (2).to_bytes(4, "little") + b"ab",  # One element for two.
    ],
)
def test_bytes_length_prefixes_that_lie_are_400(client_of, prefixed):
    tensor = {
        "name": "text",
        "shape": [2, 1],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(prefixed)},
    }
    document = json.dumps({"inputs": [tensor]}).encode()
    response = client_of("text_classifier").post(
        "/v2/models/text_classifier/infer",
        data=document + prefixed,
        headers={"Inference-Header-Content-Length": str(len(document))},
    )
    assert response.status_code == 400 and "length prefixes" in response.json["error"]
