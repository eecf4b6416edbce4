"""GET /metrics: Prometheus metrics of every worker."""

import os

from flask import Response
from flask.views import MethodView
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

from app.api.parser import Blueprint

blp = Blueprint("metrics", __name__, description="Prometheus metrics.")

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.response(200, {"type": "string"}, content_type="text/plain")
    def get(self):
        """Prometheus text format, aggregated over all Gunicorn workers"""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = REGISTRY
        return Response(generate_latest(registry), mimetype=PROMETHEUS_TEXT)
