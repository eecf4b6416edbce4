"""The API's blueprints, registered on the app's ``Api``."""

from flask_smorest import Api

from app.api import health, metrics, model_info, predict

BLUEPRINTS = (predict.blp, model_info.blp, health.blp, metrics.blp)


def register_blueprints(api: Api) -> None:
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
