"""A rollout inside one server: version labels on every API, a weighted canary, routing keys,
and a version_policy.json that does not hold together refused while what serves serves on.

Three versions of y = k·x (k = 1, 2, 3), so each answer shows which version ran.
Run alone with ``.venv/bin/pytest tests/integration/test_rollout.py``.
"""

import json
import shutil
import signal
from collections import Counter

import grpc
import numpy as np
import pytest
import requests
import tritonclient.http as triton_http

from app.grpc import open_inference_pb2 as pb
from tests.conftest import save_version
from tests.integration.clients import oip_call, wait_for
from tests.integration.conftest import start
from tests.integration.grpc_clients import client
from tests.models import scaled_linear

ROLLOUT = {
    "scaled": {
        "specific": [1, 2],
        "labels": {"stable": 1, "canary": 2},
        "weights": {"stable": 90, "canary": 10},
    }
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout")
    for version in (1, 2, 3):
        save_version(scaled_linear(version), root / "scaled", version)
    (root / "version_policy.json").write_text(json.dumps(ROLLOUT))
    return root


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    gunicorn = start(None, tmp_path_factory, MODEL_REPOSITORY=root)
    yield gunicorn
    gunicorn.stop()


def v2(x: float) -> dict:
    return {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [x]}]}


def test_a_label_names_its_version_on_every_api(server):
    url = server.url
    answer = requests.post(f"{url}/predict/scaled/versions/canary", json={"instances": [2.0]})
    assert answer.json() == {"predictions": [4.0], "model": {"name": "scaled", "version": "2"}}
    answer = requests.post(f"{url}/predict/scaled/versions/1", json={"instances": [2.0]})
    assert answer.json()["predictions"] == [2.0]
    answer = requests.post(f"{url}/v2/models/scaled/versions/stable/infer", json=v2(2.0))
    assert answer.json()["model_version"] == "1" and answer.json()["outputs"][0]["data"] == [2.0]
    answer = requests.post(
        f"{url}/v1/models/scaled/labels/canary:predict", json={"instances": [2.0]}
    )
    assert answer.json() == {"predictions": [[4.0]]}
    status = requests.get(f"{url}/v1/models/scaled/labels/canary", timeout=5).json()
    assert [each["version"] for each in status["model_version_status"]] == ["2"]
    request = pb.ModelInferRequest(model_name="scaled", model_version="canary")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(2)
    reply = oip_call(server.grpc_target, "ModelInfer", request, pb.ModelInferResponse)
    assert reply.model_version == "2"


def test_tritonclient_and_the_kserve_sdk_take_a_label_where_they_take_a_version(server):
    http = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    tensor = triton_http.InferInput("x", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[2.0]], np.float32))
    result = http.infer("scaled", [tensor], model_version="canary")
    assert result.get_response()["model_version"] == "2"
    for name in ("triton_versioned", "kserve_versioned"):
        answer = client(name, target=server.grpc_target, model="scaled", version="canary", x=2.0)
        assert answer == ["2", [[4.0]]], name
    assert http.is_model_ready("scaled", "stable") and not http.is_model_ready("scaled", "beta")


@pytest.mark.parametrize(
    "path", ["/predict/scaled/versions/beta", "/v2/models/scaled/versions/beta/infer"]
)
def test_an_unknown_label_is_404_listing_the_labels(server, path):
    body = {"instances": [2.0]} if path.startswith("/predict") else v2(2.0)
    answer = requests.post(f"{server.url}{path}", json=body, timeout=5)
    assert answer.status_code == 404 and "canary=2" in answer.text and "stable=1" in answer.text


def test_a_ten_percent_canary_gets_ten_percent_of_requests_naming_no_version(server):
    session = requests.Session()
    versions = Counter(
        session.post(f"{server.url}/predict/scaled", json={"instances": [1.0]}, timeout=5).json()[
            "model"
        ]["version"]
        for _ in range(10_000)
    )
    assert set(versions) == {"1", "2"}
    assert 0.09 <= versions["2"] / 10_000 <= 0.11, versions
    # Over the other APIs too, and version 3 (served by no policy) never.
    seen = {
        requests.post(f"{server.url}/v2/models/scaled/infer", json=v2(1.0)).json()["model_version"]
        for _ in range(100)
    }
    assert seen == {"1", "2"}


def test_the_same_routing_key_always_reaches_the_same_version(server):
    session = requests.Session()
    for key in ("user-1", "user-2", "user-3"):
        headers = {"X-Routing-Key": key}
        versions = {
            session.post(
                f"{server.url}/predict/scaled", json={"instances": [1.0]}, headers=headers
            ).json()["model"]["version"]
            for _ in range(1000)
        }
        assert len(versions) == 1, (key, versions)
    request = pb.ModelInferRequest(model_name="scaled")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(1)
    over_grpc = {
        oip_call(
            server.grpc_target,
            "ModelInfer",
            request,
            pb.ModelInferResponse,
            metadata=(("x-routing-key", "user-1"),),
        ).model_version
        for _ in range(50)
    }
    assert len(over_grpc) == 1


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({"specific": [1, 2], "labels": {"stable": 3}}, "label 'stable' names version 3"),
        ({"specific": [1, 2], "labels": {"stable": 1}, "weights": {"stable": 80}}, "add up to 80"),
        ({"specific": [1, 2], "labels": {"1": 2}}, "labels must map names"),
        ({"specific": [1, 2], "weights": {"beta": 100}}, "neither a label nor a version"),
    ],
)
def test_a_rollout_that_does_not_hold_together_is_refused_and_what_serves_serves_on(
    root, tmp_path, make_server, entry, why
):
    mine = tmp_path / "repository"
    shutil.copytree(root, mine)
    server = make_server(None, MODEL_REPOSITORY=mine)
    (mine / "version_policy.json").write_text(json.dumps({"scaled": entry}))
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: why in server.output(), timeout=60)
    answer = requests.post(
        f"{server.url}/predict/scaled/versions/canary", json={"instances": [2.0]}
    )
    assert answer.status_code == 200 and answer.json()["predictions"] == [4.0]
    assert "Traceback" not in server.output()


def test_a_start_with_a_label_on_a_version_not_served_lists_the_model_unavailable(
    root, tmp_path, make_server, model_dir
):
    mine = tmp_path / "repository"
    shutil.copytree(root, mine)
    shutil.copytree(model_dir, mine / "linear")
    entry = {"specific": [1, 2], "labels": {"stable": 1, "next": 3}}
    (mine / "version_policy.json").write_text(json.dumps({"scaled": entry}))
    server = make_server(None, MODEL_REPOSITORY=mine)
    listed = requests.post(f"{server.url}/v2/repository/index", timeout=5).json()
    states = {model["name"]: model for model in listed}
    assert states["linear"]["state"] == "READY"
    assert states["scaled"]["state"] == "UNAVAILABLE"
    assert "label 'next' names version 3, which is not served" in states["scaled"]["reason"]
    with pytest.raises(grpc.RpcError):
        request = pb.ModelInferRequest(model_name="scaled")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(1)
        oip_call(server.grpc_target, "ModelInfer", request, pb.ModelInferResponse)
