"""The model server: its Flask application factory, and what the Flask habit keeps beside it.

Here: ``create_app``, the settings (``config``), the unbound extensions and
metrics (``extensions``), the error handlers (``errors``) and the entry point
(``serve``). Below, by role, with arrows one way (adapters -> core ->
runtime; operations used by all): ``api`` and ``grpc`` (the wire formats),
``core`` (the serving core they adapt to), ``runtime`` (what a version is and
how it loads), ``ops`` (logs, metrics, monitoring, the Gunicorn worker).
``pyproject.toml``'s import-linter contracts check the arrows.

The modules are imported inside ``create_app``: ``app.config`` alone must be
importable (by ``python -m app.serve`` and gunicorn.conf.py) without creating
the app's metrics, which depend on the environment those two prepare.
"""

from flask import Flask

API_DESCRIPTION = (
    "Online inference for a Keras model compiled to LiteRT (or TensorFlow's runtime): the "
    "notebook's one-number regression by default, or any model a team saves, with inputs "
    "and outputs of float16/32/64, int8-64, uint8-64, bool or strings. `POST /predict` takes a "
    "batch of instances and answers one prediction each, computed in a single call; "
    "the Open Inference Protocol (`/v2`) and TensorFlow Serving's REST API "
    "(`/v1/models`) serve the same model. Errors are JSON: `code`, `status`, "
    '`message` and `errors` here, `{"error"}` on the standard protocols\' routes.'
)


class ModelServerFlask(Flask):
    """Flask, without its per-call check for coroutine views: every view here is sync.

    Flask asks ``inspect.iscoroutinefunction`` of each hook and view on every
    request (measured: a sixth of a probe's in-process cost); none is async.
    """

    def ensure_sync(self, func):
        return func


def create_app(config: dict | None = None) -> Flask:
    """Create the app; ``config`` overrides settings (tests use it)."""
    from app.api import register_blueprints
    from app.config import Config
    from app.core.serving import ServingState
    from app.errors import register_error_handlers
    from app.ops.json_provider import OrjsonProvider
    from app.ops.request_context import register_request_hooks

    app = ModelServerFlask(__name__)
    # "//" in a path is a 404, not an HTML redirect to a URL built from the Host header.
    app.url_map.merge_slashes = False
    app.json = OrjsonProvider(app)
    app.config.from_object(Config())
    app.config.update(openapi_settings())
    if config:
        app.config.update(config)
    app.extensions["serving"] = ServingState()
    api = register_extensions(app)
    register_blueprints(app, api)
    register_error_handlers(app)
    register_request_hooks(app)
    return app


def openapi_settings() -> dict:
    return {
        "API_TITLE": "Model server",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.0.3",
        "API_SPEC_OPTIONS": {"info": {"description": API_DESCRIPTION}},
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_REDOC_PATH": "/redoc",
        # Served from app/static/docs (make docs-assets), not a CDN: offline works.
        "OPENAPI_REDOC_URL": "/static/docs/redoc/redoc.standalone.js",
        "OPENAPI_SWAGGER_UI_PATH": "/swagger-ui",
        "OPENAPI_SWAGGER_UI_URL": "/static/docs/swagger-ui/",
    }


def register_extensions(app: Flask):
    from app.extensions import api

    api.init_app(app)
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "description": "The API_TOKEN, if set."}
    )
    return api
