"""Fixtures for checking the Docker image as a user would: ``make image-test``.

The image (``IMAGE``, default ``model-server:1.0.0``) must exist: ``make
image-test`` builds it first and runs these with a Docker engine up. Every
container and compose project started here is removed at the end.
"""

import json
import os
import subprocess
import time
import uuid

import pytest
import requests

from tests.integration.server import free_port

IMAGE = os.environ.get("IMAGE", "model-server:1.0.0")


def docker(*args: str, check=True, timeout=120) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


class Container:
    """One ``docker run -d`` of the image, on a free 127.0.0.1 port."""

    def __init__(self, *options: str, env: dict | None = None):
        self.name = f"model-server-test-{uuid.uuid4().hex[:8]}"
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        environment = [f"--env={key}={value}" for key, value in (env or {}).items()]
        self.started = time.monotonic()
        docker(
            "run",
            "-d",
            "--name",
            self.name,
            "-p",
            f"127.0.0.1:{self.port}:8000",
            "-p",
            f"127.0.0.1:{self.grpc_port}:8081",
            *environment,
            *options,
            IMAGE,
        )

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.name))[0]

    def health(self) -> str:
        return self.inspect()["State"].get("Health", {}).get("Status", "none")

    def wait_until_healthy(self, timeout=120) -> float:
        """Seconds from ``docker run`` until Docker's HEALTHCHECK says healthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.inspect()["State"]
            if not state["Running"]:
                pytest.fail(f"container exited {state['ExitCode']}:\n{self.logs()}")
            if state.get("Health", {}).get("Status") == "healthy":
                return time.monotonic() - self.started
            time.sleep(0.2)
        pytest.fail(f"not healthy after {timeout} s:\n{self.logs()}")

    def wait_until_answering(self, timeout=60) -> float:
        """Seconds from ``docker run`` until ``/health/ready`` answers 200 through the port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return time.monotonic() - self.started
            except requests.RequestException:
                pass
            time.sleep(0.05)
        pytest.fail(f"/health/ready not 200 after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return docker("logs", self.name, check=False)

    def remove(self):
        docker("rm", "-f", "-v", self.name, check=False)


@pytest.fixture
def run_container():
    """Start containers of the image; all are removed after the test."""
    containers = []

    def run(*options, env=None):
        containers.append(Container(*options, env=env))
        return containers[-1]

    yield run
    for container in containers:
        container.remove()
