"""Gunicorn's own error answers (malformed HTTP, a timed-out request) in the API's JSON shape."""

import uuid
from http import HTTPStatus

import orjson
from gunicorn import util

from app.ops.error_shape import error_payload
from app.ops.request_context import API_CSP, SECURITY_HEADERS


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error``, which writes an HTML page.

    The reason phrase comes from the status code (Gunicorn passes "Bad Request"
    with its 501), and the headers are those of every other response.
    """
    try:
        reason = HTTPStatus(status_int).phrase
    except ValueError:
        pass
    body = orjson.dumps(error_payload(status_int, reason, mesg or reason))
    headers = {
        "Connection": "close",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "X-Request-ID": uuid.uuid4().hex,
        **SECURITY_HEADERS,
        "Content-Security-Policy": API_CSP,
        "Cache-Control": "no-store",
    }
    head = f"HTTP/1.1 {status_int} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    util.write_nonblock(sock, head.encode("latin-1") + b"\r\n" + body)


def install() -> None:
    """Route Gunicorn's error pages through ``write_json_error`` in this process and its forks."""
    util.write_error = write_json_error
