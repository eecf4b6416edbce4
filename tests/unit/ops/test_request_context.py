"""Request ids and response headers."""

import pytest


def test_a_well_formed_request_id_is_echoed(client):
    response = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"


@pytest.mark.parametrize("value", ["", "has space", "a" * 129, "tab\there", "ünïcode"])
def test_a_malformed_request_id_is_replaced_by_a_generated_one(client, value):
    response = client.get("/health/live", headers={"X-Request-ID": value})
    generated = response.headers["X-Request-ID"]
    assert generated != value and len(generated) == 32


def test_every_response_carries_security_headers(client):
    response = client.post("/predict", json={"instances": [1]})
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_the_docs_pages_get_a_policy_that_lets_them_run(client):
    response = client.get("/redoc")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
