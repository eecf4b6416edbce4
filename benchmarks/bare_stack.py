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

blp = Blueprint("bare", __name__)


class PredictSchema(ma.Schema):
    instances = ma.fields.List(ma.fields.Float(allow_nan=False), required=True)


class Runner:
    """One LiteRT interpreter, built in the worker at its first request (never before a fork)."""

    def __init__(self, path: str):
        self.path, self.interpreter = path, None

    def __call__(self, instances: np.ndarray) -> np.ndarray:
        if self.interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            self.interpreter = Interpreter(model_path=self.path, num_threads=1)
            self.interpreter.allocate_tensors()
        interpreter = self.interpreter
        (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
        if tuple(source["shape"]) != instances.shape:
            interpreter.resize_tensor_input(source["index"], instances.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], instances)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])


RUNNER = Runner(os.environ.get("MODEL_TFLITE", "models/linear/1/model.tflite"))


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
