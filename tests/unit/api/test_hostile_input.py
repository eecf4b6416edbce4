"""Careless and hostile requests: each gets a clear 4xx JSON error, and the app keeps serving."""

import io
import json

import pytest

from app import create_app
from app.core.serving import ServingState, serving_state
from tests.conftest import serving_app

SHAPE = {"code", "status", "message", "errors"}
JSON = "application/json"


def send(client, body: bytes | str, content_type=JSON, **kwargs):
    return client.post("/predict", data=body, content_type=content_type, **kwargs)


def assert_json_error(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == JSON
    assert set(response.json) == SHAPE and response.json["code"] == status
    assert "Traceback" not in response.get_data(as_text=True)


@pytest.fixture(autouse=True)
def still_serving(client):
    """After every bad request, a good one is still answered."""
    yield
    assert send(client, '{"instances": [1]}').status_code == 200


@pytest.mark.parametrize(
    "body, status",
    [
        ("{", 400),
        ("", 400),
        ("null", 422),
        ("[1, 2]", 422),
        ('"instances"', 422),
        ("42", 422),
        (b"\xff\xfe{}", 400),
        (b'{"instances": [1\xc3]}', 400),
        ('\ufeff{"instances": [1]}', 400),
        ('{"instances": [1]} trailing', 400),
        ("[" * 100_000 + "]" * 100_000, 400),
        ('{"instances": [' + "9" * 5000 + "]}", 400),
    ],
    ids=[
        "malformed",
        "empty",
        "null",
        "array",
        "string",
        "number",
        "not-utf8",
        "truncated-utf8",
        "byte-order-mark",
        "trailing-garbage",
        "nested-100k",
        "integer-over-4300-digits",
    ],
)
def test_bodies_that_are_not_a_json_object_are_refused(client, body, status):
    assert_json_error(send(client, body), status)


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data", "application/xml"])
def test_a_content_type_that_is_not_json_is_415(client, content_type):
    response = client.post("/predict", data='{"instances": [1]}', content_type=content_type)
    assert_json_error(response, 415)


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
def test_a_json_body_without_a_type_or_with_curls_default_is_read(client, content_type):
    # A /v2 or /v1 command (curl -d, no -H) copied onto /predict works as it does there.
    response = client.post("/predict", data='{"instances": [1]}', content_type=content_type)
    assert response.status_code == 200, response.json
    assert_json_error(client.post("/predict", data="nope", content_type=content_type), 400)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.api+json",
        "application/ld+json",
        "application/+json",
        f"{JSON}; charset=",
        f'{JSON}; charset=""',
        "application/jsonx",
    ],
)
def test_json_flavours_and_empty_charsets_are_415(client, content_type):
    assert_json_error(send(client, '{"instances": [1]}', content_type), 415)


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Encoding": "gzip"},
        {"Content-Encoding": "deflate"},
        {"Content-Encoding": "br, identity"},
        {"Transfer-Encoding": "gzip, chunked"},
    ],
)
def test_a_body_encoding_the_server_does_not_decode_is_415_not_ignored(client, headers):
    assert_json_error(send(client, '{"instances": [1]}', headers=headers), 415)


def test_a_key_with_a_lone_surrogate_is_a_422_not_a_500(client):
    response = send(client, '{"instances": [1], "\\ud800": 1}')
    assert_json_error(response, 422)


def test_an_error_lists_at_most_ten_entries_per_level(client):
    body = {"instances": [1], **{f"k{i}": 1 for i in range(90_000)}}
    response = send(client, json.dumps(body, separators=(",", ":")))
    assert_json_error(response, 422)
    listed = response.json["errors"]["json"]
    assert len(listed) == 11 and listed["..."] == ["and 89990 more"]
    assert len(response.data) < 2000


@pytest.mark.parametrize("charset", ["latin-1", "utf-16", "ebcdic"])
def test_json_in_another_charset_is_415(client, charset):
    assert_json_error(send(client, '{"instances": [1]}', f"{JSON}; charset={charset}"), 415)


@pytest.mark.parametrize("content_type", [f"{JSON}; charset=utf-8", f"{JSON}; charset=UTF-8"])
def test_json_declared_as_utf8_is_accepted(client, content_type):
    assert send(client, '{"instances": [1]}', content_type).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"instance": [1]},
        {"instances": [1], "extra": 1},
        {"instances": 1},
        {"instances": "1, 2"},
        {"instances": {"0": 1}},
        {"instances": None},
        {"instances": []},
    ],
    ids=["missing", "misspelt", "extra-field", "number", "string", "object", "null", "empty"],
)
def test_a_body_without_a_non_empty_list_of_instances_is_422(client, body):
    assert_json_error(send(client, json.dumps(body)), 422)


