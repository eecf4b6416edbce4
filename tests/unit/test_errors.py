"""Every error is JSON in one shape, never HTML and never a traceback."""

import pytest
from flask import Blueprint

from app import create_app

SHAPE = {"code", "status", "message", "errors"}


@pytest.mark.parametrize(
    "method, path, status",
    [("get", "/nope", 404), ("put", "/predict", 405), ("get", "/predict", 405)],
)
def test_routing_errors_are_json(client, method, path, status):
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.is_json and set(response.json) == SHAPE


def test_405_lists_the_allowed_methods(client):
    response = client.delete("/predict")
    assert "POST" in response.headers["Allow"]


def test_an_unhandled_exception_is_a_generic_json_500_without_traceback(caplog):
    app = create_app()  # not TESTING: exceptions are handled, as in production
    broken = Blueprint("broken", __name__)

    @broken.route("/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    app.register_blueprint(broken)
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.json == {
        "code": 500,
        "status": "Internal Server Error",
        "message": "Internal server error.",
        "errors": {},
    }
    assert "secret" not in response.get_data(as_text=True)
    assert "secret internal detail" in caplog.text
