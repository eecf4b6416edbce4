"""From training to serving through a real MLflow tracking server and model registry.

Starts ``mlflow server`` (SQLite backend, artifacts served by the tracking
server; installed in ``.venv-mlflow`` by ``make test``) on a free 127.0.0.1
port, trains and registers versions with ``python -m training --register``,
and serves ``models:/linear@production`` from a real Gunicorn. Run alone with
``.venv/bin/pytest tests/integration/test_registry.py``.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from tests.integration.clients import RequestStream, served_versions, wait_for
from tests.integration.server import ROOT, GunicornServer, free_port

MLFLOW = ROOT / ".venv-mlflow" / "bin" / "mlflow"


class MlflowServer:
    """``mlflow server`` in a process group of its own, stopped (by group) at the end."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(directory / "mlflow.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                str(MLFLOW),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                f"sqlite:///{directory}/mlflow.db",
                "--artifacts-destination",
                str(directory / "artifacts"),
                "--serve-artifacts",
                "--workers",
                "1",
            ],
            cwd=directory,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self.healthy, timeout=90, interval=0.5)

    def healthy(self) -> bool:
        assert self.process.poll() is None, (Path(self.log.name).read_text())[-2000:]
        try:
            return requests.get(f"{self.url}/health", timeout=1).ok
        except requests.RequestException:
            return False

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # Its job runners outlive the server on SIGTERM: the whole group goes.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


@pytest.fixture
def mlflow_server(tmp_path):
    if not MLFLOW.exists():
        pytest.fail(f"{MLFLOW} missing: `make test` installs the MLflow server")
    server = MlflowServer(tmp_path)
    yield server
    server.stop()


def train_and_register(mlflow_server, store: Path, alias: str | None = "production"):
    """The real CLI: train a version into ``store``, log it and register it."""
    command = [sys.executable, "-m", "training", "--output-dir", str(store), "--epochs", "5"]
    command += ["--register", *(["--alias", alias] if alias else [])]
    environ = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url}
    result = subprocess.run(
        command, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def serve_from_registry(tmp_path, mlflow_server, uri="models:/linear@production", wait=True):
    server = GunicornServer(
        tmp_path / "unused-store",
        tmp_path / f"server-{time.monotonic_ns()}.log",
        MODEL_URI=uri,
        MLFLOW_TRACKING_URI=mlflow_server.url,
        MODEL_CACHE_DIR=tmp_path / "cache",
        MODEL_LOAD_TIMEOUT=30,
    )
    if wait:
        server.wait_until_all_workers_ready(2)
    return server


def test_promote_by_moving_the_alias_and_reloading_then_survive_the_registry_going_away(
    tmp_path, mlflow_server
):
    store = tmp_path / "models"
    output = train_and_register(mlflow_server, store)
    assert "registered linear version 1" in output
    client = MlflowClient(tracking_uri=mlflow_server.url)
    run = client.get_run(client.get_model_version("linear", "1").run_id)
    assert run.data.tags["git_commit"] and run.data.params["epochs"] == "5"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 5
    server = serve_from_registry(tmp_path, mlflow_server)
    try:
        model = requests.get(f"{server.url}/model", timeout=5).json()
        assert model["version"] == "1" and model["registry"]["alias"] == "production"
        assert model["registry"]["run_id"] == run.info.run_id
        assert model["registry"]["served_from"] == "registry"
        # Promote: a second version takes the alias; a reload moves every worker to it.
        train_and_register(mlflow_server, store)
        with RequestStream(server.url) as stream:
            wait_for(lambda: len(stream.versions) > 20)
            server.process.send_signal(signal.SIGHUP)
            wait_for(lambda: served_versions(server.url) == {"2"})
            count = len(stream.versions)
            wait_for(lambda: len(stream.versions) > count + 20)
        assert stream.failures == [] and stream.versions[0] == "1" and stream.versions[-1] == "2"
        # Roll back: the alias moves back, a reload follows it.
        client.set_registered_model_alias("linear", "production", "1")
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: served_versions(server.url) == {"1"})
        # The registry goes away: a reload keeps serving and says why.
        mlflow_server.stop()
        with RequestStream(server.url) as stream:
            server.process.send_signal(signal.SIGHUP)
            wait_for(lambda: "the registry cannot be reached" in server.output(), timeout=60)
            time.sleep(1)
        assert stream.failures == [] and set(stream.versions) == {"1"}
    finally:
        server.stop()
    # A start with the registry still away serves the copy the alias last resolved to.
    restarted = serve_from_registry(tmp_path, mlflow_server)
    try:
        model = requests.get(f"{restarted.url}/model", timeout=5).json()
        assert model["version"] == "1"
        assert model["registry"]["served_from"].startswith("cache (registry unreachable")
        assert "from the cache" in restarted.output()
    finally:
        restarted.stop()


def refused_start(tmp_path, mlflow_server, uri) -> str:
    server = serve_from_registry(tmp_path, mlflow_server, uri, wait=False)
    code = server.process.wait(timeout=120)
    server.stop()
    assert code != 0
    (line,) = [line for line in server.output().splitlines() if "no servable model" in line]
    assert "Traceback" not in server.output()
    return line


@pytest.mark.parametrize(
    "uri, message",
    [
        ("models:/nope@production", "nope"),
        ("models:/linear@staging", "staging"),
        ("models:/linear/99", "99"),
    ],
    ids=["unknown-model", "unknown-alias", "unknown-version"],
)
def test_a_model_uri_the_registry_does_not_know_stops_the_start_with_one_line(
    tmp_path, mlflow_server, uri, message
):
    train_and_register(mlflow_server, tmp_path / "models")
    line = refused_start(tmp_path, mlflow_server, uri)
    assert f"MODEL_URI {uri}" in line and message in line


def test_a_registered_version_that_is_not_a_servable_model_stops_the_start(tmp_path, mlflow_server):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"not a model")
    client = MlflowClient(tracking_uri=mlflow_server.url)
    run = client.create_run(client.create_experiment("broken"))
    client.log_artifacts(run.info.run_id, str(broken), artifact_path="model")
    client.create_registered_model("broken")
    source = f"runs:/{run.info.run_id}/model"
    version = client.create_model_version("broken", source, run_id=run.info.run_id)
    client.set_registered_model_alias("broken", "production", version.version)
    line = refused_start(tmp_path, mlflow_server, "models:/broken@production")
    assert "cannot load model" in line
