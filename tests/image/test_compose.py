"""``docker compose up`` as a user runs it: the API and Prometheus scraping it.

Run by ``make image-test`` after the image is built; the project gets its own
name and free 127.0.0.1 ports, and ``docker compose down`` removes it.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from app.grpc import open_inference_pb2 as pb
from tests.image.conftest import IMAGE, docker
from tests.integration.clients import oip_call
from tests.integration.server import ROOT, free_port

PREDICTIONS = 7


def compose(project: str, environ: dict, *args: str, timeout=300):
    command = [str(Path(sys.executable).parent / "docker-compose"), "-p", project, *args]
    result = subprocess.run(
        command, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(f"docker compose {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def wait_for(what: str, condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    pytest.fail(f"{what} within {timeout} s")


@pytest.fixture
def stack():
    project = f"model-server-test-{uuid.uuid4().hex[:8]}"
    api, grpc_port, prometheus = free_port(), free_port(), free_port()
    environ = {
        **os.environ,
        "IMAGE": IMAGE,
        "API_PORT": f"127.0.0.1:{api}",
        "GRPC_PORT": f"127.0.0.1:{grpc_port}",
        "PROMETHEUS_PORT": f"127.0.0.1:{prometheus}",
    }
    try:
        compose(project, environ, "up", "-d", "--wait", "--no-build")
        yield f"http://127.0.0.1:{api}", f"http://127.0.0.1:{prometheus}", f"127.0.0.1:{grpc_port}"
    finally:
        compose(project, environ, "down", "-v", "--timeout", "40")
        left = docker("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}")
        assert left == "", f"docker compose down left containers: {left}"


def test_compose_up_serves_the_api_and_prometheus_scrapes_it(stack):
    api, prometheus, grpc_target = stack
    live = oip_call(grpc_target, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)
    assert live.live, "gRPC's ServerLive through compose's port"
    for _ in range(PREDICTIONS):
        response = requests.post(f"{api}/predict", json={"instances": [10]}, timeout=5)
        assert response.status_code == 200, response.text

    def target_up():
        targets = requests.get(f"{prometheus}/api/v1/targets", timeout=5).json()
        return [t["health"] for t in targets["data"]["activeTargets"]] == ["up"]

    wait_for("Prometheus's target for the API was not up", target_up, timeout=60)
    query = 'sum(model_server_http_requests_total{endpoint="/predict",status="200"})'

    def counted():
        result = requests.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=5)
        series = result.json()["data"]["result"]
        return series and float(series[0]["value"][1]) == PREDICTIONS

    # Prometheus scrapes every 15 s: the count appears after the next scrape.
    wait_for(f"Prometheus did not count the {PREDICTIONS} predictions", counted, timeout=60)
