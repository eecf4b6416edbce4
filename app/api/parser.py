"""Strict JSON body parsing for flask-smorest blueprints."""

import json

import flask_smorest
from flask import Request
from flask_smorest import abort
from webargs.flaskparser import FlaskParser


class JsonBodyParser(FlaskParser):
    """Parse JSON bodies, answering every way a body can be wrong with a 4xx.

    webargs alone treats a non-JSON Content-Type as a missing body (a
    confusing 422) and lets a deeply nested document raise RecursionError
    (a 500); both are answered here before the schema sees the data.
    """

    def _raw_load_json(self, req: Request):
        if not req.is_json:
            abort(415, message="Content-Type must be application/json.")
        charset = req.mimetype_params.get("charset", "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            abort(415, message=f"JSON must be UTF-8 encoded, not {charset!r}.")
        body = req.get_data(cache=True)
        if not body:
            abort(400, message="Request body is empty; expected a JSON object.")
        try:
            return json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            abort(400, message="Request body is not valid UTF-8.")
        except RecursionError:
            abort(400, message="Request body is nested too deeply.")
        except ValueError as error:  # JSONDecodeError, or an over-long integer.
            abort(400, message=f"Request body is not valid JSON: {error}.")


class Blueprint(flask_smorest.Blueprint):
    """A flask-smorest blueprint that parses bodies with ``JsonBodyParser``."""

    ARGUMENTS_PARSER = JsonBodyParser()
