"""A real Gunicorn, started from gunicorn.conf.py on a free 127.0.0.1 port."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornServer:
    """One Gunicorn master and its workers, run and stopped by this test session."""

    def __init__(self, model_dir: Path, log_path: Path, workers: int = 2, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        environ = {
            **os.environ,
            "MODEL_DIR": str(model_dir),
            "WEB_CONCURRENCY": str(workers),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            **{key: str(value) for key, value in env.items()},
        }
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=environ,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll /health/ready until a worker answers 200, or fail with the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.output()}")
            try:
                if requests.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        pytest.fail(f"gunicorn not ready after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the master (ours, by pid) and wait for it to exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """A two-worker Gunicorn serving the session model, ready to answer."""
    gunicorn = GunicornServer(model_dir, tmp_path_factory.mktemp("gunicorn") / "server.log")
    gunicorn.wait_until_ready()
    yield gunicorn
    gunicorn.stop()
