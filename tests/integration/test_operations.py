"""Operating the service under a real Gunicorn: metrics, logs, pinned versions.

Run alone with ``.venv/bin/pytest tests/integration/test_operations.py``.
Each test starts its own two-worker Gunicorn on a free 127.0.0.1 port with a
copy of the session model, and stops it (by pid) at the end.
"""

import json
import shutil

import requests

from tests.integration.clients import PREDICT, metric_values, served_versions, wait_for


def test_metrics_add_up_requests_from_both_workers(store, make_server):
    server = make_server(store)
    pids, count = set(), 0
    # Sequential requests may all land on one worker; keep on until both answered.
    while len(pids) < 2 or count < 60:
        assert count < 2000, "only one worker ever answered"
        response = requests.post(f"{server.url}/predict", json=PREDICT, timeout=5)
        assert response.status_code == 200
        pids.add(response.headers["X-Worker-PID"])
        count += 1
    values = metric_values(server.url)
    predict = (("endpoint", "/predict"), ("method", "POST"), ("status", "200"))
    assert values[("model_server_http_requests_total", predict)] == count
    assert (
        values[("model_server_prediction_batch_size_sum", (("model", "linear"), ("version", "1")))]
        == 2 * count
    )
    # The master loads once; workers build from what it loaded.
    assert values[("model_server_model_load_duration_seconds_count", ())] == 1


def test_every_log_line_is_json_with_request_fields(store, make_server):
    server = make_server(store, PREDICTION_LOG_SAMPLE_RATE=1)
    headers = {"X-Request-ID": "trace-42"}
    requests.post(f"{server.url}/predict", json=PREDICT, headers=headers, timeout=5)
    wait_for(lambda: "request_id=trace-42" in server.output())  # The access line comes last.
    lines = [json.loads(line) for line in server.output().splitlines()]
    access = [
        r for r in lines if r.get("request_id") == "trace-42" and r["logger"] == "gunicorn.access"
    ]
    assert access[0]["method"] == "POST" and access[0]["status"] == 200
    assert {"timestamp", "level", "pid", "duration_ms", "path"} <= set(access[0])
    (prediction,) = [r for r in lines if r["logger"] == "app.predictions"]
    assert prediction["request_id"] == "trace-42" and prediction["instances"] == [10.0, 2.0]


def test_model_version_pins_an_older_version(store, make_server):
    shutil.copytree(store / "1", store / "2")
    server = make_server(store, MODEL_VERSION=1)
    assert served_versions(server.url) == {"1"}
