"""A shadow version: copies of the answering version's inferences, run after the answer and
compared, counted in Prometheus and logged; bounded, and dropped when the shadow is slow.

Run alone with ``.venv/bin/pytest tests/integration/test_shadow.py``.
"""

import json

import numpy as np
import pytest
import requests

from tests.conftest import save_version
from tests.integration.clients import RequestStream, metric_values, wait_for
from tests.integration.conftest import start
from tests.models import classifier, keras_outputs, scaled_linear, slow_convolutions

PAIR = (("model", "scaled"), ("shadow", "2"), ("version", "1"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """y = x answers, y = 3x shadows it; two classifiers trained apart, one shadowing."""
    root = tmp_path_factory.mktemp("shadow")
    save_version(scaled_linear(1), root / "scaled", 1)
    save_version(scaled_linear(3), root / "scaled", 2)
    save_version(classifier(), root / "classes", 1)
    save_version(classifier(seed=13), root / "classes", 2)
    shadowed = {"latest": 2, "labels": {"stable": 1}, "weights": {"stable": 100}}
    policy = {
        "scaled": {**shadowed, "shadow": {"version": 2, "sample": 1.0}},
        "classes": {"latest": 2, "shadow": {"version": 2}},  # The newest is only the shadow.
    }
    (root / "version_policy.json").write_text(json.dumps(policy))
    return root


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    gunicorn = start(None, tmp_path_factory, MODEL_REPOSITORY=root, SHADOW_LOG_SECONDS=0)
    yield gunicorn
    gunicorn.stop()


def compared(url, pair=PAIR) -> float:
    key = ("model_server_shadow_copies_total", tuple(sorted((*pair, ("outcome", "compared")))))
    return metric_values(url).get(key, 0)


def test_every_copy_is_compared_after_an_unchanged_answer(server):
    xs = np.linspace(-1, 4, 50).round(2).tolist()
    for x in xs:
        answer = requests.post(f"{server.url}/predict/scaled", json={"instances": [x]}, timeout=5)
        assert answer.json() == {"predictions": [x], "model": {"name": "scaled", "version": "1"}}
    wait_for(lambda: compared(server.url) == len(xs), timeout=10)
    values = metric_values(server.url)
    metadata = requests.get(f"{server.url}/v2/models/scaled/versions/1", timeout=5).json()
    output = metadata["outputs"][0]["name"]  # Keras numbers its layers' names: dense_3, ...
    labels = tuple(sorted((*PAIR, ("output", output))))
    absolute = values[("model_server_shadow_absolute_difference_sum", labels)]
    assert absolute == pytest.approx(sum(2 * abs(x) for x in xs), rel=1e-5)
    assert values[("model_server_shadow_absolute_difference_count", labels)] == len(xs)
    # |x - 3x| / |3x|: two thirds wherever x is not 0.
    nonzero = sum(1 for x in xs if x)
    relative = values[("model_server_shadow_relative_difference_sum", labels)]
    assert relative == pytest.approx(nonzero * 2 / 3, rel=1e-5)
    lines = [json.loads(line) for line in server.output().splitlines() if "disagreement" in line]
    largest = max(lines, key=lambda line: line["absolute_difference"])
    assert largest["model"] == "scaled" and largest["shadow_version"] == 2
    assert largest["absolute_difference"] == pytest.approx(8.0)
    assert largest["answer"] == [4.0] and largest["shadow"] == [12.0]
    assert largest["copy_request_id"]


def test_a_classifiers_shadow_counts_top_class_agreement_and_never_answers(server):
    rows = np.random.default_rng(3).normal(5, 2, (40, 4)).astype(np.float32)
    for row in rows:
        answer = requests.post(
            f"{server.url}/predict/classes", json={"instances": [row.tolist()]}, timeout=5
        )
        assert answer.json()["model"]["version"] == "1"  # Never the shadow, though newest.
    pair = (("model", "classes"), ("shadow", "2"), ("version", "1"))
    wait_for(lambda: compared(server.url, pair) == len(rows), timeout=10)
    values = metric_values(server.url)
    labels = tuple(sorted((*pair, ("output", "probabilities"))))

    def top(agrees):
        key = tuple(sorted((*labels, ("agrees", agrees))))
        return values[("model_server_shadow_top_class_total", key)]

    assert top("true") + top("false") == len(rows)
    one, two = (
        keras_outputs(model, {"measurements": rows})["probabilities"]
        for model in (classifier(), classifier(seed=13))
    )
    assert top("true") == int((one.argmax(axis=1) == two.argmax(axis=1)).sum())


@pytest.fixture(scope="module")
def slow_root(tmp_path_factory):
    """y = x answers; a shadow of ~6 ms an instance, slower than its clients, shadows it."""
    root = tmp_path_factory.mktemp("slow-shadow")
    save_version(scaled_linear(1), root / "scaled", 1)
    save_version(slow_convolutions(features=1), root / "scaled", 2)
    policy = {"scaled": {"latest": 2, "weights": {"1": 100}, "shadow": {"version": 2}}}
    (root / "version_policy.json").write_text(json.dumps(policy))
    return root


def test_a_shadow_slower_than_its_clients_drops_copies_and_counts_them(slow_root, make_server):
    server = make_server(None, MODEL_REPOSITORY=slow_root, SHADOW_QUEUE_SIZE=4)
    streams = [
        RequestStream(server.url, "/predict/scaled", {"instances": [1.0]}, keep_alive=True)
        for _ in range(8)
    ]
    with streams[0], streams[1], streams[2], streams[3], streams[4], streams[5], streams[6]:
        with streams[7]:
            wait_for(lambda: sum(len(stream.versions) for stream in streams) > 2000, timeout=60)
    assert all(not stream.failures for stream in streams)
    assert {version for stream in streams for version in stream.versions} == {"1"}
    answered = metric_values(server.url)[
        ("model_server_prediction_batch_size_count", (("model", "scaled"), ("version", "1")))
    ]

    def outcomes():
        values = metric_values(server.url)
        return {
            outcome: values.get(
                ("model_server_shadow_copies_total", tuple(sorted((*PAIR, ("outcome", outcome))))),
                0,
            )
            for outcome in ("compared", "dropped", "failed")
        }

    # Every copy is accounted for once the queue has drained: compared or dropped.
    wait_for(lambda: sum(outcomes().values()) == answered, timeout=30)
    counts = outcomes()
    assert counts["dropped"] > counts["compared"] > 0 and counts["failed"] == 0, counts
