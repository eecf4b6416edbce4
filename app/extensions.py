"""Unbound extension objects and metrics, bound to an app in ``create_app``.

Under Gunicorn the metrics live in prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set up by gunicorn.conf.py), so ``/metrics``
answers for all workers at once.
"""

from flask_smorest import Api
from prometheus_client import Counter, Gauge, Histogram

api = Api()

REQUESTS = Counter(
    "model_server_http_requests",
    "HTTP requests answered, by endpoint, method and status.",
    ["endpoint", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "model_server_http_request_duration_seconds",
    "Time to answer an HTTP request, by endpoint.",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
GRPC_REQUESTS = Counter(
    "model_server_grpc_requests",
    "gRPC calls answered, by method and status code.",
    ["method", "code"],
)
GRPC_REQUEST_SECONDS = Histogram(
    "model_server_grpc_request_duration_seconds",
    "Time to answer a gRPC call, by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge(
    "model_server_http_requests_in_flight",
    "HTTP requests being handled now, over all live workers.",
    multiprocess_mode="livesum",
)
# Its _sum is the number of instances predicted, its _count the inference calls.
BATCH_SIZE = Histogram(
    "model_server_prediction_batch_size",
    "Instances per inference request, by model.",
    ["model"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
)
MODEL_LOAD_SECONDS = Histogram(
    "model_server_model_load_duration_seconds",
    "Time a worker took to load, convert and warm up its model.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MODEL_LOAD_FAILURES = Counter(
    "model_server_model_load_failures",
    "Model versions a worker could not load (it served an older one).",
)
MODEL_INFO = Gauge(
    "model_server_model_info",
    "1 for the model version each live worker serves, with its runtime.",
    ["name", "version", "runtime"],
    multiprocess_mode="livemax",
)
