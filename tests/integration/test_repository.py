"""A model repository served by a real Gunicorn: every model by name on every API, a
broken one listed beside them, the index over REST and gRPC, a reload that adds and
drops models under load, and the limits.

Run alone with ``.venv/bin/pytest tests/integration/test_repository.py``.
"""

import re
import shutil
import signal
import time

import grpc
import numpy as np
import pytest
import requests

from app.grpc import open_inference_pb2 as pb
from app.runtime.compiler import tensor_specs
from tests.conftest import save_version
from tests.integration.clients import (
    RequestStream,
    metric_values,
    oip_call,
    reload_under_load,
    wait_for,
)
from tests.integration.conftest import start
from tests.integration.grpc_clients import client
from tests.integration.server import GunicornServer
from tests.integration.test_grpc import infer, linear_request
from tests.models import (
    APIS,
    assert_agrees,
    in_domain,
    keras_outputs,
    outputs_from,
    request_for,
    scaled_linear,
)

# Zoo models served beside the session's linear and two-input models.
ZOO_MODELS = ("mobilenet", "tabular", "text_classifier")


def write_repository(root, model_dir, multi_model_dir, zoo):
    """linear, multi, the ZOO_MODELS and a model whose only version does not load."""
    shutil.copytree(model_dir, root / "linear")
    shutil.copytree(multi_model_dir, root / "multi")
    for name in ZOO_MODELS:
        shutil.copytree(zoo[name].model_dir, root / name)
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "metadata.json").write_text("not JSON")
    (root / ".cache").mkdir()  # Hidden: never a model.
    return root


@pytest.fixture(scope="module")
def repository(model_dir, multi_model_dir, zoo, tmp_path_factory):
    return write_repository(tmp_path_factory.mktemp("repository"), model_dir, multi_model_dir, zoo)


@pytest.fixture(scope="module")
def repository_server(repository, tmp_path_factory):
    server = start(None, tmp_path_factory, MODEL_REPOSITORY=repository)
    yield server
    server.stop()


