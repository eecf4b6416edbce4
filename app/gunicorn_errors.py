"""Gunicorn's own error answers (malformed HTTP, a timed-out request) in the API's JSON shape."""

import orjson
from gunicorn import util

from app.errors import error_payload


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error``, which writes an HTML page."""
    body = orjson.dumps(error_payload(status_int, reason, mesg or reason))
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    """Route Gunicorn's error pages through ``write_json_error`` in this process and its forks."""
    util.write_error = write_json_error