@pytest.mark.parametrize(
    "element",
    [
        '"10"',
        "true",
        "false",
        "null",
        '{"x": 1}',
        "[]",
        "[1, 2]",
        "[[1]]",
        "NaN",
        "Infinity",
        "-Infinity",
        "1e309",
        "-1e309",
        "1e39",
        "1" + "0" * 400,
    ],
)
def test_elements_that_are_not_finite_float32_numbers_are_422_with_their_index(client, element):
    response = send(client, '{"instances": [1, ' + element + "]}")
    assert_json_error(response, 422)
    assert list(response.json["errors"]["json"]["instances"]) == ["1"]


def test_a_batch_over_max_batch_size_is_413(app, client):
    app.config["MAX_BATCH_SIZE"] = 5
    assert_json_error(send(client, json.dumps({"instances": [1] * 6})), 413)


def test_a_body_over_max_content_length_is_413_before_it_is_read(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 100
    response = send(client, json.dumps({"instances": [1] * 100}))
    assert_json_error(response, 413)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "HEAD"])
def test_other_methods_on_predict_are_405_with_allow(client, method):
    response = client.open("/predict", method=method)
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    if method != "HEAD":
        assert_json_error(response, 405)


def test_options_lists_the_allowed_methods(client):
    response = client.options("/predict")
    assert response.status_code == 200
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    "path",
    ["/nope", "/predict/", "/predict/a/b", "/../etc/passwd", "/%00", "/health//live", "/model//"],
)
def test_unknown_paths_are_404_json_never_a_redirect(client, path):
    assert_json_error(client.get(path), 404)


def test_head_on_a_probe_answers_without_a_body(client):
    response = client.head("/health/live")
    assert response.status_code == 200 and response.data == b""


class TestToken:
    @pytest.fixture
    def app(self, model_dir, runner):
        return serving_app(model_dir, runner, API_TOKEN="s3cret-token")

    @pytest.mark.parametrize("authorization", ["Bearer s3cret-token", "Bearer   s3cret-token"])
    def test_the_token_is_accepted_after_one_or_more_spaces(self, client, authorization):
        response = send(client, '{"instances": [1]}', headers={"Authorization": authorization})
        assert response.status_code == 200

    def test_options_needs_no_token(self, client):
        response = client.options("/predict")
        assert response.status_code == 200 and "POST" in response.headers["Allow"]

    def test_a_non_ascii_token_can_be_matched(self, model_dir, runner):
        app = serving_app(model_dir, runner, API_TOKEN="clé-secrète")
        # What an HTTP client sends: the UTF-8 bytes, which WSGI hands over as latin-1 text.
        header = "Bearer clé-secrète".encode().decode("latin-1")
        response = send(app.test_client(), '{"instances": [1]}', headers={"Authorization": header})
        assert response.status_code == 200

    @pytest.fixture
    def still_serving(self, client):
        yield
        headers = {"Authorization": "Bearer s3cret-token"}
        assert send(client, '{"instances": [1]}', headers=headers).status_code == 200

    @pytest.mark.parametrize(
        "authorization",
        [None, "", "Bearer", "Bearer wrong", "Basic czNjcmV0LXRva2Vu", "Bearer s3cret-token2"],
    )
    def test_predict_without_the_token_is_401_with_www_authenticate(self, client, authorization):
        headers = {"Authorization": authorization} if authorization is not None else {}
        response = send(client, '{"instances": [1]}', headers=headers)
        assert_json_error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    def test_the_token_is_checked_before_the_body_is_parsed(self, client):
        assert_json_error(send(client, "{not json"), 401)

    @pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics", "/openapi.json"])
    def test_probes_metrics_and_docs_stay_open(self, client, path):
        assert client.get(path).status_code == 200


def test_the_worker_pid_is_not_told_to_clients_by_default(client):
    assert "X-Worker-PID" not in client.get("/health/live").headers


def test_debug_mode_is_off_outside_tests():
    app = create_app()
    assert not app.debug and not app.testing


def test_a_chunked_body_over_max_content_length_is_413(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 100
    body = json.dumps({"instances": [1] * 100}).encode()
    response = client.post(
        "/predict",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": JSON, "Transfer-Encoding": "chunked"},
    )
    assert_json_error(response, 413)


def test_a_body_that_misses_its_deadline_is_408_naming_body_timeout(app, client):
    def expired(seconds):  # What the gevent worker's deadline raises once it passes.
        raise TimeoutError

    serving_state(app).body_deadline = expired
    try:
        response = send(client, '{"instances": [1]}')
    finally:
        serving_state(app).body_deadline = ServingState.body_deadline
    assert_json_error(response, 408)
    assert "BODY_TIMEOUT" in response.json["message"]