def index(server, **body) -> dict:
    response = requests.post(f"{server.url}/v2/repository/index", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return {model["name"]: model for model in response.json()}


def indexes(server, connections: int = 20) -> list[dict]:
    """The index as fresh connections see it, so that any worker may answer."""
    return [index(server) for _ in range(connections)]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_each_model_is_answered_by_name_on_every_api(repository_server, zoo, name, api):
    model = zoo[name].keras
    inputs = in_domain(model, rows=1 if name == "mobilenet" else 4, seed=2)
    path, body = request_for(api, name, inputs)
    path = path.replace("/predict", f"/predict/{name}")
    response = requests.post(repository_server.url + path, json=body, timeout=30)
    assert response.status_code == 200, response.text
    outputs = outputs_from(api, response.json(), tensor_specs(model)[1])
    assert_agrees(outputs, keras_outputs(model, inputs))


def test_grpc_infers_each_model_by_name(repository_server, keras_model, multi_keras):
    answer = infer(repository_server, linear_request([1.0, 2.0]))
    assert answer.model_name == "linear"
    assert np.frombuffer(answer.raw_output_contents[0], np.float32).tolist() == pytest.approx(
        keras_model.predict(np.array([[1.0], [2.0]]), verbose=0).ravel().tolist(), rel=1e-4
    )
    request = pb.ModelInferRequest(model_name="multi")
    features, grid = np.ones((1, 3), np.float32), np.full((1, 2, 2), 0.5, np.float32)
    for tensor_name, array in (("features", features), ("grid", grid)):
        tensor = request.inputs.add(name=tensor_name, datatype="FP32", shape=array.shape)
        tensor.contents.fp32_contents.extend(array.ravel())
    answer = infer(repository_server, request)
    expected = keras_outputs(multi_keras, {"features": features, "grid": grid})
    outputs = {
        output.name: np.frombuffer(raw, np.float32).reshape(output.shape)
        for output, raw in zip(answer.outputs, answer.raw_output_contents, strict=True)
    }
    assert answer.model_name == "multi"
    assert_agrees(outputs, expected)


def test_a_broken_model_is_listed_with_its_reason_and_the_others_serve(repository_server):
    url = repository_server.url
    listed = index(repository_server)
    assert sorted(listed) == sorted(["broken", "linear", "multi", *ZOO_MODELS])
    assert listed["broken"]["state"] == "UNAVAILABLE"
    assert "metadata" in listed["broken"]["reason"]
    assert all(listed[name]["state"] == "READY" for name in listed if name != "broken")
    assert sorted(index(repository_server, ready=True)) == sorted(["linear", "multi", *ZOO_MODELS])
    # Ready: every model that loads is; the broken one is not, and says why on inference.
    assert requests.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
    assert requests.get(f"{url}/health/ready", timeout=5).status_code == 200
    assert requests.get(f"{url}/v2/models/linear/ready", timeout=5).json()["ready"] is True
    assert requests.get(f"{url}/v2/models/broken/ready", timeout=5).status_code == 400
    refused = requests.post(f"{url}/v2/models/broken/infer", json={"inputs": []}, timeout=5)
    assert refused.status_code == 400 and "unavailable" in refused.json()["error"]
    ready = oip_call(
        repository_server.grpc_target,
        "ModelReady",
        pb.ModelReadyRequest(name="broken"),
        pb.ModelReadyResponse,
    )
    assert ready.ready is False
    with pytest.raises(grpc.RpcError) as error:
        infer(repository_server, pb.ModelInferRequest(model_name="broken"))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as error:
        infer(repository_server, pb.ModelInferRequest(model_name="nothing"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_index_answers_tritonclient_over_grpc_and_http(repository_server):
    import tritonclient.http as triton_http

    over_grpc = client("triton_index", target=repository_server.grpc_target)
    by_name = {model["name"]: model for model in over_grpc}
    assert by_name["linear"] == {"name": "linear", "version": "1", "state": "READY"}
    assert by_name["broken"]["state"] == "UNAVAILABLE" and by_name["broken"]["reason"]
    http_client = triton_http.InferenceServerClient(repository_server.url.removeprefix("http://"))
    over_http = {model["name"]: model for model in http_client.get_model_repository_index()}
    assert over_http == by_name
    answer = oip_call(
        repository_server.grpc_target,
        "RepositoryIndex",
        pb.RepositoryIndexRequest(ready=True),
        pb.RepositoryIndexResponse,
    )
    assert "broken" not in {model.name for model in answer.models}


def test_without_a_name_predict_and_model_ask_for_one(repository_server):
    url = repository_server.url
    refused = requests.post(f"{url}/predict", json={"instances": [1.0]}, timeout=5)
    assert refused.status_code == 400 and "/predict/<name>" in refused.json()["message"]
    listing = requests.get(f"{url}/model", timeout=5).json()["models"]
    assert {model["name"]: model["state"] for model in listing}["broken"] == "UNAVAILABLE"
    one = requests.get(f"{url}/model/tabular", timeout=5).json()
    assert one["name"] == "tabular" and one["signature"]["inputs"]
    missing = requests.get(f"{url}/model/nothing", timeout=5)
    assert missing.status_code == 404 and "'linear'" in missing.json()["message"]


def test_metrics_count_inferences_by_model(repository_server):
    for _ in range(3):
        requests.post(
            f"{repository_server.url}/predict/linear", json={"instances": [1.0, 2.0]}, timeout=5
        )
    counts = metric_values(repository_server.url)
    assert (
        counts[
            ("model_server_prediction_batch_size_count", (("model", "linear"), ("version", "1")))
        ]
        >= 3
    )
    served = {labels for (name, labels) in counts if name == "model_server_model_info"}
    assert {dict(labels)["name"] for labels in served} >= {"linear", "multi", *ZOO_MODELS}


def test_a_reload_under_load_adds_and_drops_models_with_no_failure(
    model_dir, multi_model_dir, zoo, tmp_path, make_server
):
    root = write_repository(tmp_path / "repository", model_dir, multi_model_dir, zoo)
    server = make_server(None, MODEL_REPOSITORY=root)

    def change():
        shutil.copytree(model_dir, root / "linear-copy")
        shutil.rmtree(root / "multi")

    def every_worker_serves_the_new_set():
        return all("linear-copy" in names and "multi" not in names for names in indexes(server))

    reload_under_load(server, change, every_worker_serves_the_new_set, path="/predict/linear")
    # Once the old workers have left, no request reaches the old set.
    for _ in range(40):
        added = requests.post(
            f"{server.url}/predict/linear-copy", json={"instances": [1.0]}, timeout=5
        )
        dropped = requests.get(f"{server.url}/v2/models/multi", timeout=5)
        assert added.status_code == 200 and dropped.status_code == 404


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"MAX_MODELS": "2"}, "over MAX_MODELS=2"),
        ({"MAX_REPOSITORY_BYTES": "1000"}, "over MAX_REPOSITORY_BYTES=1,000"),
    ],
)
def test_a_repository_over_a_limit_is_refused_in_one_line(repository, tmp_path, setting, message):
    server = GunicornServer(None, tmp_path / "server.log", MODEL_REPOSITORY=repository, **setting)
    try:
        assert server.process.wait(timeout=60) != 0
    finally:
        server.stop()
    refusals = [line for line in server.output().splitlines() if "no servable model" in line]
    assert len(refusals) == 1 and message in refusals[0], server.output()


def test_ready_waits_for_every_model_that_loads(repository, tmp_path):
    server = GunicornServer(None, tmp_path / "server.log", MODEL_REPOSITORY=repository)
    try:
        server.wait_until_ready()
        # Once one worker is ready, every loadable model answers on it.
        for name in ("linear", "multi", *ZOO_MODELS):
            ready = requests.get(f"{server.url}/v2/models/{name}/ready", timeout=5)
            assert ready.status_code == 200, (name, ready.text)
    finally:
        server.stop()


