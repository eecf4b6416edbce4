"""Input monitoring on a real Gunicorn: out-of-range counts and histogram buckets, exactly.

The session model was trained on x in [-1, 4]; known in-range and
out-of-range instances go through /predict and /v2 over both workers, and
/metrics must count each exactly. Run alone with
``.venv/bin/pytest tests/integration/test_monitoring.py``.
"""

import numpy as np
import pytest
import requests

from tests.integration.clients import metric_values

LABELS = (("input", "x"), ("model", "linear"), ("version", "1"))


def value(values, name, **labels):
    key = tuple(sorted({**dict(LABELS), **labels}.items()))
    return values.get((name, key), 0.0)


def test_out_of_range_counts_and_histogram_buckets_match_the_instances_sent(server):
    before = metric_values(server.url)
    batches = [[-1, 0, 0.5, 4], [10], [-2, 3.5], [1e6, 2, 2, 2]]
    pids = set()
    for _ in range(10):  # Many requests over fresh connections reach both workers.
        for batch in batches:
            response = requests.post(f"{server.url}/predict", json={"instances": batch}, timeout=5)
            assert response.status_code == 200
            pids.add(response.headers["X-Worker-PID"])
        tensor = {"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [-5, 1, 4]}
        response = requests.post(
            f"{server.url}/v2/models/linear/infer", json={"inputs": [tensor]}, timeout=5
        )
        assert response.status_code == 200
        pids.add(response.headers["X-Worker-PID"])
    assert len(pids) == 2, "only one worker answered"
    sent = np.array([v for batch in [*batches, [-5, 1, 4]] for v in batch] * 10)
    after = metric_values(server.url)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    outside = int(np.count_nonzero((sent < -1) | (sent > 4)))
    assert delta("model_server_input_out_of_range_total") == outside == 40
    assert delta("model_server_input_value_count") == len(sent)
    assert delta("model_server_input_value_sum") == float(sent.sum())
    # Cumulative buckets: at or below each bound of the training profile.
    for le, bound in [("0.0", 0), ("1.0", 1), ("2.0", 2), ("3.0", 3), ("4.0", 4)]:
        assert delta("model_server_input_value_bucket", le=le) == np.count_nonzero(sent <= bound)
    assert delta("model_server_input_value_bucket", le="+Inf") == len(sent)


def test_the_training_shares_are_exported_for_each_bucket(server):
    values = metric_values(server.url)
    shares = {
        dict(labels)["le"]: share
        for (name, labels), share in values.items()
        if name == "model_server_input_reference_fraction"
    }
    # The session model's data: -1, 0, 1, 2, 3, 4.
    assert shares["0.0"] == 2 / 6 and shares["4.0"] == 1 / 6 and shares["+Inf"] == 0
    assert sum(shares.values()) == pytest.approx(1.0)
    model = requests.get(f"{server.url}/model", timeout=5).json()
    assert model["monitoring"] == {"inputs": ["x"]}
