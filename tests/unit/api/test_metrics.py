"""GET /metrics in Prometheus text format."""

from prometheus_client.parser import text_string_to_metric_families


def samples(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def predict_count(metrics) -> float:
    key = (
        "model_server_http_requests_total",
        (("endpoint", "/predict"), ("method", "POST"), ("status", "200")),
    )
    return metrics.get(key, 0.0)


def test_requests_batch_sizes_and_latency_are_counted(client):
    before = samples(client)
    for _ in range(3):
        client.post("/predict", json={"instances": [1, 2, 3, 4]})
    after = samples(client)
    assert predict_count(after) - predict_count(before) == 3
    batch_sum = ("model_server_prediction_batch_size_sum", (("model", "linear"), ("version", "1")))
    assert after[batch_sum] - before.get(batch_sum, 0) == 12
    latency = ("model_server_http_request_duration_seconds_count", (("endpoint", "/predict"),))
    assert after[latency] - before.get(latency, 0) == 3


def test_unknown_paths_and_methods_do_not_create_new_labels(client):
    client.get("/no/such/path/123")
    client.open("/predict", method="BREW")
    metrics = samples(client)
    endpoints = {dict(labels).get("endpoint") for (_, labels) in metrics}
    methods = {dict(labels).get("method") for (_, labels) in metrics}
    assert "/no/such/path/123" not in endpoints and "unmatched" in endpoints
    assert "BREW" not in methods


def test_the_served_model_is_a_labelled_gauge(app, client, runner):
    from app.core.serving import start_serving

    start_serving(app)
    labels = (("name", "linear"), ("runtime", "litert"), ("version", "1"))
    assert samples(client)[("model_server_model_info", labels)] == 1
