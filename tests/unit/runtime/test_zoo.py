"""The zoo: each model a team trains compiles small and serves what Keras computes.

The zoo (tests/models.py): an MLP, a softmax classifier with a Normalization
layer, a small CNN, MobileNetV3Small and a functional model with dict inputs
and outputs, each asked through /predict, Open Inference v2 and TF Serving's v1.
"""

import logging

import keras
import numpy as np
import pytest

from app.runtime.artifact import FLOAT32_MAX, GOLDEN_FILE, SIGNATURE_FILE
from app.runtime.compiler import tensor_specs
from tests.conftest import save_version, serving_app, watched_runner
from tests.models import (
    APIS,
    ZOO_NAMES,
    assert_agrees,
    extreme,
    in_domain,
    keras_outputs,
    outputs_from,
    request_for,
)
from training.compile import main as compile_main


@pytest.fixture(scope="module")
def runners(zoo):
    return {name: watched_runner(zoo[name].model_dir) for name in ZOO_NAMES}


@pytest.fixture(params=ZOO_NAMES)
def served(request, zoo, runners):
    """A zoo model and a test client of an app that serves it."""
    entry = zoo[request.param]
    app = serving_app(entry.model_dir, runners[request.param])
    return entry, app.test_client()


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_the_files_beside_the_flatbuffer_stay_small_whatever_the_input_shape(zoo, name):
    version = zoo[name].model_dir / "1"
    beside = sum((version / file).stat().st_size for file in (SIGNATURE_FILE, GOLDEN_FILE))
    assert beside < 100_000


@pytest.mark.parametrize("api", APIS)
def test_every_zoo_model_agrees_with_keras_on_in_domain_instances(served, api):
    entry, client = served
    inputs = in_domain(entry.keras, rows=1 if entry.name == "mobilenet" else 3)
    path, body = request_for(api, entry.name, inputs)
    response = client.post(path.replace(entry.name, entry.model_dir.name), json=body)
    assert response.status_code == 200, response.json
    outputs = outputs_from(api, response.json, tensor_specs(entry.keras)[1])
    assert_agrees(outputs, keras_outputs(entry.keras, inputs))


@pytest.mark.parametrize("value", [FLOAT32_MAX, -FLOAT32_MAX, 1e38, -1e30, 1e20])
def test_an_extreme_instance_is_refused_with_a_4xx_or_answered_exactly_as_keras(served, value):
    entry, client = served
    inputs = {name: extreme(array, value) for name, array in in_domain(entry.keras, 1).items()}
    path, body = request_for("v2", entry.name, inputs)
    response = client.post(path, json=body)
    if response.status_code == 200:
        outputs = outputs_from("v2", response.json, tensor_specs(entry.keras)[1])
        assert_agrees(outputs, keras_outputs(entry.keras, inputs))
    else:
        assert 400 <= response.status_code < 500 and response.json["error"]


@pytest.fixture
def wide_client(zoo):
    """A client of an app serving a model with 4 numbers in and 10,000 out per instance."""
    entry = zoo["wide_output"]
    return serving_app(entry.model_dir, watched_runner(entry.model_dir)).test_client()


def test_a_batch_whose_answer_would_exceed_max_tensor_elements_is_413_before_it_runs(wide_client):
    response = wide_client.post("/predict", json={"instances": [[0, 0, 0, 0]] * 105})
    assert response.status_code == 413
    assert "limit of 104" in response.json["message"]
    assert "MAX_TENSOR_ELEMENTS=1,048,576" in response.json["message"]


def test_a_batch_within_max_tensor_elements_is_answered_whole(wide_client):
    response = wide_client.post("/predict", json={"instances": [[1, 2, 3, 4]] * 104})
    assert response.status_code == 200
    assert np.array(response.json["predictions"]).shape == (104, 100, 100)


def test_a_prediction_log_line_summarises_large_tensors(zoo, caplog):
    entry = zoo["cnn"]
    app = serving_app(entry.model_dir, watched_runner(entry.model_dir))
    app.config["PREDICTION_LOG_SAMPLE_RATE"] = 1.0
    image = in_domain(entry.keras, 2)["image"]
    with caplog.at_level(logging.INFO, logger="app.predictions"):
        response = app.test_client().post("/predict", json={"instances": image.tolist()})
    assert response.status_code == 200
    (record,) = [r for r in caplog.records if r.name == "app.predictions"]
    assert record.instances["image"] == {
        "shape": [2, 28, 28, 1],
        "min": float(image.min()),
        "max": float(image.max()),
        "mean": pytest.approx(float(image.mean(dtype=np.float64)), rel=1e-6),
    }
    assert len(record.predictions["digits"]) == 2  # 20 numbers: logged whole.


def test_a_model_that_cannot_be_served_is_one_line_never_a_traceback(tmp_path, capsys):
    inputs = keras.Input((2,), dtype="bfloat16", name="codes")
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    save_version(model, tmp_path, 1, compiled=False)
    assert compile_main([str(tmp_path / "1")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "codes" in line and "bfloat16" in line and "Traceback" not in line


BAD_PIXELS = [True, "1.5", None, 1e39, 10**400, {}]


# v2 reads nested data as its numbers in row-major order however nested, so an
# extra list around a pixel is refused only where rows must have the input's shape.
@pytest.mark.parametrize(
    "api, bad", [(api, bad) for api in APIS for bad in BAD_PIXELS + [[1.0]] * (api != "v2")]
)
def test_one_bad_pixel_in_an_image_is_refused_naming_the_instance(zoo, runners, api, bad):
    entry = zoo["cnn"]
    client = serving_app(entry.model_dir, runners["cnn"]).test_client()
    images = in_domain(entry.keras, 2)["image"].tolist()
    images[1][27][3][0] = bad
    if api == "v2":
        tensor = {"name": "image", "shape": [2, 28, 28, 1], "datatype": "FP32", "data": images}
        response = client.post("/v2/models/cnn/infer", json={"inputs": [tensor]})
    else:
        path = "/predict" if api == "predict" else "/v1/models/cnn:predict"
        response = client.post(path, json={"instances": images})
    assert response.status_code == (422 if api == "predict" else 400), response.json
    if api == "predict":
        assert list(response.json["errors"]["json"]["instances"]) == ["1"]
