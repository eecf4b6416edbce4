"""Every error handler, all answering in flask-smorest's JSON shape."""

import logging

from flask import Flask, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError

from app.json_provider import dumps

log = logging.getLogger(__name__)


def register_error_handlers(app: Flask) -> None:
    # Registered after Api.init_app, so these replace flask-smorest's handler
    # and every error, including 404/405 and crashes, has the same four keys.
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected_exception)


# Entries kept at each level of ``errors``: 90,000 unknown keys must not make a 2.5 MB answer.
MAX_REPORTED_ERRORS = 10
# Characters of a client's value echoed in an error message: a 20 kB model name
# must not make a 20 kB message (past a gRPC client's 16 kB metadata limit).
SHOWN_CHARACTERS = 64


def cut(text) -> str:
    """A client's string (or value) for an error message: at most SHOWN_CHARACTERS, then "…"."""
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= SHOWN_CHARACTERS else f"{text[:SHOWN_CHARACTERS]}…"


def error_payload(code: int, status: str, message: str, errors: dict | None = None) -> dict:
    """The one error shape: ``code``, ``status``, ``message``, ``errors`` (bounded)."""
    return {"code": code, "status": status, "message": message, "errors": bounded(errors or {})}


def bounded(errors, what: str = ""):
    """At most ``MAX_REPORTED_ERRORS`` entries per dict or list, then "and N more ``what``"."""
    if not isinstance(errors, dict | list) or len(errors) <= MAX_REPORTED_ERRORS:
        return {k: bounded(v) for k, v in errors.items()} if isinstance(errors, dict) else errors
    more = f"and {len(errors) - MAX_REPORTED_ERRORS} more {what}".rstrip()
    if isinstance(errors, dict):
        kept = {key: bounded(value) for key, value in list(errors.items())[:MAX_REPORTED_ERRORS]}
        return {**kept, "...": [more]}
    return [*errors[:MAX_REPORTED_ERRORS], more]


# Paths whose protocols define their own error body: {"error": "..."}.
PROTOCOL_PREFIXES = ("/v2", "/v1/")


def error_response(code: int, status: str, message: str, errors: dict | None = None, headers=()):
    """A JSON error response: the one shape, or ``{"error"}`` on the protocol routes."""
    if has_request_context() and request.path.startswith(PROTOCOL_PREFIXES):
        details = f": {dumps(bounded(errors)).decode()}" if errors else ""
        response = jsonify({"error": f"{message}{details}"})
    else:
        response = jsonify(error_payload(code, status, message, errors))
    response.status_code = code
    response.headers.extend(headers)
    return response


def handle_http_exception(error: HTTPException):
    """Answer an ``abort`` or a routing error with its code, keeping its headers."""
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages") or {}
    message = data.get("message") or (
        "The request body is invalid; see errors." if errors else error.description
    )
    # Keep Allow (405), WWW-Authenticate (401), Retry-After; drop werkzeug's HTML type.
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    headers.extend((data.get("headers") or {}).items())
    return error_response(error.code, error.name, message, errors, headers)


def handle_unexpected_exception(error: Exception):
    """Log the traceback for the operator; tell the client only that it failed."""
    log.exception("unhandled exception: %s", error)
    server_error = InternalServerError()
    return error_response(server_error.code, server_error.name, "Internal server error.")
