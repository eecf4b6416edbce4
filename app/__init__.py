"""The model server's Flask application factory."""

import os

# Read by TensorFlow when first imported: keep its C++ start-up chatter out of
# the logs, and skip oneDNN, which only adds start-up cost for models this small.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from flask import Flask  # noqa: E402

from app.api import register_blueprints  # noqa: E402
from app.config import Config  # noqa: E402
from app.errors import register_error_handlers  # noqa: E402
from app.extensions import api  # noqa: E402
from app.json_provider import OrjsonProvider  # noqa: E402
from app.request_context import register_request_hooks  # noqa: E402
from app.serving import ServingState  # noqa: E402

API_DESCRIPTION = (
    "Online inference for a Keras regression model with one numeric input and one "
    "numeric output. `POST /predict` takes a batch of numbers and answers one "
    "prediction each, computed in a single vectorised call. Every error is JSON "
    "with `code`, `status`, `message` and `errors`."
)


def create_app(config: dict | None = None) -> Flask:
    """Create the app; ``config`` overrides settings (tests use it)."""
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config.from_object(Config())
    app.config.update(openapi_settings())
    if config:
        app.config.update(config)
    app.extensions["serving"] = ServingState()
    register_extensions(app)
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


def register_extensions(app: Flask) -> None:
    api.init_app(app)
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "description": "The API_TOKEN, if set."}
    )
