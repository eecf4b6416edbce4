"""Explicit model control on a real Gunicorn: load and unload over REST and gRPC, in force
on every worker before the answer, kept by a reload and by a replaced worker; the
refusals and the limits.

Run alone with ``.venv/bin/pytest tests/integration/test_model_control.py``.
"""

import os
import shutil
import signal
import threading
import time

import grpc
import numpy as np
import pytest
import requests

from app.core.control import IDLE_POLL_SECONDS
from app.grpc import open_inference_pb2 as pb
from app.grpc.server import CONNECTION_AGE_SECONDS
from app.runtime.compiler import tensor_specs
from tests.conftest import save_version
from tests.integration.clients import RequestStream, oip_call, wait_for
from tests.integration.conftest import start
from tests.integration.grpc_clients import TritonStream, client
from tests.models import (
    assert_agrees,
    in_domain,
    keras_outputs,
    outputs_from,
    request_for,
    scaled_linear,
)

# Fresh and kept-alive connections after an answer: enough to reach both workers many times.
CONNECTIONS = 40


@pytest.fixture(scope="module")
def repository(model_dir, zoo, tmp_path_factory):
    """linear, its copy "spare", the zoo's tabular model, and a model that does not load."""
    root = tmp_path_factory.mktemp("repository")
    shutil.copytree(model_dir, root / "linear")
    shutil.copytree(model_dir, root / "spare")
    shutil.copytree(zoo["tabular"].model_dir, root / "tabular")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "metadata.json").write_text("not JSON")
    return root


@pytest.fixture
def explicit_server(repository, tmp_path_factory):
    """Two workers, explicit mode, only linear loaded at start."""
    server = start(
        None,
        tmp_path_factory,
        MODEL_REPOSITORY=repository,
        MODEL_CONTROL_MODE="explicit",
        MODEL_LOAD="linear",
    )
    yield server
    server.stop()


def control(server, action: str, name: str, **request):
    return requests.post(
        f"{server.url}/v2/repository/models/{name}/{action}", timeout=120, **request
    )


def index(server) -> dict:
    response = requests.post(f"{server.url}/v2/repository/index", timeout=10)
    assert response.status_code == 200, response.text
    return {model["name"]: model for model in response.json()}


def kept_alive(server) -> list[requests.Session]:
    """Sessions whose connections were opened before, spread over the workers."""
    sessions, workers = [], set()
    while len(sessions) < CONNECTIONS or len(workers) < server.workers:
        session = requests.Session()
        workers.add(session.get(f"{server.url}/health/live", timeout=5).headers["X-Worker-PID"])
        sessions.append(session)
    return sessions


def predictions(server, name: str, sessions) -> list[requests.Response]:
    """One prediction of ``name`` on each kept-alive session and on as many fresh connections."""
    url = f"{server.url}/predict/{name}"
    body = {"instances": [1.0, 2.0]}
    kept = [session.post(url, json=body, timeout=10) for session in sessions]
    return kept + [requests.post(url, json=body, timeout=10) for _ in sessions]


def test_a_start_loads_only_what_model_load_names(explicit_server):
    listed = index(explicit_server)
    assert listed["linear"] == {"name": "linear", "version": "1", "state": "READY"}
    for name in ("spare", "tabular", "broken"):
        assert listed[name] == {"name": name, "state": "UNAVAILABLE", "reason": "unloaded"}
    ready_only = requests.post(
        f"{explicit_server.url}/v2/repository/index", json={"ready": True}, timeout=10
    )
    assert [model["name"] for model in ready_only.json()] == ["linear"]
    extensions = requests.get(f"{explicit_server.url}/v2", timeout=5).json()["extensions"]
    assert "model_repository" in extensions


