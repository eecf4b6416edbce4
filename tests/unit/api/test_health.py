"""Liveness and readiness."""


def test_live_answers_200_even_without_a_model(app, client):
    app.extensions["serving"].runners = {}
    assert client.get("/health/live").json == {"status": "alive"}


def test_ready_names_the_served_model(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "model": {"name": "linear", "version": "1"}}


def test_ready_is_503_until_the_model_is_loaded(app, client):
    app.extensions["serving"].runners = {}
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json["status"] == "loading"


def test_ready_is_503_while_the_worker_drains(app, client):
    app.extensions["serving"].draining = True
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json["status"] == "draining"
