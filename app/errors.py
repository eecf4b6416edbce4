"""Every error handler, all answering in flask-smorest's JSON shape."""

import logging

from flask import Flask, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError

from app.ops.error_shape import bounded, error_payload
from app.ops.json_provider import dumps

log = logging.getLogger(__name__)


def register_error_handlers(app: Flask) -> None:
    # Registered after Api.init_app, so these replace flask-smorest's handler
    # and every error, including 404/405 and crashes, has the same four keys.
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected_exception)


# Paths whose protocols define their own error body: {"error": "..."}.
PROTOCOL_PREFIXES = ("/v2", "/v1/")


def error_response(code: int, status: str, message: str, errors: dict | None = None, headers=()):
    """A JSON error response: the one shape, or ``{"error"}`` on the protocol routes."""
    if has_request_context() and request.path.startswith(PROTOCOL_PREFIXES):
        details = f": {dumps(bounded(errors)).decode()}" if errors else ""
        response = jsonify({"error": f"{message.rstrip('.') if details else message}{details}"})
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
