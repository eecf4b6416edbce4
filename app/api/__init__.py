"""The API's blueprints, registered on the app's ``Api``."""

from flask_smorest import Api

from app.api import health, model_info, predict

BLUEPRINTS = (predict.blp, model_info.blp, health.blp)


def register_blueprints(api: Api) -> None:
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