def test_a_load_and_an_unload_are_in_force_on_every_worker_before_the_answer(explicit_server):
    sessions = kept_alive(explicit_server)
    loaded = control(explicit_server, "load", "spare", json={})
    assert loaded.status_code == 200 and loaded.json() == {"name": "spare", "load": True}
    answers = predictions(explicit_server, "spare", sessions)
    assert [answer.status_code for answer in answers] == [200] * len(answers)
    assert len({answer.headers["X-Worker-PID"] for answer in answers}) == explicit_server.workers

    unloaded = control(explicit_server, "unload", "spare")
    assert unloaded.status_code == 200 and unloaded.json() == {"name": "spare", "unload": True}
    answers = predictions(explicit_server, "spare", sessions)
    assert [answer.status_code for answer in answers] == [404] * len(answers)
    assert index(explicit_server)["spare"]["state"] == "UNAVAILABLE"


def test_a_loaded_model_answers_right_on_every_api(explicit_server, zoo):
    assert control(explicit_server, "load", "tabular").status_code == 200
    model = zoo["tabular"].keras
    inputs = in_domain(model, rows=4, seed=3)
    for api in ("predict", "v2", "v1"):
        path, body = request_for(api, "tabular", inputs)
        path = path.replace("/predict", "/predict/tabular")
        response = requests.post(explicit_server.url + path, json=body, timeout=30)
        assert response.status_code == 200, response.text
        outputs = outputs_from(api, response.json(), tensor_specs(model)[1])
        assert_agrees(outputs, keras_outputs(model, inputs))


def test_tritonclient_loads_and_unloads_over_grpc_and_http(explicit_server, keras_model):
    import tritonclient.http as triton_http

    answers = client(
        "triton_control", target=explicit_server.grpc_target, model="spare", values=[[1.0], [2.0]]
    )
    expected = keras_model.predict(np.array([[1.0], [2.0]]), verbose=0).ravel().tolist()
    for answer in answers["loaded"]:
        assert answer == pytest.approx(expected, rel=1e-4)
    assert answers["unloaded"] == ["StatusCode.NOT_FOUND"] * len(answers["unloaded"])

    http = triton_http.InferenceServerClient(explicit_server.url.removeprefix("http://"))
    http.load_model("spare")
    assert http.is_model_ready("spare")
    http.unload_model("spare")
    assert not http.is_model_ready("spare")


def test_a_load_under_traffic_fails_no_request(explicit_server):
    with RequestStream(explicit_server.url, path="/predict/linear") as stream:
        wait_for(lambda: len(stream.versions) > 20)
        for _ in range(3):
            assert control(explicit_server, "load", "spare").status_code == 200
            assert control(explicit_server, "load", "linear").status_code == 200
            assert control(explicit_server, "unload", "spare").status_code == 200
        count = len(stream.versions)
        wait_for(lambda: len(stream.versions) > count + 20)
    assert stream.failures == [], stream.failures[:3]


def test_concurrent_loads_take_turns_and_all_land(explicit_server):
    answers = []

    def load(name):
        answers.append(control(explicit_server, "load", name).status_code)

    threads = [threading.Thread(target=load, args=(name,)) for name in ("spare", "tabular")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200, 200]
    assert all(index(explicit_server)[name]["state"] == "READY" for name in ("spare", "tabular"))


def test_a_reload_and_a_replaced_worker_serve_the_same_set(explicit_server):
    assert control(explicit_server, "load", "spare").status_code == 200
    assert control(explicit_server, "unload", "linear").status_code == 200
    explicit_server.process.send_signal(signal.SIGHUP)
    old = set(explicit_server.worker_pids())
    wait_for(lambda: not old & set(explicit_server.worker_pids()), timeout=60)
    os.kill(explicit_server.worker_pids()[0], signal.SIGKILL)
    explicit_server.wait_until_all_workers_ready(explicit_server.workers)
    for _ in range(CONNECTIONS):
        listed = index(explicit_server)
        assert listed["spare"]["state"] == "READY"
        assert listed["linear"]["state"] == "UNAVAILABLE"


