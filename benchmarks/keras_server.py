"""What a team would otherwise deploy, for ``make bench``: Flask calling Keras per request.

``KERAS_MODEL`` names a saved model; ``KERAS_MODE`` is ``predict`` (Keras'
``model.predict``) or ``tf.function`` (the model traced once, called per
request). Run under Gunicorn, one model per worker, loaded at import:
``gunicorn -w 2 benchmarks.keras_server:app``.
"""

import os

import keras
import numpy as np
import tensorflow as tf
from flask import Flask, jsonify, request

MODEL = keras.models.load_model(os.environ["KERAS_MODEL"], compile=False)
MODE = os.environ.get("KERAS_MODE", "predict")


@tf.function(reduce_retracing=True)
def traced(batch):
    return MODEL(batch, training=False)


app = Flask(__name__)


@app.post("/predict")
def predict():
    batch = np.asarray(request.get_json()["instances"], dtype=np.float32)
    if MODE == "predict":
        outputs = MODEL.predict(batch, verbose=0)
    else:
        outputs = traced(tf.constant(batch)).numpy()
    return jsonify(predictions=outputs.tolist())
