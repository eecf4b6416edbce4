"""HTTP adapters: one flask-smorest blueprint per route group, registered on the app's ``Api``.

``/predict``, the Open Inference Protocol (``/v2``), TensorFlow Serving's REST
API (``/v1/models``), ``/model``, health and metrics. Each only translates its
wire format to and from the serving core.

May import: ``app.core``, ``app.runtime`` (the signature's types), ``app.ops``,
``app.config``, ``app.errors``, ``app.extensions``. Never ``app.grpc``.
"""

from flask import Flask
from flask_smorest import Api

from app.api import health, metrics, model_info, open_inference, predict, tf_serving
from app.api.parser import SegmentConverter
from app.core import control

SEGMENT_SCHEMA = {"type": "string", "pattern": "^[^/:]+$"}

BLUEPRINTS = (
    predict.blp,
    open_inference.blp,
    tf_serving.blp,
    model_info.blp,
    health.blp,
    metrics.blp,
)


def register_blueprints(app: Flask, api: Api) -> None:
    api.register_converter(SegmentConverter, lambda converter: SEGMENT_SCHEMA)
    app.url_map.converters["segment"] = SegmentConverter
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    if not app.config["MODEL_URI"]:
        # Before any route: a worker takes up a load, unload or rollout another one answered.
        app.before_request(lambda: control.catch_up(app))
    if app.config["API_TOKEN"]:
        # Only when a token is set: an open server pays nothing per request. Every
        # inference route needs it; health, metadata and metrics stay open for probes.
        for blueprint in (predict.blp, open_inference.blp, tf_serving.blp):
            app.before_request_funcs.setdefault(blueprint.name, []).append(predict.require_token)
