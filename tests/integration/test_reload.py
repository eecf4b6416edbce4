"""Reloads never reduce service: whatever the store holds, the server keeps serving.

Run alone with ``.venv/bin/pytest tests/integration/test_reload.py``. Each test
starts its own two-worker Gunicorn on a free 127.0.0.1 port, streams requests
and liveness probes through a ``SIGHUP`` and checks that none failed or waited.
"""

import json
import shutil
import signal
import time
from pathlib import Path

import keras
import pytest
import requests

from tests.conftest import make_blocking, save_version
from tests.integration.clients import (
    PREDICT,
    metric_values,
    reload_under_load,
    served_versions,
    wait_for,
)
from tests.integration.server import memory_mib


def load_failures(server) -> float:
    return metric_values(server.url)[("model_server_model_load_failures_total", ())]


def test_sighup_rolls_to_a_new_version_with_no_failed_request(store, make_server):
    server = make_server(store)
    stream = reload_under_load(
        server,
        lambda: shutil.copytree(store / "1", store / "2"),
        lambda: served_versions(server.url) == {"2"},
    )
    assert stream.versions[0] == "1" and stream.versions[-1] == "2"


def reload_keeps_serving_version_1(server, change_store, message):
    old_pids = set(server.worker_pids())
    reload_under_load(
        server,
        change_store,
        lambda: message in server.output() and not old_pids & set(server.worker_pids()),
    )
    assert server.process.poll() is None, "the master stopped"
    assert served_versions(server.url) == {"1"}
    assert requests.get(f"{server.url}/health/ready", timeout=5).status_code == 200
    assert "Traceback" not in server.output()
    assert load_failures(server) >= 1


def test_a_reload_with_no_version_left_keeps_the_old_one_serving(store, make_server):
    server = make_server(store)
    parked = store.parent / "parked"
    reload_keeps_serving_version_1(
        server,
        lambda: shutil.move(store / "1", parked),
        "reload failed, workers keep serving version 1",
    )


def test_a_broken_new_version_never_takes_the_service_down(store, make_server):
    server = make_server(store)

    def add_corrupt_version():
        (store / "2").mkdir()
        (store / "2" / "model.keras").write_bytes(b"not a model")

    reload_keeps_serving_version_1(
        server, add_corrupt_version, "skipping a model version that does not load"
    )
    model = requests.get(f"{server.url}/model", timeout=5).json()
    assert model["version"] == "1" and str(store / "2") in model["skipped_versions"][0]


def test_a_new_version_that_fails_late_in_conversion_is_skipped(store, make_server):
    server = make_server(store)

    def add_complex_model():
        # Loaded and traced by TensorFlow before its complex64 output is refused.
        features = keras.Input((1,), name="x")
        model = keras.Model(features, keras.ops.cast(keras.layers.Dense(2)(features), "complex64"))
        save_version(model, store, 2, compiled=False)

    reload_keeps_serving_version_1(
        server, add_complex_model, "skipping a model version that does not load"
    )


def test_a_reload_from_litert_to_the_tensorflow_runtime_leaves_no_gap(store, make_server):
    server = make_server(store)

    def add_tensorflow_version():
        # The same input as version 1; a cumulative product only TensorFlow's runtime runs.
        features = keras.Input((1,), name="x")
        hidden = keras.layers.Dense(3, activation="sigmoid")(features)
        model = keras.Model(features, keras.layers.Dense(1)(keras.ops.cumprod(hidden, axis=-1)))
        save_version(model, store, 2)

    reload_under_load(server, add_tensorflow_version, lambda: served_versions(server.url) == {"2"})
    runtime = requests.get(f"{server.url}/model", timeout=5).json()["runtime"]
    assert runtime == "tensorflow"


def test_a_model_file_that_blocks_is_given_up_after_the_load_timeout(store, make_server):
    server = make_server(store, MODEL_LOAD_TIMEOUT=2)

    def add_blocking_version():
        shutil.copytree(store / "1", store / "2")
        make_blocking(store / "2")

    reload_keeps_serving_version_1(server, add_blocking_version, "MODEL_LOAD_TIMEOUT=2 s")


def test_a_reload_to_a_model_that_takes_seconds_to_load_leaves_no_gap(store, make_server):
    server = make_server(store)

    def add_uncompiled_version():
        # Converted at load: TensorFlow's import and the converter take seconds.
        shutil.copytree(store / "1", store / "2")
        for name in ("model.tflite", "signature.json", "golden.npz", "metadata.json"):
            (store / "2" / name).unlink()

    started = time.monotonic()
    reload_under_load(server, add_uncompiled_version, lambda: served_versions(server.url) == {"2"})
    assert time.monotonic() - started > 2


