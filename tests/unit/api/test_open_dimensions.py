"""Dimensions the model leaves open: the request sets their size, one size per batch.

The zoo's sequence model takes sequences of any length of 4 features and
answers one value per step and one pooled value; the length comes from each
request, bounded by MAX_TENSOR_ELEMENTS, and a ragged batch is a 4xx.
"""

import numpy as np
import pytest

from tests.conftest import serving_app, watched_runner
from tests.models import keras_outputs


@pytest.fixture(scope="module")
def runner(zoo):
    return watched_runner(zoo["sequence_model"].model_dir)


@pytest.fixture
def app(zoo, runner):
    return serving_app(zoo["sequence_model"].model_dir, runner)


def sequences(rows: int, length: int) -> np.ndarray:
    return np.random.default_rng(length).normal(0, 1, (rows, length, 4)).astype(np.float32)


def test_the_signature_says_which_dimensions_are_open(app):
    (steps,) = app.test_client().get("/v2/models/sequence_model").json["inputs"]
    assert steps["shape"] == [-1, -1, 4]


@pytest.mark.parametrize("length", [1, 3, 50])
def test_each_request_sets_the_length_and_is_answered_as_keras(app, zoo, length):
    batch = sequences(2, length)
    response = app.test_client().post("/predict", json={"instances": batch.tolist()})
    assert response.status_code == 200, response.json
    expected = keras_outputs(zoo["sequence_model"].keras, {"steps": batch})
    per_step = np.array([row["per_step"] for row in response.json["predictions"]])
    assert per_step.shape == (2, length, 2)
    np.testing.assert_allclose(per_step, expected["per_step"], rtol=1e-4, atol=1e-5)
    body = {
        "inputs": [
            {
                "name": "steps",
                "shape": [2, length, 4],
                "datatype": "FP32",
                "data": batch.ravel().tolist(),
            }
        ]
    }
    outputs = app.test_client().post("/v2/models/sequence_model/infer", json=body).json["outputs"]
    assert {o["name"]: o["shape"] for o in outputs} == {
        "per_step": [2, length, 2],
        "pooled": [2, 1],
    }


def test_a_ragged_batch_is_refused_naming_the_instance(app):
    ragged = [sequences(1, 3)[0].tolist(), sequences(1, 5)[0].tolist()]
    response = app.test_client().post("/predict", json={"instances": ragged})
    assert response.status_code == 422
    (message,) = response.json["errors"]["json"]["instances"]["1"]
    assert "shape of the first instance, [3, 4]" in message


@pytest.mark.parametrize(
    "shape, words", [([1, 0, 4], "has shape [1, 0, 4]"), ([1, 3, 5], "the model takes [-1, -1, 4]")]
)
def test_v2_refuses_a_shape_the_open_dimensions_do_not_fit(app, shape, words):
    size = int(np.prod(shape))
    body = {"inputs": [{"name": "steps", "shape": shape, "datatype": "FP32", "data": [0.0] * size}]}
    response = app.test_client().post("/v2/models/sequence_model/infer", json=body)
    assert response.status_code == 400 and words in response.json["error"]


def test_a_sequence_over_max_tensor_elements_is_413(app):
    app.config["MAX_TENSOR_ELEMENTS"] = 1000
    body = {
        "inputs": [
            {"name": "steps", "shape": [1, 300, 4], "datatype": "FP32", "data": [0.0] * 1200}
        ]
    }
    response = app.test_client().post("/v2/models/sequence_model/infer", json=body)
    assert response.status_code == 413 and "MAX_TENSOR_ELEMENTS=1,000" in response.json["error"]
    answer = app.test_client().post("/predict", json={"instances": [[[0.0] * 4] * 250]})
    assert answer.status_code == 200, answer.json
