"""From training to serving through a real MLflow tracking server and model registry.

Starts ``mlflow server`` (SQLite backend, artifacts served by the tracking
server; installed in ``.venv-mlflow`` by ``make test``) on a free 127.0.0.1
port, trains and registers versions with ``python -m training --register``,
and serves ``models:/linear@production`` from a real Gunicorn. Run alone with
``.venv/bin/pytest tests/integration/test_registry.py``.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import requests
from mlflow import MlflowClient

from tests.conftest import multi_tensor_model
from tests.integration.clients import RequestStream, served_versions, wait_for
from tests.integration.server import ROOT, GunicornServer, ServiceProcess
from training.train import train

MLFLOW = ROOT / ".venv-mlflow" / "bin" / "mlflow"


class MlflowServer(ServiceProcess):
    """``mlflow server`` with a SQLite store and the artifacts it serves itself."""

    def __init__(self, directory: Path):
        command = [
            str(MLFLOW),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--backend-store-uri",
            f"sqlite:///{directory}/mlflow.db",
            "--artifacts-destination",
            str(directory / "artifacts"),
            "--serve-artifacts",
            "--workers",
            "1",
        ]
        super().__init__(command, directory / "mlflow.log", "/health", cwd=directory)


@pytest.fixture
def mlflow_server(tmp_path):
    if not MLFLOW.exists():
        pytest.fail(f"{MLFLOW} missing: `make test` installs the MLflow server")
    server = MlflowServer(tmp_path)
    yield server
    server.stop()


def train_and_register(mlflow_server, store: Path, alias: str | None = "production", epochs=5):
    """The real CLI: train a version into ``store``, log it and register it."""
    command = [
        sys.executable,
        "-m",
        "training",
        "--output-dir",
        str(store),
        "--epochs",
        str(epochs),
    ]
    command += ["--register", *(["--alias", alias] if alias else [])]
    environ = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url}
    result = subprocess.run(
        command, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def serve_from_registry(tmp_path, mlflow_server, uri="models:/linear@production", wait=True, **env):
    settings = {
        "MODEL_URI": uri,
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MODEL_CACHE_DIR": tmp_path / "cache",
        "MODEL_LOAD_TIMEOUT": 30,
        **env,
    }
    server = GunicornServer(
        tmp_path / "unused-store", tmp_path / f"server-{time.monotonic_ns()}.log", **settings
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
    assert "version 1 has no compiled artifact" in line
    assert "`python -m training compile models:/broken/1`" in line


def served_model(server) -> dict:
    return requests.get(f"{server.url}/model", timeout=5).json()


def test_a_model_registered_again_under_the_same_version_is_never_served_from_a_stale_cache(
    tmp_path, mlflow_server
):
    store = tmp_path / "models"
    train_and_register(mlflow_server, store, alias=None, epochs=5)
    first = serve_from_registry(tmp_path, mlflow_server, "models:/linear/1")
    old = served_model(first)
    first.stop()
    client = MlflowClient(tracking_uri=mlflow_server.url)
    client.delete_registered_model("linear")
    train_and_register(mlflow_server, store, alias=None, epochs=6)  # Version 1 again.
    second = serve_from_registry(tmp_path, mlflow_server, "models:/linear/1")
    try:
        model = served_model(second)
        assert model["registry"]["run_id"] == client.get_model_version("linear", "1").run_id
        assert model["registry"]["run_id"] != old["registry"]["run_id"]
        assert model["artifact"]["sha256"] != old["artifact"]["sha256"]
        assert model["metadata"]["training"]["epochs"] == 6
    finally:
        second.stop()


def test_a_version_serves_exactly_the_folder_its_source_names(tmp_path, mlflow_server):
    store = tmp_path / "models"
    for epochs in (5, 6):
        train("linear", store, epochs=epochs, seed=1)
    client = MlflowClient(tracking_uri=mlflow_server.url)
    run = client.create_run(client.create_experiment("two-folders")).info.run_id
    client.log_artifacts(run, str(store / "linear" / "1"), artifact_path="model")
    client.log_artifacts(run, str(store / "linear" / "2"), artifact_path="model-v2")
    client.create_registered_model("two")
    client.create_model_version("two", f"runs:/{run}/model-v2", run_id=run)
    server = serve_from_registry(tmp_path, mlflow_server, "models:/two/1")
    try:
        model = served_model(server)
        assert model["metadata"]["training"]["epochs"] == 6
        assert model["registry"]["source"].endswith("model-v2")
    finally:
        server.stop()


def test_credentials_in_the_tracking_uri_are_never_shown_or_stored(tmp_path, mlflow_server):
    train_and_register(mlflow_server, tmp_path / "models")
    secret = mlflow_server.url.replace("http://", "http://alice:s3cr3t-pw@")
    server = serve_from_registry(tmp_path, mlflow_server, MLFLOW_TRACKING_URI=secret)
    try:
        text = requests.get(f"{server.url}/model", timeout=5).text
        assert served_model(server)["registry"]["tracking_uri"] == mlflow_server.url
    finally:
        server.stop()
    stored = [path.read_text() for path in (tmp_path / "cache").rglob("*.json")]
    for where in (text, server.output(), *stored):
        assert "s3cr3t" not in where and "alice" not in where


class BadRegistry:
    """A tracking server that answers garbage: an HTML page with 200, or a byte every 2 s."""

    def __init__(self, mode: str):
        self.mode, self.stop = mode, threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:  # Closed.
                return
            threading.Thread(target=self.answer, args=(connection,), daemon=True).start()

    def answer(self, connection):
        with connection:
            connection.recv(65536)
            if self.mode == "html":
                page = b"<html><body>Sign in</body></html>"
                head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(page)}"
                connection.sendall(head.encode() + b"\r\n\r\n" + page)
                return
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
                if self.stop.wait(2):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self):
        self.stop.set()
        self.listener.close()


@pytest.mark.parametrize("mode", ["html", "trickle"])
def test_a_garbled_or_trickling_registry_at_start_falls_back_to_the_cached_copy(
    tmp_path, mlflow_server, mode
):
    train_and_register(mlflow_server, tmp_path / "models")
    serve_from_registry(tmp_path, mlflow_server).stop()  # Fills the cache.
    registry = BadRegistry(mode)
    server = serve_from_registry(
        tmp_path, mlflow_server, MLFLOW_TRACKING_URI=registry.url, MODEL_REGISTRY_TIMEOUT=3
    )
    try:
        model = served_model(server)
        assert model["version"] == "1"
        assert model["registry"]["served_from"].startswith("cache (registry unreachable")
        assert "Traceback" not in server.output()
    finally:
        server.stop()
        registry.close()


def test_the_cache_keeps_what_is_served_and_what_a_rollback_needs(tmp_path, mlflow_server):
    store = tmp_path / "models"
    train_and_register(mlflow_server, store)
    server = serve_from_registry(tmp_path, mlflow_server)
    try:
        for version in (2, 3, 4):
            train_and_register(mlflow_server, store)  # Moves the alias.
            server.process.send_signal(signal.SIGHUP)
            wait_for(lambda v=version: served_versions(server.url) == {str(v)})
    finally:
        server.stop()
    copies = sorted(
        p.name.split("-")[0] for p in (tmp_path / "cache" / "linear").iterdir() if p.is_dir()
    )
    assert copies == ["3", "4"]


def compile_and_register(mlflow_server, uri: str) -> None:
    """``python -m training compile URI``, which registers the compiled model as version 2."""
    result = subprocess.run(
        [sys.executable, "-m", "training", "compile", uri],
        cwd=ROOT,
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "registered it as version 2" in result.stdout


def test_a_notebook_logged_keras_model_is_compiled_by_one_command_then_served(
    tmp_path, mlflow_server
):
    import mlflow

    model = multi_tensor_model()
    mlflow.set_tracking_uri(mlflow_server.url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mlflow.start_run():
                mlflow.keras.log_model(
                    model, name="model", registered_model_name="notebook", pip_requirements=[]
                )
    finally:
        mlflow.set_tracking_uri(None)
    line = refused_start(tmp_path, mlflow_server, "models:/notebook/1")
    assert "`python -m training compile models:/notebook/1`" in line
    compile_and_register(mlflow_server, "models:/notebook/1")
    server = serve_from_registry(tmp_path, mlflow_server, "models:/notebook/2")
    try:
        rows = [{"features": [1.0, 2.0, 3.0], "grid": [[1.0, 0.0], [0.0, 1.0]]}]
        answer = requests.post(f"{server.url}/predict", json={"instances": rows}, timeout=10)
        expected = model([np.array([[1.0, 2.0, 3.0]]), np.array([[[1.0, 0.0], [0.0, 1.0]]])])
        np.testing.assert_allclose(
            answer.json()["predictions"][0]["scores"], np.asarray(expected[0])[0], rtol=1e-4
        )
    finally:
        server.stop()


def test_a_tensorflow_flavour_saved_model_is_compiled_by_one_command_then_served(
    tmp_path, mlflow_server
):
    import mlflow
    import tensorflow as tf

    class Products(tf.Module):
        def __init__(self):
            super().__init__()
            self.weights = tf.Variable(np.linspace(0.5, 2.0, 5, dtype=np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 5], tf.float32, name="x")])
        def serve(self, x):
            return {"product": tf.math.cumprod(tf.sigmoid(x * self.weights), axis=1)}

    module = Products()
    mlflow.set_tracking_uri(mlflow_server.url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mlflow.start_run():
                mlflow.tensorflow.log_model(
                    module,
                    name="model",
                    registered_model_name="products",
                    pip_requirements=[],
                    saved_model_kwargs={"signatures": {"serving_default": module.serve}},
                )
    finally:
        mlflow.set_tracking_uri(None)
    compile_and_register(mlflow_server, "models:/products/1")
    server = serve_from_registry(tmp_path, mlflow_server, "models:/products/2")
    try:
        rows = np.array([[0.1, -2.0, 3.0, 0.5, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]], np.float32)
        body = {"instances": rows.tolist()}
        answer = requests.post(f"{server.url}/predict", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        expected = module.serve(tf.constant(rows))["product"].numpy()
        np.testing.assert_allclose(answer.json()["predictions"], expected, rtol=1e-5)
        model = requests.get(f"{server.url}/v2/models/products", timeout=10).json()
        assert model["platform"] == "tensorflow_savedmodel"
    finally:
        server.stop()


def test_a_repository_serves_registry_models_beside_its_directories(
    tmp_path, mlflow_server, model_dir
):
    train_and_register(mlflow_server, tmp_path / "trained")
    root = tmp_path / "repository"
    shutil.copytree(model_dir, root / "local")
    (root / "registry.json").write_text(
        json.dumps({"churn": "models:/linear@production", "missing": "models:/nothing/1"})
    )
    environment = {
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MODEL_CACHE_DIR": tmp_path / "cache",
        "MODEL_LOAD_TIMEOUT": 30,
    }
    log = tmp_path / "server.log"
    server = GunicornServer(None, log, MODEL_REPOSITORY=root, **environment)
    try:
        server.wait_until_all_workers_ready(2)
        listed = requests.post(f"{server.url}/v2/repository/index", timeout=5).json()
        states = {model["name"]: model["state"] for model in listed}
        assert states == {"churn": "READY", "local": "READY", "missing": "UNAVAILABLE"}
        churn = requests.get(f"{server.url}/model/churn", timeout=5).json()
        assert churn["name"] == "churn" and churn["registry"]["alias"] == "production"
        for name in ("churn", "local"):
            answer = requests.post(
                f"{server.url}/predict/{name}", json={"instances": [1.0]}, timeout=5
            )
            assert answer.status_code == 200 and answer.json()["model"]["name"] == name
    finally:
        server.stop()
    # Explicit control loads a registry model by its name in registry.json.
    explicit = GunicornServer(
        None,
        tmp_path / "explicit.log",
        MODEL_REPOSITORY=root,
        MODEL_CONTROL_MODE="explicit",
        MODEL_LOAD="local",
        **environment,
    )
    try:
        explicit.wait_until_all_workers_ready(2)
        url = f"{explicit.url}/v2/repository/models/churn/load"
        assert requests.post(url, timeout=60).status_code == 200
        assert requests.get(f"{explicit.url}/v2/models/churn/ready", timeout=5).ok
    finally:
        explicit.stop()