def test_a_model_that_does_not_load_says_why_and_the_others_serve(explicit_server):
    refused = control(explicit_server, "load", "broken")
    assert refused.status_code == 400
    assert "metadata" in refused.json()["error"]
    listed = index(explicit_server)
    assert listed["broken"]["state"] == "UNAVAILABLE" and "metadata" in listed["broken"]["reason"]
    assert listed["linear"]["state"] == "READY"
    missing = control(explicit_server, "load", "nothing")
    assert missing.status_code == 404 and "not in the repository" in missing.json()["error"]
    escaping = control(explicit_server, "load", "..")
    assert escaping.status_code == 404
    not_loaded = control(explicit_server, "unload", "tabular")
    assert not_loaded.status_code == 404 and "not loaded" in not_loaded.json()["error"]
    with_config = control(explicit_server, "load", "spare", json={"parameters": {"config": "{}"}})
    assert with_config.status_code == 400 and "not supported" in with_config.text
    assert requests.post(
        f"{explicit_server.url}/predict/linear", json={"instances": [1.0]}, timeout=5
    ).ok


def test_loads_are_refused_past_max_models_and_without_the_token(repository, make_server):
    server = make_server(
        None,
        MODEL_REPOSITORY=repository,
        MODEL_CONTROL_MODE="explicit",
        MODEL_LOAD="linear,spare",
        MAX_MODELS="2",
        API_TOKEN="secret",
    )
    token = {"Authorization": "Bearer secret"}
    assert control(server, "load", "tabular").status_code == 401
    over = control(server, "load", "tabular", headers=token)
    assert over.status_code == 400 and "MAX_MODELS" in over.json()["error"]
    assert control(server, "unload", "spare", headers=token).status_code == 200
    assert control(server, "load", "tabular", headers=token).status_code == 200


def test_without_explicit_mode_loads_are_refused(repository, make_server):
    server = make_server(None, MODEL_REPOSITORY=repository)
    refused = control(server, "load", "linear")
    assert refused.status_code == 400 and "MODEL_CONTROL_MODE=explicit" in refused.json()["error"]
    assert control(server, "unload", "linear").status_code == 400


def test_a_load_serves_the_versions_the_policy_names_on_every_worker(
    model_dir, tmp_path, make_server
):
    root = tmp_path / "repository"
    shutil.copytree(model_dir, root / "linear")
    for version in (1, 2, 3):
        save_version(scaled_linear(version), root / "scaled", version)
    (root / "version_policy.json").write_text('{"scaled": {"specific": [1, 2]}}')
    server = make_server(
        None, MODEL_REPOSITORY=root, MODEL_CONTROL_MODE="explicit", MODEL_LOAD="linear"
    )
    assert control(server, "load", "scaled").status_code == 200

    def answers() -> set[tuple]:
        body = {"instances": [2.0]}
        seen = set()
        for _ in range(CONNECTIONS):
            for version in ("1", "2"):
                url = f"{server.url}/v1/models/scaled/versions/{version}:predict"
                answer = requests.post(url, json=body, timeout=10)
                seen.add((version, answer.status_code, answer.json()["predictions"][0][0]))
        return seen

    assert answers() == {("1", 200, 2.0), ("2", 200, 4.0)}
    # A reload's workers and a replaced worker serve both versions too.
    server.process.send_signal(signal.SIGHUP)
    old = set(server.worker_pids())
    wait_for(lambda: not old & set(server.worker_pids()), timeout=60)
    os.kill(server.worker_pids()[0], signal.SIGKILL)
    server.wait_until_all_workers_ready(server.workers)
    assert answers() == {("1", 200, 2.0), ("2", 200, 4.0)}


def test_tensorflow_runtime_models_load_one_after_another(model_dir, zoo, tmp_path, make_server):
    # A worker that serves a TensorFlow-runtime model runs TensorFlow's thread pools: a load's
    # child forked from it hung. Each load after the first must land too.
    root = tmp_path / "repository"
    shutil.copytree(model_dir, root / "linear")
    for name in ("cumulative", "text_classifier", "lstm_variable"):
        shutil.copytree(zoo[name].model_dir, root / name)
    server = make_server(
        None,
        MODEL_REPOSITORY=root,
        MODEL_CONTROL_MODE="explicit",
        MODEL_LOAD="linear",
        MODEL_LOAD_TIMEOUT=60,
    )
    for name in ("cumulative", "text_classifier", "lstm_variable", "cumulative"):
        loaded = control(server, "load", name)
        assert loaded.status_code == 200, loaded.text
    for name in ("cumulative", "text_classifier", "lstm_variable"):
        model = zoo[name]
        inputs = in_domain(model.keras, 2)
        url, body = request_for("v2", name, inputs)
        answer = requests.post(f"{server.url}{url}", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        specs = tensor_specs(model.keras)[1]
        assert_agrees(outputs_from("v2", answer.json(), specs), keras_outputs(model.keras, inputs))
    assert "did not finish" not in server.output()


@pytest.mark.parametrize("name", ["a" * 300, "b" * 201, "x." * 150])
def test_a_name_too_long_for_a_file_is_404_on_every_control_call(explicit_server, name):
    for action in ("load", "unload"):
        answer = control(explicit_server, action, name)
        assert answer.status_code == 404, answer.text
        assert "error" in answer.json()
    request = pb.RepositoryModelLoadRequest(model_name=name)
    with pytest.raises(grpc.RpcError) as refused:
        oip_call(
            explicit_server.grpc_target,
            "RepositoryModelLoad",
            request,
            pb.RepositoryModelLoadResponse,
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert index(explicit_server)["linear"]["state"] == "READY"


@pytest.mark.parametrize("file", ["registry.json", "version_policy.json"])
def test_a_deeply_nested_repository_file_is_a_400_naming_it(model_dir, tmp_path, make_server, file):
    root = tmp_path / "repository"
    shutil.copytree(model_dir, root / "linear")
    shutil.copytree(model_dir, root / "spare")
    server = make_server(
        None, MODEL_REPOSITORY=root, MODEL_CONTROL_MODE="explicit", MODEL_LOAD="linear"
    )
    (root / file).write_text("[" * 100_000 + "]" * 100_000)
    refused = control(server, "load", "spare")
    assert refused.status_code == 400, refused.text
    assert file in refused.json()["error"] and "nested too deeply" in refused.json()["error"]
    assert index(server)["linear"]["state"] == "READY"
    assert "Traceback" not in server.output()


def test_a_repository_read_that_hangs_never_stalls_a_worker(model_dir, tmp_path, make_server):
    root = tmp_path / "repository"
    shutil.copytree(model_dir, root / "linear")
    shutil.copytree(model_dir, root / "spare")
    server = make_server(
        None,
        MODEL_REPOSITORY=root,
        MODEL_CONTROL_MODE="explicit",
        MODEL_LOAD="linear",
        MODEL_LOAD_TIMEOUT=2,
        GUNICORN_TIMEOUT=1,
    )
    workers = set(server.worker_pids())
    os.mkfifo(root / "registry.json")  # A hung file system: a read that never returns.
    results = {}

    def call(key, action):
        results[key] = action()

    calls = [
        threading.Thread(
            target=call,
            args=("index", lambda: requests.post(f"{server.url}/v2/repository/index", timeout=30)),
        ),
        threading.Thread(target=call, args=("load", lambda: control(server, "load", "spare"))),
    ]
    for thread in calls:
        thread.start()
    probes = []
    while any(thread.is_alive() for thread in calls):
        answer = requests.get(f"{server.url}/health/ready", timeout=5)
        probes.append((answer.status_code, answer.elapsed.total_seconds()))
    assert results["index"].status_code == 200
    assert [model["name"] for model in results["index"].json()] == ["linear"]
    assert results["load"].status_code == 503 and "did not answer" in results["load"].text
    assert all(status == 200 and seconds < 1 for status, seconds in probes), probes
    assert set(server.worker_pids()) == workers and "WORKER TIMEOUT" not in server.output()


def test_the_token_guards_the_index_over_grpc_as_over_rest(repository, make_server):
    server = make_server(
        None,
        MODEL_REPOSITORY=repository,
        MODEL_CONTROL_MODE="explicit",
        MODEL_LOAD="linear",
        API_TOKEN="secret",
    )
    assert requests.post(f"{server.url}/v2/repository/index", timeout=10).status_code == 401
    request = pb.RepositoryIndexRequest()
    with pytest.raises(grpc.RpcError) as refused:
        oip_call(server.grpc_target, "RepositoryIndex", request, pb.RepositoryIndexResponse)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    answer = oip_call(
        server.grpc_target,
        "RepositoryIndex",
        request,
        pb.RepositoryIndexResponse,
        metadata=(("authorization", "Bearer secret"),),
    )
    assert "linear" in [model.name for model in answer.models]


def infer_call(server, model: str, inputs: dict[str, np.ndarray]) -> pb.ModelInferResponse:
    """One ``ModelInfer`` over a fresh channel, the tensors as raw bytes."""
    request = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        request.inputs.add(name=name, datatype="FP32", shape=array.shape)
        request.raw_input_contents.append(np.ascontiguousarray(array, "<f4").tobytes())
    return oip_call(server.grpc_target, "ModelInfer", request, pb.ModelInferResponse)


def test_grpc_takes_the_messages_of_a_model_loaded_later_until_it_is_unloaded(
    model_dir, zoo, tmp_path, make_server
):
    """grpcio fixes a server's message bound when it starts: each worker starts a server
    with the bound the models it now serves need once it has taken up the change (at its
    next request or call, or within IDLE_POLL_SECONDS), and no call fails meanwhile."""
    root = tmp_path / "repository"
    shutil.copytree(model_dir, root / "linear")
    shutil.copytree(zoo["mobilenet"].model_dir, root / "mobilenet")
    server = make_server(
        None, MODEL_REPOSITORY=root, MODEL_CONTROL_MODE="explicit", MODEL_LOAD="linear"
    )
    keras_model = zoo["mobilenet"].keras
    images = in_domain(keras_model, 2)  # 1.2 MB of float32: over linear's 1 MiB bound.
    with TritonStream(server.grpc_target) as stream:
        assert control(server, "load", "mobilenet", json={}).status_code == 200
        time.sleep(IDLE_POLL_SECONDS + 0.5)
        metadata = requests.get(f"{server.url}/v2/models/mobilenet", timeout=10).json()
        (spec,) = metadata["inputs"]
        (image_input,) = images.values()
        # Every worker's new server: fresh channels reach both workers many times over.
        for _ in range(12):
            answer = infer_call(server, "mobilenet", {spec["name"]: image_input})
            (output,) = answer.outputs
            got = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(output.shape)
            want = keras_outputs(keras_model, images)[output.name]
            assert_agrees({output.name: got}, {output.name: want})

        assert control(server, "unload", "mobilenet").status_code == 200
        time.sleep(IDLE_POLL_SECONDS + 0.5)
        # The bound is linear's again, on every worker.
        for _ in range(12):
            with pytest.raises(grpc.RpcError) as refused:
                infer_call(server, "linear", {"x": image_input.reshape(-1, 1)})
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in refused.value.details()
            assert "1048576" in refused.value.details()
        time.sleep(CONNECTION_AGE_SECONDS + 1)  # The stream's old connections are sent away.
        result = stream.stop()
    assert result["failures"] == [], result["failures"][:3]
    assert len(result["versions"]) > 100
