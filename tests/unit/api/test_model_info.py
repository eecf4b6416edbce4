"""GET /model."""


def test_model_shows_the_served_versions_training_metadata(client, model_dir):
    response = client.get("/model")
    assert response.status_code == 200
    body = response.json
    assert (body["name"], body["version"], body["runtime"]) == ("linear", "1", "litert")
    assert body["path"] == str(model_dir / "1")
    assert body["metadata"]["training"]["epochs"] == 20
    assert body["skipped_versions"] == []


def test_model_is_503_without_a_model(app, client):
    app.extensions["serving"].runner = None
    assert client.get("/model").status_code == 503
