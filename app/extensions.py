"""Unbound extension objects, bound to an app in ``create_app``."""

from flask_smorest import Api

api = Api()