def replace_workers(server):
    old_pids = set(server.worker_pids())
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: len(server.worker_pids()) == 2 and not old_pids & set(server.worker_pids()))


def test_metrics_files_stay_bounded_and_totals_exact_over_many_reloads(store, make_server):
    server = make_server(store)
    directory = Path(server.metrics_dir)
    sent = 0
    predict = (("endpoint", "/predict"), ("method", "POST"), ("status", "200"))
    for _ in range(8):
        for _ in range(5):
            assert requests.post(f"{server.url}/predict", json=PREDICT, timeout=5).ok
            sent += 1
        replace_workers(server)
        # Exact at every step: a replaced worker's counts are neither lost nor doubled.
        assert metric_values(server.url)[("model_server_http_requests_total", predict)] == sent
    # The master's 3 (its unlabelled metrics exist from import on), two live workers' 5
    # each, and 3 of retired totals: none per dead worker once the master has reaped it.
    wait_for(lambda: len(list(directory.glob("*.db"))) <= 3 + 2 * 5 + 3, timeout=10)


def test_a_new_version_a_worker_could_not_start_is_refused_by_the_loader(store, make_server):
    server = make_server(store)

    def add_version_with_a_broken_profile():
        shutil.copytree(store / "1", store / "2")
        metadata = json.loads((store / "2" / "metadata.json").read_text())
        metadata["input_profile"]["x"]["upper_bounds"].reverse()  # Buckets out of order.
        (store / "2" / "metadata.json").write_text(json.dumps(metadata))

    reload_keeps_serving_version_1(
        server, add_version_with_a_broken_profile, "bucket bounds must be finite and increasing"
    )


def test_the_masters_memory_stays_flat_over_a_hundred_reloads(store, make_server):
    server = make_server(store)
    for _ in range(10):  # Allocator pools and caches settle.
        replace_workers(server)
    before = memory_mib(server.pid)
    for _ in range(100):
        replace_workers(server)
    # Measured: 7.0 MB more when the garbage of each reload stayed frozen, 12 kB now.
    assert memory_mib(server.pid) - before < 1500 / 1024


def copy_with_metadata(store, name: str, change) -> None:
    """Version 1 copied as ``name``, its metadata.json changed by ``change``."""
    shutil.copytree(store / "1", store / name)
    metadata = json.loads((store / name / "metadata.json").read_text())
    change(metadata)
    (store / name / "metadata.json").write_text(json.dumps(metadata))


def nest(metadata):
    metadata["deep"] = json.loads('{"a": ' * 300 + "1" + "}" * 300)


def many_buckets(metadata):
    metadata["input_profile"]["x"]["upper_bounds"] = list(range(101))
    metadata["input_profile"]["x"]["fractions"] = [0.0] * 102


def foreign_artifact(metadata):
    metadata["artifacts"]["../../../../etc/hostname"] = "0" * 64


STORE_CASES = {
    "1-and-01": (
        lambda store: [shutil.copytree(store / "1", store / name) for name in ("2", "02")],
        "02 and 2 both name version 2",
    ),
    "beyond-int64": (lambda store: shutil.copytree(store / "1", store / str(2**64)), "2^63 - 1"),
    "deep-metadata": (lambda store: copy_with_metadata(store, "2", nest), "nested over 32"),
    "many-buckets": (lambda store: copy_with_metadata(store, "2", many_buckets), "bucket bounds"),
    "path-in-artifacts": (
        lambda store: copy_with_metadata(store, "2", foreign_artifact),
        "not a file name",
    ),
}


@pytest.mark.parametrize("case", STORE_CASES)
def test_a_store_that_names_a_version_wrongly_keeps_the_right_one_serving(store, make_server, case):
    server = make_server(store)
    change, message = STORE_CASES[case]
    reload_keeps_serving_version_1(server, lambda: change(store), message)


def test_a_symlinked_model_dir_keeps_its_name_when_the_link_flips(store, make_server, tmp_path):
    releases = tmp_path / "releases"
    shutil.copytree(store, releases / "blue")
    shutil.copytree(store / "1", releases / "green" / "2")
    link = tmp_path / "current" / "linear"
    link.parent.mkdir()
    link.symlink_to(releases / "blue")
    server = make_server(link)
    assert requests.get(f"{server.url}/v2/models/linear/ready", timeout=5).status_code == 200
    flipped = link.with_name("flipped")
    flipped.symlink_to(releases / "green")
    flipped.replace(link)  # Atomically, as a deploy flips it.
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: served_versions(server.url) == {"2"})
    model = requests.get(f"{server.url}/model", timeout=5).json()
    assert model["name"] == "linear"
    assert requests.get(f"{server.url}/v1/models/linear", timeout=5).json()["ready"] is True
