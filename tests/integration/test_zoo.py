"""The zoo served by a real Gunicorn: every API agrees with Keras, and MobileNetV3Small
starts fast, stays small, takes one image as JSON by default and reloads without a stall.

Run alone with ``.venv/bin/pytest tests/integration/test_zoo.py``; the zoo is
built and compiled once per session (tests/conftest.py).
"""

import json
import shutil
import threading
import time

import numpy as np
import pytest
import requests

from app.runtime.artifact import FLOAT32_MAX
from app.runtime.compiler import tensor_specs
from tests.integration.clients import ProbeStream, reload_under_load, served_versions
from tests.integration.conftest import start
from tests.integration.server import memory_mib
from tests.models import (
    APIS,
    ZOO_NAMES,
    assert_agrees,
    extreme,
    in_domain,
    jsonable,
    keras_outputs,
    outputs_from,
    request_for,
)


@pytest.fixture(scope="module", params=ZOO_NAMES)
def zoo_server(request, zoo, tmp_path_factory):
    """A two-worker Gunicorn serving one zoo model."""
    entry = zoo[request.param]
    server = start(entry.model_dir, tmp_path_factory)
    yield entry, server
    server.stop()


@pytest.mark.parametrize("api", APIS)
def test_each_api_of_the_real_server_agrees_with_keras(zoo_server, api):
    entry, server = zoo_server
    inputs = in_domain(entry.keras, rows=1 if entry.name == "mobilenet" else 5, seed=1)
    path, body = request_for(api, entry.name, inputs)
    response = requests.post(server.url + path, json=body, timeout=30)
    assert response.status_code == 200, response.text
    outputs = outputs_from(api, response.json(), tensor_specs(entry.keras)[1])
    assert_agrees(outputs, keras_outputs(entry.keras, inputs))


def test_an_extreme_instance_gets_a_4xx_or_what_keras_answers(zoo_server):
    entry, server = zoo_server
    for value in (FLOAT32_MAX, -1e38, 1e15):
        inputs = {name: extreme(a, value) for name, a in in_domain(entry.keras, 1).items()}
        path, body = request_for("predict", entry.name, inputs)
        response = requests.post(server.url + path, json=body, timeout=30)
        if response.status_code == 200:
            outputs = outputs_from("predict", response.json(), tensor_specs(entry.keras)[1])
            assert_agrees(outputs, keras_outputs(entry.keras, inputs))
        else:
            assert response.status_code == 422, response.text
            assert response.json()["errors"]["instances"]
    assert requests.get(f"{server.url}/health/ready", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def mobilenet_server(zoo, tmp_path_factory):
    """MobileNetV3Small in a store of its own, so a test may add versions."""
    store = tmp_path_factory.mktemp("mobilenet-store") / "mobilenet"
    shutil.copytree(zoo["mobilenet"].model_dir, store)
    server = start(store, tmp_path_factory)
    yield zoo["mobilenet"], store, server
    server.stop()


def test_mobilenet_workers_stay_close_to_flatbuffer_plus_arena(mobilenet_server):
    entry, _, server = mobilenet_server
    image = in_domain(entry.keras, 1)
    path, body = request_for("predict", "mobilenet", image)
    for _ in range(20):  # Both workers answer and settle.
        assert requests.post(server.url + path, json=body, timeout=30).status_code == 200
    sizes = [memory_mib(pid, "Pss") for pid in server.worker_pids()]
    assert max(sizes) < 100, sizes


def test_more_images_than_max_tensor_elements_allows_get_a_413_naming_it(mobilenet_server):
    entry, _, server = mobilenet_server
    # UINT8 zeros, which an FP32 input holds exactly: 2 bytes of JSON a number, so the
    # body is within its limit.
    inputs = {name: np.zeros((7, 224, 224, 3), np.uint8) for name in in_domain(entry.keras, 1)}
    path, body = request_for("v2", "mobilenet", inputs)
    response = requests.post(server.url + path, json=body, timeout=60)
    assert response.status_code == 413 and "MAX_TENSOR_ELEMENTS" in response.json()["error"]


def test_a_body_over_the_limit_derived_from_the_signature_gets_a_413(mobilenet_server):
    _, _, server = mobilenet_server
    body = b'{"instances": [' + b"0.000000000000000," * 300_000 + b"0]}"
    response = requests.post(
        f"{server.url}/predict", data=body, timeout=60, headers={"Content-Type": "application/json"}
    )
    assert len(body) > 32 * 224 * 224 * 3 and response.status_code == 413


def test_a_reload_to_a_new_mobilenet_version_never_stalls_a_probe(mobilenet_server):
    entry, store, server = mobilenet_server
    path, body = request_for("v2", "mobilenet", in_domain(entry.keras, 1))
    reload_under_load(
        server,
        lambda: shutil.copytree(store / "1", store / "2"),
        lambda: served_versions(server.url) == {"2"},
        path=path,
        body=jsonable(body),
    )


def binary_infer(url: str, images: np.ndarray, name: str) -> requests.Response:
    """POST ``images`` to /v2 infer as tritonclient does by default: a JSON header, raw bytes."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(images.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": images.nbytes},
                }
            ]
        }
    ).encode()
    return requests.post(
        f"{url}/v2/models/mobilenet/infer",
        data=header + images.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=60,
    )


def test_a_probe_waits_behind_one_inference_at_most(mobilenet_server):
    entry, _, server = mobilenet_server
    ((name, images),) = in_domain(entry.keras, 6).items()
    images = images.astype(np.float32)
    started = time.monotonic()
    for _ in range(3):
        assert binary_infer(server.url, images, name).status_code == 200
    one_inference = (time.monotonic() - started) / 3
    stop, failures = threading.Event(), []

    def client():
        while not stop.is_set():
            if binary_infer(server.url, images, name).status_code != 200:
                failures.append("not 200")

    # Six clients per worker: a probe queued behind all of them would wait six inferences.
    clients = [threading.Thread(target=client) for _ in range(12)]
    with ProbeStream(server.url) as probes:
        for thread in clients:
            thread.start()
        time.sleep(max(3.0, 20 * one_inference))
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
    assert failures == [] and probes.failures == []
    assert len(probes.answers) > 10
    slow = sorted(probes.answers)[-len(probes.answers) // 10]  # The 90th percentile.
    assert slow < 3 * one_inference, (slow, one_inference)
