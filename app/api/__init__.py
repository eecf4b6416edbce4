"""The API's blueprints, registered on the app's ``Api``."""

from flask import Flask
from flask_smorest import Api

from app.api import health, metrics, model_info, predict

BLUEPRINTS = (predict.blp, model_info.blp, health.blp, metrics.blp)


def register_blueprints(app: Flask, api: Api) -> None:
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    if app.config["API_TOKEN"]:
        # Only when a token is set: an open server pays nothing per request.
        app.before_request_funcs.setdefault(predict.blp.name, []).append(predict.require_token)
