"""Per-request bookkeeping: request id, metrics, worker pid and security headers."""

import itertools
import os
import re
import time

from flask import Flask, current_app, g, request

from app.extensions import IN_FLIGHT, REQUEST_SECONDS, REQUESTS
from app.ops import statistics
from app.ops.logs import MODEL_ENVIRON, VERSION_ENVIRON

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
# On every response, Gunicorn's own error answers included.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

# Every API answer's constant headers, added at once: none of the API's views sets them.
API_HEADERS = [
    *SECURITY_HEADERS.items(),
    ("Content-Security-Policy", API_CSP),
    # Predictions and health are per-moment answers: never cache them.
    ("Cache-Control", "no-store"),
]
DOCS_HEADERS = {**SECURITY_HEADERS, "Content-Security-Policy": DOCS_CSP}

# Any other method token a client invents is counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestIds:
    """Request ids unique across processes and restarts: 16 random hex digits for each
    process, then a counter. ``uuid4`` read the kernel's random source on every request."""

    def __init__(self):
        self.restart()
        os.register_at_fork(after_in_child=self.restart)  # A worker: a prefix of its own.

    def restart(self) -> None:
        self.prefix, self.count = os.urandom(8).hex(), itertools.count()

    def new(self) -> str:
        return f"{self.prefix}{next(self.count):016x}"


request_ids = RequestIds()


def register_request_hooks(app: Flask) -> None:
    app.before_request(start_request)
    app.after_request(finish_response)
    app.teardown_request(end_request)


def start_request() -> None:
    """Accept a well-formed ``X-Request-ID`` or make one; start the clock."""
    g.started = time.perf_counter()
    IN_FLIGHT.inc()
    # From the WSGI environ: ``request.headers`` would build a headers view first.
    incoming = request.environ.get("HTTP_X_REQUEST_ID", "")
    g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else request_ids.new()


def finish_response(response):
    """Add the headers every answer carries, then count and time the request.

    One hook, each context proxy read once: this runs on every request.
    """
    current = request._get_current_object()
    context = g._get_current_object()
    headers = response.headers
    headers["X-Request-ID"] = getattr(context, "request_id", None) or request_ids.new()
    if current_app.config["EXPOSE_WORKER_PID"]:
        # Which Gunicorn worker answered: for debugging and tests, off by default.
        headers["X-Worker-PID"] = str(os.getpid())
    if current.path.startswith(DOCS_PATHS):
        headers.update(DOCS_HEADERS)  # The pages' own caching stays as Flask sets it.
    else:
        headers.extend(API_HEADERS)
    # The route's pattern, never the raw path: unknown URLs must not mint labels.
    rule = current.url_rule
    endpoint = rule.rule if rule else "unmatched"
    method = current.method if current.method in KNOWN_METHODS else "other"
    REQUESTS(endpoint, method, response.status_code).inc()
    started = getattr(context, "started", None)
    if started is not None:
        REQUEST_SECONDS(endpoint).observe(time.perf_counter() - started)
        inference = context.pop("inference", None)
        # The version that answered, this request: statistics, access line.
        if inference is not None and inference.started >= started:
            statistics.record(inference, started, response.status_code < 400)
            environ = current.environ
            environ[MODEL_ENVIRON], environ[VERSION_ENVIRON] = inference.name, inference.version
    return response


def end_request(error=None) -> None:
    if g.pop("started", None) is not None:
        IN_FLIGHT.dec()
