"""Per-request bookkeeping: request id, worker pid and security headers."""

import os
import re
import uuid

from flask import Flask, g, request

# Printable ASCII without spaces, bounded: safe to echo and to log.
REQUEST_ID = re.compile(r"[!-~]{1,128}")

DOCS_PATHS = ("/redoc", "/swagger-ui")
# The docs pages run their own scripts and styles (some inline) and ReDoc
# starts a web worker from a blob; everything else is JSON and needs nothing.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"


def register_request_hooks(app: Flask) -> None:
    app.before_request(assign_request_id)
    app.after_request(add_response_headers)


def assign_request_id() -> None:
    """Accept a well-formed ``X-Request-ID`` from the client or make one."""
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def add_response_headers(response):
    response.headers["X-Request-ID"] = g.get("request_id") or uuid.uuid4().hex
    # Lets operators and tests see which Gunicorn worker answered.
    response.headers["X-Worker-PID"] = str(os.getpid())
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    is_docs = request.path.startswith(DOCS_PATHS)
    response.headers["Content-Security-Policy"] = DOCS_CSP if is_docs else API_CSP
    if not is_docs:
        # Predictions and health are per-moment answers: never cache them.
        response.headers["Cache-Control"] = "no-store"
    return response
