"""Run a real Gunicorn from gunicorn.conf.py on a free 127.0.0.1 port (tests and benchmarks)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def memory_mib(pid: int, field: str = "Rss") -> float:
    """A process's Rss, or Pss (its share of the pages it maps), in MiB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} line for process {pid}")


class ServerError(RuntimeError):
    """Gunicorn exited or never became ready; the message carries its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """A test's helper server (MLflow, an S3 API) on a free 127.0.0.1 port, in a process
    group of its own, stopped (by group) at the end."""

    def __init__(self, command: list[str], log_path: Path, health_path: str, cwd=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.health_url = f"{self.url}{health_path}"
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [part.format(port=self.port) for part in command],
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while not self.healthy():
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"{command[0]} not ready after 90 s")
            time.sleep(0.2)

    def healthy(self) -> bool:
        assert self.process.poll() is None, Path(self.log.name).read_text()[-2000:]
        try:
            return requests.get(self.health_url, timeout=1).ok
        except requests.RequestException:
            return False

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Job runners may outlive a server on SIGTERM: the whole group goes.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.log.close()


class GunicornServer:
    """One Gunicorn master and its workers, started and stopped (by pid) by us."""

    def __init__(self, model_dir: Path | None, log_path: Path, workers: int = 2, **env):
        """``model_dir`` None: the server's own source, given in ``env`` (MODEL_REPOSITORY)."""
        self.workers = workers
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log_path
        self.metrics_dir = log_path.parent / "metrics"
        # MODEL_DIR from the caller only, never from the environment the tests run in.
        source = {"MODEL_DIR": str(model_dir)} if model_dir is not None else {}
        environ = {
            **{key: value for key, value in os.environ.items() if key != "MODEL_DIR"},
            **source,
            "WEB_CONCURRENCY": str(workers),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "GRPC_PORT": str(self.grpc_port),
            # The tests tell workers apart by this header.
            "EXPOSE_WORKER_PID": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            # Its own, never `make serve`'s (the Makefile exports that one to `make test`).
            "GUNICORN_PIDFILE": str(log_path.parent / "gunicorn.pid"),
            **{key: str(value) for key, value in env.items()},
        }
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.serve"],
            cwd=ROOT,
            env=environ,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_until_ready(self, timeout: float = 60) -> float:
        """Poll /health/ready until it answers 200; return seconds since launch."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"gunicorn exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                if requests.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return time.monotonic() - self.started
            except (requests.ConnectionError, requests.Timeout):  # Workers still starting.
                pass
            time.sleep(0.05)
        raise ServerError(f"gunicorn not ready after {timeout} s:\n{self.output()}")

    def wait_until_all_workers_ready(self, workers: int, timeout: float = 60) -> float:
        """Poll /health/ready until every worker has answered 200; seconds since launch."""
        seen, deadline = set(), time.monotonic() + timeout
        self.wait_until_ready(timeout)
        while len(seen) < workers:
            if time.monotonic() > deadline:
                raise ServerError(f"{len(seen)} of {workers} workers ready:\n{self.output()}")
            response = requests.get(f"{self.url}/health/ready", timeout=5)
            if response.status_code == 200:
                seen.add(response.headers["X-Worker-PID"])
        return time.monotonic() - self.started

    def worker_pids(self) -> list[int]:
        """The master's live child processes."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the master and wait for it to exit; SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode
