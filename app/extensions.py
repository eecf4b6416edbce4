"""Unbound extension objects and metrics, bound to an app in ``create_app``.

Under Gunicorn the metrics live in prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set up by gunicorn.conf.py), so ``/metrics``
answers for all workers at once.
"""

from flask_smorest import Api
from prometheus_client import Counter, Gauge, Histogram

api = Api()


class Children:
    """A labelled metric's child for each set of labels, made once and kept: ``labels()``
    takes a lock and checks the labels on every call. For the per-request metrics, whose
    labels (routes, methods, status codes, served versions) are few."""

    def __init__(self, metric):
        self.metric, self.made = metric, {}

    def __call__(self, *labels):
        child = self.made.get(labels)
        if child is None:
            child = self.made[labels] = self.metric.labels(*labels)
        return child


REQUESTS = Children(
    Counter(
        "model_server_http_requests",
        "HTTP requests answered, by endpoint, method and status.",
        ["endpoint", "method", "status"],
    )
)
REQUEST_SECONDS = Children(
    Histogram(
        "model_server_http_request_duration_seconds",
        "Time to answer an HTTP request, by endpoint.",
        ["endpoint"],
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
)
GRPC_REQUESTS = Children(
    Counter(
        "model_server_grpc_requests",
        "gRPC calls answered, by method and status code.",
        ["method", "code"],
    )
)
GRPC_REQUEST_SECONDS = Children(
    Histogram(
        "model_server_grpc_request_duration_seconds",
        "Time to answer a gRPC call, by method.",
        ["method"],
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
)
IN_FLIGHT = Gauge(
    "model_server_http_requests_in_flight",
    "HTTP requests being handled now, over all live workers.",
    multiprocess_mode="livesum",
)
# Its _sum is the number of instances predicted, its _count the inference calls.
BATCH_SIZE = Children(
    Histogram(
        "model_server_prediction_batch_size",
        "Instances per inference request, by model and version.",
        ["model", "version"],
        buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
    )
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

# A shadow version's copies (app/core/shadow.py), by model, answering version and shadow.
SHADOW_LABELS = ["model", "version", "shadow"]
SHADOW_COPIES = Counter(
    "model_server_shadow_copies",
    "Copies of inferences for a shadow version, by outcome: compared, dropped (its queue "
    "was full), failed.",
    [*SHADOW_LABELS, "outcome"],
)
DIFFERENCE_BUCKETS = (0, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10, 100, 1000)
SHADOW_ABSOLUTE = Histogram(
    "model_server_shadow_absolute_difference",
    "Per compared copy and output: the largest |answer - shadow|.",
    [*SHADOW_LABELS, "output"],
    buckets=DIFFERENCE_BUCKETS,
)
SHADOW_RELATIVE = Histogram(
    "model_server_shadow_relative_difference",
    "Per compared copy and output: the largest |answer - shadow| / max(|answer|, |shadow|).",
    [*SHADOW_LABELS, "output"],
    buckets=(0, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.5, 1, 2),
)
SHADOW_TOP_CLASS = Counter(
    "model_server_shadow_top_class",
    "Instances whose top class the shadow agrees with (agrees=true) or not, for score outputs.",
    [*SHADOW_LABELS, "output", "agrees"],
)

# Per model version, as the Open Inference Protocol's statistics extension reports them
# (app/ops/statistics.py).
INFERENCES = Counter(
    "model_server_inference_requests",
    "Inference requests that reached a model version, by outcome: success or fail.",
    ["model", "version", "outcome"],
)
INFERENCE_SECONDS = Counter(
    "model_server_inference_seconds",
    "Seconds spent on inference requests, by version and phase: success and fail (whole "
    "requests), queue (waiting for the worker's turn), compute_input (reading and checking "
    "the inputs), compute_infer (the runtime), compute_output (writing the answer).",
    ["model", "version", "phase"],
)
LAST_INFERENCE = Gauge(
    "model_server_last_inference_timestamp_seconds",
    "When the version last answered an inference request (Unix time).",
    ["model", "version"],
    multiprocess_mode="max",
)
