"""/predict for any fixed-shape float model: several inputs and outputs, checked against Keras."""

import numpy as np
import pytest


@pytest.fixture
def client(multi_app):
    return multi_app.test_client()


def batch(size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = rng.uniform(-5, 5, (size, 3)).astype(np.float32)
    grid = rng.uniform(-5, 5, (size, 2, 2)).astype(np.float32)
    return features, grid


def keras_outputs(model, features, grid):
    scores, total = model.predict([features, grid], verbose=0)
    return scores, total


def test_instances_keyed_by_input_name_get_predictions_keyed_by_output(client, multi_keras):
    features, grid = batch(5)
    pairs = zip(features, grid, strict=True)
    instances = [{"features": f.tolist(), "grid": g.tolist()} for f, g in pairs]
    response = client.post("/predict", json={"instances": instances})
    assert response.status_code == 200, response.json
    predictions = response.json["predictions"]
    scores, total = keras_outputs(multi_keras, features, grid)
    np.testing.assert_allclose([p["scores"] for p in predictions], scores, rtol=1e-5, atol=1e-6)
    # An output of one number is a bare number per instance.
    np.testing.assert_allclose([p["total"] for p in predictions], total[:, 0], rtol=1e-5, atol=1e-6)
    assert response.json["model"] == {"name": "multi", "version": "1"}


@pytest.mark.parametrize(
    "instance, place",
    [
        ({"features": [1, 2], "grid": [[1, 2], [3, 4]]}, "features"),
        ({"features": [1, 2, 3], "grid": [1, 2, 3, 4]}, "grid"),
        ({"features": [1, 2, "3"], "grid": [[1, 2], [3, 4]]}, "features"),
        ({"features": [1, 2, 3], "grid": [[1, 2], [3, True]]}, "grid"),
        ({"features": [1, 2, 3], "grid": [[1, 2], [3, 1e39]]}, "grid"),
        ({"features": [1, 2, 3]}, None),
        ({"features": [1, 2, 3], "grid": [[1, 2], [3, 4]], "extra": 1}, None),
        ([1, 2, 3], None),
    ],
    ids=[
        "short-feature",
        "flat-grid",
        "string",
        "boolean",
        "out-of-float32",
        "missing-input",
        "unknown-input",
        "not-an-object",
    ],
)
def test_an_instance_that_does_not_fit_the_signature_is_422_naming_index_and_input(
    client, instance, place
):
    good = {"features": [0, 0, 0], "grid": [[0, 0], [0, 0]]}
    response = client.post("/predict", json={"instances": [good, instance]})
    assert response.status_code == 422, response.json
    errors = response.json["errors"]["json"]["instances"]
    assert list(errors) == ["1"]
    if place:
        assert list(errors["1"]) == [place]


def test_a_version_without_an_input_profile_watches_nothing_and_says_so(client):
    monitoring = client.get("/model").json["monitoring"]
    assert monitoring["inputs"] == [] and "no input profile" in monitoring["note"]


def test_the_signature_is_published_in_model(client):
    signature = client.get("/model").json["signature"]
    assert signature["inputs"] == [
        {"name": "features", "shape": [-1, 3], "dtype": "float32"},
        {"name": "grid", "shape": [-1, 2, 2], "dtype": "float32"},
    ]
    assert [output["name"] for output in signature["outputs"]] == ["scores", "total"]
