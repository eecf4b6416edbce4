"""POST /predict through the app factory."""

import numpy as np
import pytest


def predict(client, body, **kwargs):
    return client.post("/predict", json=body, **kwargs)


def test_predictions_come_from_the_model_with_its_name_and_version(client, keras_model):
    response = predict(client, {"instances": [10.0, -1.5]})
    assert response.status_code == 200
    expected = keras_model.predict(np.array([[10.0], [-1.5]]), verbose=0).reshape(-1)
    np.testing.assert_allclose(response.json["predictions"], expected, rtol=1e-6)
    assert response.json["model"] == {"name": "linear", "version": "1"}


def test_row_format_gives_the_same_predictions_as_bare_numbers(client):
    rows = predict(client, {"instances": [[10], [2]]}).json["predictions"]
    assert rows == predict(client, {"instances": [10, 2]}).json["predictions"]


def test_a_full_batch_gets_one_prediction_per_instance_in_order(app, client, runner):
    instances = np.linspace(-50, 50, app.config["MAX_BATCH_SIZE"]).tolist()
    response = predict(client, {"instances": instances})
    assert response.status_code == 200
    np.testing.assert_allclose(
        response.json["predictions"], runner.predict(np.float32(instances)), rtol=1e-6
    )


def test_a_batch_over_the_limit_is_refused_with_413(app, client):
    app.config["MAX_BATCH_SIZE"] = 3
    response = predict(client, {"instances": [1, 2, 3, 4]})
    assert response.status_code == 413
    assert "MAX_BATCH_SIZE=3" in response.json["message"]


def test_without_a_model_predict_answers_503(app, client):
    app.extensions["serving"].runners = {}
    response = predict(client, {"instances": [1]})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"


def test_a_non_finite_prediction_is_refused_with_422_not_emitted(app, client, runner, monkeypatch):
    monkeypatch.setattr(runner, "run", lambda xs: [np.full(xs[0].shape, np.inf, np.float32)])
    response = predict(client, {"instances": [1, 2]})
    assert response.status_code == 422
    assert set(response.json["errors"]["instances"]) == {"0", "1"}


@pytest.mark.parametrize("instance", [2e38, -2e38, 3.4028234e38, [-3.4028234e38]])
def test_an_input_whose_prediction_overflows_is_422_never_a_saturated_200(client, instance):
    # y = wx + b (w above 2) overflows float32 here; LiteRT would answer +-3.4028235e38.
    response = predict(client, {"instances": [1, instance]})
    assert response.status_code == 422, response.json
    assert list(response.json["errors"]["instances"]) == ["1"]


@pytest.mark.parametrize(
    "body, status",
    [
        ({}, 422),
        ({"instances": []}, 422),
        ({"instances": ["1"]}, 422),
        ({"instances": [1], "extra": True}, 422),
        ([1, 2], 422),
    ],
)
def test_schema_violations_are_422_json(client, body, status):
    response = predict(client, body)
    assert response.status_code == status
    assert set(response.json) == {"code", "status", "message", "errors"}


def test_a_body_that_is_not_json_is_400(client):
    response = client.post("/predict", data="{", content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in response.json["message"]


def test_a_content_type_that_is_not_json_is_415(client):
    response = client.post("/predict", data='{"instances": [1]}', content_type="text/plain")
    assert response.status_code == 415


@pytest.mark.parametrize("size", [1, 16, 17, 1000])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan, 3.4028235e38, -3.4028235e38])
def test_a_non_finite_prediction_is_found_at_any_batch_size(size, bad):
    from app.core.inference import all_finite

    values = np.ones(size, np.float32)
    assert all_finite(values)
    values[-1] = bad
    assert not all_finite(values)