def test_an_interval_poll_serves_a_new_model_and_drops_a_removed_one_unasked(
    model_dir, multi_model_dir, zoo, tmp_path, make_server
):
    root = write_repository(tmp_path / "repository", model_dir, multi_model_dir, zoo)
    server = make_server(None, MODEL_REPOSITORY=root, MODEL_POLL_SECONDS="1")
    poller = int(
        re.search(r"polling the model repository every 1 s \(pid (\d+)\)", server.output())[1]
    )
    with RequestStream(server.url, path="/predict/linear") as stream:
        wait_for(lambda: len(stream.versions) > 20)
        shutil.copytree(model_dir, root / "linear-copy")
        wait_for(lambda: all("linear-copy" in names for names in indexes(server)), timeout=60)
        shutil.rmtree(root / "multi")
        wait_for(lambda: all("multi" not in names for names in indexes(server)), timeout=60)
        count = len(stream.versions)
        wait_for(lambda: len(stream.versions) > count + 20)
    assert stream.failures == [], stream.failures[:3]
    # Unchanged, the repository is not reloaded again.
    # The master's children: its workers and the poll's process.
    wait_for(lambda: len(server.worker_pids()) == server.workers + 1, timeout=60)
    pids = server.worker_pids()
    assert poller in pids
    time.sleep(3)
    assert server.worker_pids() == pids
    assert server.output().count("the model repository changed") >= 2
    # The poll's process leaves with its master, as the workers do.
    server.stop()
    wait_for(lambda: not any(running(pid) for pid in pids), timeout=10)


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_version_policy_serves_several_versions_each_by_number_on_every_api(
    tmp_path, make_server
):
    root = tmp_path / "repository"
    for version in (1, 2, 3):
        save_version(scaled_linear(version), root / "scaled", version)
    (root / "version_policy.json").write_text('{"scaled": {"latest": 2}}')
    server = make_server(None, MODEL_REPOSITORY=root)
    url = server.url
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [2]}]}
    rows = requests.post(f"{url}/v2/repository/index", json={}, timeout=10).json()
    assert sorted((row["version"], row["state"]) for row in rows) == [
        ("2", "READY"),
        ("3", "READY"),
    ]
    assert requests.get(f"{url}/v2/models/scaled", timeout=5).json()["versions"] == ["3", "2"]
    for version, expected in (("2", 4.0), ("3", 6.0)):
        answer = requests.post(
            f"{url}/v2/models/scaled/versions/{version}/infer", json=body, timeout=5
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == version
        assert answer.json()["outputs"][0]["data"] == [pytest.approx(expected)]
        tfs = requests.post(
            f"{url}/v1/models/scaled/versions/{version}:predict", json={"instances": [2]}, timeout=5
        )
        assert tfs.json()["predictions"] == [[pytest.approx(expected)]]
        request = pb.ModelInferRequest(model_name="scaled", model_version=version)
        tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 1])
        tensor.contents.fp32_contents.append(2.0)
        answer = infer(server, request)
        assert answer.model_version == version
        assert np.frombuffer(answer.raw_output_contents[0], np.float32)[0] == pytest.approx(
            expected
        )
    newest = requests.post(f"{url}/v2/models/scaled/infer", json=body, timeout=5).json()
    assert newest["model_version"] == "3"
    assert requests.post(f"{url}/predict", json={"instances": [2]}, timeout=5).json()[
        "predictions"
    ] == [pytest.approx(6.0)]
    statuses = requests.get(f"{url}/v1/models/scaled", timeout=5).json()["model_version_status"]
    assert [status["version"] for status in statuses] == ["3", "2"]
    refused = requests.post(f"{url}/v2/models/scaled/versions/1/infer", json=body, timeout=5)
    assert refused.status_code == 404 and "served: 3, 2" in refused.json()["error"]
    assert requests.get(f"{url}/v2/models/scaled/versions/1/ready", timeout=5).status_code == 404
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert 'name="scaled",runtime="litert",version="2"' in metrics
    assert 'name="scaled",runtime="litert",version="3"' in metrics

    # A reload takes the changed policy up: now version 1 only.
    (root / "version_policy.json").write_text('{"scaled": {"specific": [1]}}')
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: all(each["scaled"]["version"] == "1" for each in indexes(server)), timeout=60)
    answer = requests.post(f"{url}/v2/models/scaled/infer", json=body, timeout=5).json()
    assert answer["model_version"] == "1" and answer["outputs"][0]["data"] == [pytest.approx(2.0)]
    # A policy that names no version there is refused; the versions served stay.
    (root / "version_policy.json").write_text('{"scaled": {"specific": [7]}}')
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "version 7 not found" in server.output(), timeout=60)
    assert requests.post(f"{url}/v2/models/scaled/infer", json=body, timeout=5).status_code == 200
