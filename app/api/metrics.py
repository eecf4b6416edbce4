"""GET /metrics: Prometheus metrics of every worker."""

import os

from flask import Response
from flask.views import MethodView
from prometheus_client import REGISTRY, generate_latest

from app.api.parser import Blueprint
from app.ops import metrics_files

blp = Blueprint("metrics", __name__, description="Prometheus metrics.")

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.response(200, {"type": "string"}, content_type="text/plain")
    def get(self):
        """Prometheus text format, aggregated over all Gunicorn workers"""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return Response(generate_latest(REGISTRY), mimetype=PROMETHEUS_TEXT)
        # Shared: the master folds a dead worker's files in under the exclusive lock.
        with metrics_files.locked(directory, exclusive=False):
            text = generate_latest(metrics_files.registry(directory))
        return Response(text, mimetype=PROMETHEUS_TEXT)
