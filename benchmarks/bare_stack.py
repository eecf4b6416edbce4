"""The bare stack the design names, for side-by-side timings: nothing but what it must have.

Flask, one flask-smorest blueprint with a marshmallow schema for ``instances``
and one LiteRT call, on Gunicorn's stock gevent worker: no request hooks,
metrics, access log, security headers or error shapes. The speed table
(benchmarks/speed.py) measures this server against it:

    MODEL_TFLITE=models/linear/1/model.tflite .venv/bin/gunicorn -k gevent -w 2 \\
        -b 127.0.0.1:8090 benchmarks.bare_stack:app

Routes: ``GET /health/live`` and ``POST /predict`` (``{"instances": [1.0]}``).
"""

import os

import marshmallow as ma
import numpy as np
from flask import Flask
from flask.views import MethodView
from flask_smorest import Api, Blueprint

from benchmarks.litert_call import LiteRTCall

blp = Blueprint("bare", __name__)


class PredictSchema(ma.Schema):
    instances = ma.fields.List(ma.fields.Float(allow_nan=False), required=True)


RUNNER = LiteRTCall(os.environ.get("MODEL_TFLITE", "models/linear/1/model.tflite"))


@blp.route("/health/live")
class Live(MethodView):
    def get(self):
        return {"status": "alive"}


@blp.route("/predict")
class Predict(MethodView):
    @blp.arguments(PredictSchema)
    @blp.response(200)
    def post(self, body):
        instances = np.asarray(body["instances"], dtype=np.float32).reshape(-1, 1)
        return {"predictions": RUNNER(instances).reshape(-1).tolist()}


app = Flask(__name__)
app.config.update(API_TITLE="bare", API_VERSION="v1", OPENAPI_VERSION="3.0.3")
Api(app).register_blueprint(blp)
