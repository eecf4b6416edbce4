"""GET /model."""


def test_model_shows_the_served_versions_training_metadata(client, model_dir, runner):
    response = client.get("/model")
    assert response.status_code == 200
    body = response.json
    assert (body["name"], body["version"], body["runtime"]) == ("linear", "1", "litert")
    assert body["path"] == str(model_dir / "1")
    assert body["metadata"]["training"]["epochs"] == 20
    assert body["skipped_versions"] == []
    assert body["artifact"]["sha256"] == runner.compiled.sha256
    assert body["artifact"]["source"] == "compiled"
    assert body["monitoring"] == {"inputs": ["x"]}
    assert body["signature"]["inputs"] == [{"name": "x", "shape": [-1, 1], "dtype": "float32"}]


def test_metadata_json_cannot_write_is_shown_not_a_500(app, client, runner):
    # A 100-bit integer and a lone surrogate: orjson refuses both.
    runner.metadata["huge"] = 2**100
    runner.metadata["\ud800"] = "x"
    try:
        response = client.get("/model")
    finally:
        del runner.metadata["huge"], runner.metadata["\ud800"]
    assert response.status_code == 200
    assert response.json["metadata"]["huge"] == str(2**100)


def test_model_is_503_without_a_model(app, client):
    app.extensions["serving"].runners = {}
    assert client.get("/model").status_code == 503
