"""Promote and roll back with one control call: labels, weights and a shadow changed over REST
and gRPC, in force on every worker before the answer, under load without a failed request,
kept by a replaced worker and a reload; a change that does not hold together refused with
nothing changed; and per-version statistics through tritonclient over HTTP and gRPC.

Three versions of y = k·x (k = 1, 2, 3) and a model whose two versions differ in outputs.
Run alone with ``.venv/bin/pytest tests/integration/test_rollout_control.py``.
"""

import json
import os
import signal
import time
from contextlib import ExitStack

import grpc
import pytest
import requests
import tritonclient.http as triton_http

from app.grpc import open_inference_pb2 as pb
from tests.conftest import save_version
from tests.integration.clients import RequestStream, metric_values, oip_call, wait_for
from tests.integration.conftest import start
from tests.integration.grpc_clients import client
from tests.models import classifier, scaled_linear

TOKEN = "rollout-token"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}
POLICY = {
    "scaled": {"specific": [1, 2, 3], "labels": {"stable": 1, "canary": 2}},
    "classes": {"latest": 2},
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout-control")
    for version in (1, 2, 3):
        save_version(scaled_linear(version), root / "scaled", version)
    save_version(scaled_linear(1), root / "classes", 1)
    save_version(classifier(), root / "classes", 2)  # Other inputs and outputs.
    (root / "version_policy.json").write_text(json.dumps(POLICY))
    return root


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    gunicorn = start(None, tmp_path_factory, MODEL_REPOSITORY=root, API_TOKEN=TOKEN)
    yield gunicorn
    gunicorn.stop()


def change(server, entry, name="scaled") -> requests.Response:
    return requests.post(
        f"{server.url}/v2/repository/models/{name}/rollout",
        json=entry,
        headers=AUTHORIZED,
        timeout=10,
    )


def answers(server, path="/predict/scaled", count=40) -> dict[str, set[str]]:
    """The versions that answered ``count`` requests on fresh connections, by worker."""
    seen: dict[str, set[str]] = {}
    for _ in range(count):
        answer = requests.post(
            f"{server.url}{path}", json={"instances": [1.0]}, headers=AUTHORIZED, timeout=5
        )
        assert answer.status_code == 200, answer.text
        seen.setdefault(answer.headers["X-Worker-PID"], set()).add(
            answer.json()["model"]["version"]
        )
    return seen


def test_a_control_call_moves_labels_and_weights_on_every_worker_before_it_answers(server, root):
    answer = change(server, {"labels": {"stable": 2, "canary": 1}, "weights": {"stable": 100}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["labels"] == {"stable": 2, "canary": 1}
    assert answer.json()["weights"] == {"2": 100}
    for path in ("/predict/scaled", "/predict/scaled/versions/stable"):
        seen = answers(server, path)
        assert len(seen) == 2 and all(versions == {"2"} for versions in seen.values()), seen
    entry = json.loads((root / "version_policy.json").read_text())["scaled"]
    assert entry == {
        "specific": [1, 2, 3],
        "labels": {"stable": 2, "canary": 1},
        "weights": {"stable": 100},
    }
    # Over gRPC: Triton's load call with a "rollout" parameter changes the rollout only.
    load = pb.RepositoryModelLoadRequest(model_name="scaled")
    load.parameters["rollout"].string_param = json.dumps({"weights": {"3": 100}})
    oip_call(
        server.grpc_target,
        "RepositoryModelLoad",
        load,
        pb.RepositoryModelLoadResponse,
        metadata=(("authorization", f"Bearer {TOKEN}"),),
    )
    seen = answers(server)
    assert len(seen) == 2 and all(versions == {"3"} for versions in seen.values()), seen
    state = requests.get(f"{server.url}/v2/repository/models/scaled/rollout", timeout=5).json()
    assert state == {"name": "scaled", "versions": ["3", "2", "1"], "weights": {"3": 100}}


def test_twenty_switches_under_load_fail_no_request_and_each_is_in_force_at_its_answer(server):
    streams = [  # c16, as the issue measures it.
        RequestStream(server.url, "/predict/scaled", {"instances": [1.0]}, True, AUTHORIZED)
        for _ in range(16)
    ]
    answered_in = []
    with ExitStack() as running:
        for stream in streams:
            running.enter_context(stream)
        for switch in range(20):
            version = "2" if switch % 2 else "1"  # A promotion, then a rollback, ...
            started = time.monotonic()
            answer = change(server, {"labels": {"stable": int(version)}, "weights": {version: 100}})
            answered_in.append(time.monotonic() - started)
            assert answer.status_code == 200, answer.text
            seen = answers(server, count=10)
            assert all(versions == {version} for versions in seen.values()), (switch, seen)
    assert all(not stream.failures for stream in streams), [s.failures[:3] for s in streams]
    assert sum(len(stream.versions) for stream in streams) > 100
    assert max(answered_in) <= 1.0, answered_in


@pytest.mark.parametrize(
    ("name", "entry", "status", "why"),
    [
        ("scaled", {"labels": {"next": 9}}, 400, "label 'next' names version 9, which is not"),
        ("scaled", {"weights": {"1": 60, "2": 30}}, 400, "weights add up to 90, not 100"),
        ("scaled", {"weights": {"beta": 100}}, 400, "'beta', which is neither a label nor"),
        ("scaled", {"shadow": {"version": 9}}, 400, "shadow names version 9, which is not"),
        ("scaled", {"lables": {"stable": 1}}, 400, "Unknown field"),
        ("classes", {"shadow": {"version": 2}}, 400, "cannot be compared with version 1"),
        ("nothing", {"weights": {"1": 100}}, 404, "'nothing' is not served"),
    ],
)
def test_a_change_that_does_not_hold_together_is_refused_and_nothing_changes(
    server, root, name, entry, status, why
):
    before = requests.get(f"{server.url}/v2/repository/models/scaled/rollout", timeout=5).json()
    written = (root / "version_policy.json").read_text()
    answer = change(server, entry, name)
    assert answer.status_code == status and why in answer.text, answer.text
    after = requests.get(f"{server.url}/v2/repository/models/scaled/rollout", timeout=5).json()
    assert after == before and (root / "version_policy.json").read_text() == written


def test_a_change_needs_the_token_over_rest_and_grpc(server):
    before = requests.get(f"{server.url}/v2/repository/models/scaled/rollout", timeout=5).json()
    answer = requests.post(f"{server.url}/v2/repository/models/scaled/rollout", json={}, timeout=5)
    assert answer.status_code == 401
    load = pb.RepositoryModelLoadRequest(model_name="scaled")
    load.parameters["rollout"].string_param = "{}"
    with pytest.raises(grpc.RpcError) as refused:
        oip_call(server.grpc_target, "RepositoryModelLoad", load, pb.RepositoryModelLoadResponse)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    after = requests.get(f"{server.url}/v2/repository/models/scaled/rollout", timeout=5).json()
    assert after == before


def test_a_rollout_survives_a_replaced_worker_and_a_reload(server):
    assert change(server, {"labels": {"stable": 3}, "weights": {"stable": 100}}).ok
    os.kill(server.worker_pids()[0], signal.SIGKILL)
    server.wait_until_all_workers_ready(2)
    seen = answers(server)
    assert all(versions == {"3"} for versions in seen.values()), seen
    server.process.send_signal(signal.SIGHUP)
    old = set(seen)
    wait_for(lambda: not old & set(answers(server, count=10)), timeout=60)
    seen = answers(server)
    assert all(versions == {"3"} for versions in seen.values()), seen


def test_statistics_per_version_through_tritonclient_over_http_and_grpc(server):
    def stats(version):
        http = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
        (answer,) = http.get_inference_statistics("scaled", version)["model_stats"]
        return answer

    assert change(server, {"labels": {"stable": 1, "canary": 2}}).ok
    before = stats("2")
    for x in (1.0, 2.0, 3.0):
        for _ in range(10):  # Fresh connections: both workers answer.
            requests.post(
                f"{server.url}/predict/scaled/versions/2",
                json={"instances": [x, x]},
                headers=AUTHORIZED,
                timeout=5,
            )
    # A request that reaches the version and fails: its output overflows float32.
    refused = requests.post(
        f"{server.url}/v2/models/scaled/versions/2/infer",
        json={"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [3e38]}]},
        headers=AUTHORIZED,
        timeout=5,
    )
    assert refused.status_code in (400, 422), refused.text
    after = stats("2")
    success = {key: after["inference_stats"][key]["count"] for key in after["inference_stats"]}
    assert after["name"] == "scaled" and after["version"] == "2"
    assert success["success"] - before["inference_stats"]["success"]["count"] == 30
    assert success["fail"] - before["inference_stats"]["fail"]["count"] == 1
    assert int(after["inference_count"]) - int(before["inference_count"]) == 60
    assert int(after["execution_count"]) - int(before["execution_count"]) == 30
    phases = ("queue", "compute_input", "compute_infer", "compute_output")
    durations = after["inference_stats"]
    assert all(int(durations[phase]["ns"]) > 0 for phase in phases)
    assert sum(int(durations[phase]["ns"]) for phase in phases) <= int(durations["success"]["ns"])
    assert int(after["last_inference"]) / 1000 == pytest.approx(time.time(), abs=60)
    # By label, and every version of the model, and over gRPC the same numbers.
    http = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    labelled = requests.get(f"{server.url}/v2/models/scaled/versions/canary/stats", timeout=5)
    assert labelled.status_code == 200
    every = http.get_inference_statistics("scaled")["model_stats"]
    assert [each["version"] for each in every] == ["1", "2", "3"]
    over_grpc = client("triton_statistics", target=server.grpc_target, model="scaled", version="2")
    (grpc_stats,) = over_grpc["model_stats"]
    assert int(grpc_stats["inference_stats"]["success"]["count"]) == success["success"]
    assert "statistics" in http.get_server_metadata()["extensions"]
    missing = requests.get(f"{server.url}/v2/models/scaled/versions/7/stats", timeout=5)
    assert missing.status_code == 404


def test_a_single_model_takes_its_rollout_from_the_file_beside_its_versions(tmp_path, make_server):
    model_dir = tmp_path / "scaled"
    for version in (1, 2):
        save_version(scaled_linear(version), model_dir, version)
    entry = {"latest": 2, "labels": {"stable": 1}, "weights": {"stable": 100}}
    (model_dir / "version_policy.json").write_text(json.dumps(entry))
    server = make_server(model_dir)
    answer = requests.post(f"{server.url}/predict", json={"instances": [2.0]}, timeout=5)
    assert answer.json() == {"predictions": [2.0], "model": {"name": "scaled", "version": "1"}}
    assert change(server, {"labels": {"stable": 2}, "weights": {"stable": 100}}).ok
    seen = answers(server, "/predict")
    assert all(versions == {"2"} for versions in seen.values()), seen
    written = json.loads((model_dir / "version_policy.json").read_text())
    assert written == {"latest": 2, "labels": {"stable": 2}, "weights": {"stable": 100}}


def test_a_shadow_starts_and_stops_with_one_call(server):
    def copies():
        values = metric_values(server.url)
        return sum(
            value
            for (name, labels), value in values.items()
            if name == "model_server_shadow_copies_total" and ("shadow", "3") in labels
        )

    assert change(server, {"weights": {"1": 100}, "shadow": {"version": 3}}).ok
    before = copies()
    seen = answers(server, count=20)
    assert all(versions == {"1"} for versions in seen.values()), seen
    wait_for(lambda: copies() - before == 20, timeout=10)
    assert change(server, {"weights": {"1": 100}}).ok
    stopped = copies()
    answers(server, count=20)
    time.sleep(0.5)
    assert copies() == stopped
