"""The image as a user runs it: ``make image-test`` (needs a Docker engine; it starts one).

Each check fails with a message saying what a user would have seen go wrong.
"""

import shutil
import threading
import time

import numpy as np
import pytest
import requests

from app.grpc import open_inference_pb2 as pb
from tests.image.conftest import IMAGE, docker
from tests.integration.clients import oip_call

# Read-only root filesystem: Gunicorn's heartbeat files and the metrics live in /tmp.
READ_ONLY = ("--read-only", "--tmpfs", "/tmp")


def test_the_image_is_small_and_says_so():
    size = int(docker("image", "inspect", IMAGE, "--format", "{{.Size}}"))
    print(f"\nimage {IMAGE}: {size / 1e6:.0f} MB")
    assert size < 300e6, f"the image is {size / 1e6:.0f} MB, over the 300 MB goal"


def test_it_runs_as_a_non_root_user_on_a_read_only_filesystem(run_container):
    container = run_container(*READ_ONLY)
    answering = container.wait_until_answering()
    healthy = container.wait_until_healthy()
    print(f"\ndocker run to /health/ready 200: {answering:.1f} s; to healthy: {healthy:.1f} s")
    user = docker("exec", container.name, "id", "-u")
    assert user != "0", "the server runs as root"
    assert container.inspect()["HostConfig"]["ReadonlyRootfs"]
    written = docker("exec", container.name, "sh", "-c", "touch /srv/x", check=False)
    assert "Read-only" in written or not written, "the root filesystem is writable"


def test_predict_answers_the_notebooks_number(run_container):
    container = run_container(*READ_ONLY)
    container.wait_until_answering()
    response = requests.post(f"{container.url}/predict", json={"instances": [10]}, timeout=5)
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction == pytest.approx(31.0, abs=0.05), f"predict(10) gave {prediction}, not ~31"


def test_grpc_answers_on_its_port_with_the_same_model(run_container):
    container = run_container(*READ_ONLY)
    container.wait_until_answering()
    request = pb.ModelInferRequest(model_name="linear")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(10)
    answer = oip_call(container.grpc_target, "ModelInfer", request, pb.ModelInferResponse)
    (prediction,) = np.frombuffer(answer.raw_output_contents[0], "<f4")
    assert prediction == pytest.approx(31.0, abs=0.05), f"gRPC predict(10) gave {prediction}"


def test_a_mounted_model_store_is_served_instead_of_the_baked_in_one(
    run_container, model_dir, tmp_path
):
    # A store as an operator keeps it: readable by the container's user (pytest's are not).
    store = tmp_path / "store"
    shutil.copytree(model_dir, store / "linear")
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    container = run_container(
        *READ_ONLY, "-v", f"{store}:/mounted:ro", env={"MODEL_DIR": "/mounted/linear"}
    )
    container.wait_until_answering()
    model = requests.get(f"{container.url}/model", timeout=5).json()
    assert model["path"] == "/mounted/linear/1", f"served {model['path']}, not the mounted store"
    assert model["metadata"]["training"]["epochs"] == 20, "not the mounted model's metadata"


def test_docker_stop_completes_every_request_and_exits_zero(run_container):
    # A load balancer stops sending once readiness turns 503; DRAIN_SECONDS gives it the time.
    container = run_container(*READ_ONLY, env={"DRAIN_SECONDS": "2"})
    container.wait_until_answering()
    answers, failures, stop = [], [], threading.Event()

    def stream():
        while not stop.is_set():
            try:
                response = requests.post(
                    f"{container.url}/predict", json={"instances": [1, 2]}, timeout=10
                )
                (answers if response.status_code == 200 else failures).append(response.text)
            except requests.RequestException as error:
                failures.append(repr(error))

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    time.sleep(1)
    started = time.monotonic()
    stopper = threading.Thread(target=docker, args=("stop", "-t", "35", container.name))
    stopper.start()
    time.sleep(1)  # Within the drain: still serving while readiness says draining.
    stop.set()
    thread.join(timeout=15)
    stopper.join(timeout=60)
    elapsed = time.monotonic() - started
    state = container.inspect()["State"]
    print(f"\ndocker stop: {elapsed:.1f} s, exit code {state['ExitCode']}, {len(answers)} answered")
    assert failures == [], f"{len(failures)} requests failed during docker stop: {failures[:3]}"
    assert answers, "no request was answered"
    assert state["ExitCode"] == 0, f"exit code {state['ExitCode']}:\n{container.logs()}"
    assert elapsed < 35, f"docker stop took {elapsed:.1f} s, past the grace period"
