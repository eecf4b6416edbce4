"""Serving from S3 (``MODEL_DIR=s3://bucket/prefix``) against a real S3 API: moto's server,
installed in ``.venv-s3`` by ``make test``, on a free 127.0.0.1 port, with the real Gunicorn."""

import signal
import time
from pathlib import Path

import boto3
import pytest
import requests

from tests.integration.clients import served_versions, wait_for
from tests.integration.server import ROOT, GunicornServer, ServiceProcess
from training.train import train

MOTO = ROOT / ".venv-s3" / "bin" / "moto_server"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server(ServiceProcess):
    """moto's S3 server, in memory: the bucket ``models`` is the tests'."""

    def __init__(self, directory: Path):
        command = [str(MOTO), "-H", "127.0.0.1", "-p", "{port}"]
        super().__init__(command, directory / "moto.log", "/moto-api/")

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def upload(self, version_dir: Path, prefix: str, version: int) -> None:
        """A version directory's files as ``<prefix>/<version>/...`` in the bucket ``models``,
        as ``aws s3 cp --recursive`` would put them."""
        client = self.client()
        for path in sorted(version_dir.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{version}/{path.relative_to(version_dir).as_posix()}"
                client.upload_file(str(path), "models", key)

    def delete(self, prefix: str) -> None:
        client = self.client()
        for item in client.list_objects_v2(Bucket="models", Prefix=prefix).get("Contents", ()):
            client.delete_object(Bucket="models", Key=item["Key"])


@pytest.fixture
def s3(tmp_path):
    if not MOTO.exists():
        pytest.fail(f"{MOTO} missing: `make test` installs moto's S3 server")
    server = S3Server(tmp_path)
    server.client().create_bucket(Bucket="models")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    """A second trained version of the linear model, with other weights."""
    root = tmp_path_factory.mktemp("other")
    train("linear", root, epochs=3, seed=11)
    return root / "linear"


def serve_from_s3(s3, tmp_path, uri="s3://models/team/linear", wait=True, **env):
    settings = {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": s3.url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_REGISTRY_TIMEOUT": 10,
        "MODEL_LOAD_TIMEOUT": 30,
        **env,
    }
    log = tmp_path / f"server-{time.monotonic_ns()}.log"
    server = GunicornServer(uri, log, **settings)
    if wait:
        server.wait_until_all_workers_ready(2)
    return server


def predict(server, x: float) -> float:
    answer = requests.post(f"{server.url}/predict", json={"instances": [x]}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"][0]


def local_answer(model_dir: Path, tmp_path, x: float) -> float:
    server = GunicornServer(model_dir, tmp_path / f"local-{time.monotonic_ns()}.log", workers=1)
    try:
        server.wait_until_all_workers_ready(1)
        return predict(server, x)
    finally:
        server.stop()


def test_versions_in_s3_are_served_reloaded_and_never_served_from_a_stale_copy(
    s3, tmp_path, model_dir, other_model_dir
):
    first = local_answer(model_dir, tmp_path, 2.0)
    other = local_answer(other_model_dir, tmp_path, 2.0)
    assert first != other
    s3.upload(model_dir / "1", "team/linear", 1)
    server = serve_from_s3(s3, tmp_path)
    try:
        model = requests.get(f"{server.url}/model", timeout=5).json()
        assert model["name"] == "linear" and model["version"] == "1"
        assert model["store"] == {"uri": "s3://models/team/linear", "served_from": "store"}
        assert predict(server, 2.0) == first
        # A new version in the bucket: a reload serves it.
        s3.upload(other_model_dir / "1", "team/linear", 2)
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: served_versions(server.url) == {"2"})
        assert predict(server, 2.0) == other
        # Version 2's objects replaced in place: the next reload never serves the old copy.
        s3.upload(model_dir / "1", "team/linear", 2)
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: predict(server, 2.0) == first)
        # Version 2 deleted from the bucket: gone from the mirror, version 1 serves.
        s3.delete("team/linear/2/")
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: served_versions(server.url) == {"1"})
        mirror = tmp_path / "cache" / "s3" / "models" / "team" / "linear"
        assert sorted(path.name for path in mirror.iterdir()) == ["1"]
        # The store goes away: a reload keeps serving and says why.
        s3.stop()
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "the object store cannot be reached" in server.output(), timeout=60)
        assert served_versions(server.url) == {"1"} and predict(server, 2.0) == first
    finally:
        server.stop()
    assert "Traceback" not in server.output()
    # A start with the store still away serves the mirror as last synced, and says so.
    restarted = serve_from_s3(s3, tmp_path, MODEL_REGISTRY_TIMEOUT=3)
    try:
        model = requests.get(f"{restarted.url}/model", timeout=5).json()
        assert model["version"] == "1"
        assert model["store"]["served_from"].startswith("cache (store unreachable")
        assert "from the cache" in restarted.output()
        assert predict(restarted, 2.0) == first
    finally:
        restarted.stop()


def refused_start(s3, tmp_path, uri) -> str:
    server = serve_from_s3(s3, tmp_path, uri, wait=False)
    code = server.process.wait(timeout=120)
    server.stop()
    assert code != 0 and "Traceback" not in server.output()
    (line,) = [line for line in server.output().splitlines() if "no servable model" in line]
    return line


def test_a_bucket_or_prefix_without_versions_stops_the_start_with_one_line(s3, tmp_path):
    assert "NoSuchBucket" in refused_start(s3, tmp_path, "s3://nope/linear")
    assert "no model versions" in refused_start(s3, tmp_path, "s3://models/empty")


def test_an_object_key_that_would_leave_the_mirror_is_refused(s3, tmp_path, model_dir):
    s3.upload(model_dir / "1", "linear", 1)
    s3.client().put_object(Bucket="models", Key="linear/1/../../../escaped", Body=b"x")
    assert "not a safe path" in refused_start(s3, tmp_path, "s3://models/linear")
    assert not list(tmp_path.rglob("escaped"))


def test_a_damaged_version_in_s3_is_skipped_for_the_one_before(s3, tmp_path, model_dir):
    s3.upload(model_dir / "1", "linear", 1)
    s3.upload(model_dir / "1", "linear", 2)
    s3.client().put_object(Bucket="models", Key="linear/2/model.tflite", Body=b"not a model")
    server = serve_from_s3(s3, tmp_path, "s3://models/linear")
    try:
        model = requests.get(f"{server.url}/model", timeout=5).json()
        assert model["version"] == "1"
        (skipped,) = model["skipped_versions"]
        assert "2" in skipped and "SHA-256" in skipped
    finally:
        server.stop()


def repository_versions(server, name: str) -> set:
    """The versions of model ``name`` that fresh connections are answered with."""
    url = f"{server.url}/v2/models/{name}"
    return {requests.get(url, timeout=5).json()["versions"][0] for _ in range(20)}


def predict_named(server, name: str, x: float) -> float:
    url = f"{server.url}/predict/{name}"
    answer = requests.post(url, json={"instances": [x]}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"][0]


def test_a_repository_in_s3_is_served_reloaded_and_falls_back_to_its_mirror(
    s3, tmp_path, model_dir, other_model_dir
):
    first = local_answer(model_dir, tmp_path, 2.0)
    other = local_answer(other_model_dir, tmp_path, 2.0)
    s3.upload(model_dir / "1", "repo/linear", 1)
    s3.upload(other_model_dir / "1", "repo/other", 1)
    server = serve_from_s3(s3, tmp_path, None, MODEL_REPOSITORY="s3://models/repo")
    try:
        listed = requests.post(f"{server.url}/v2/repository/index", timeout=5).json()
        assert [(model["name"], model["state"]) for model in listed] == [
            ("linear", "READY"),
            ("other", "READY"),
        ]
        model = requests.get(f"{server.url}/model/linear", timeout=5).json()
        assert model["store"] == {"uri": "s3://models/repo/linear", "served_from": "store"}
        assert predict_named(server, "linear", 2.0) == first
        assert predict_named(server, "other", 2.0) == other
        # A new version of one model: a reload serves it.
        s3.upload(other_model_dir / "1", "repo/linear", 2)
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: repository_versions(server, "linear") == {"2"})
        assert predict_named(server, "linear", 2.0) == other
        # Its objects replaced in place: never served from the old copy.
        s3.upload(model_dir / "1", "repo/linear", 2)
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: predict_named(server, "linear", 2.0) == first)
        # A model deleted from the bucket is no longer served.
        s3.delete("repo/other/")
        server.process.send_signal(signal.SIGHUP)
        gone = f"{server.url}/v2/models/other"
        wait_for(lambda: requests.get(gone, timeout=5).status_code == 404)
        # The store goes away: a reload keeps serving and says why.
        s3.stop()
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "the object store cannot be reached" in server.output(), timeout=60)
        assert predict_named(server, "linear", 2.0) == first
    finally:
        server.stop()
    assert "Traceback" not in server.output()
    # A start with the store away serves the mirror as last synced, and says so.
    restarted = serve_from_s3(
        s3, tmp_path, None, MODEL_REPOSITORY="s3://models/repo", MODEL_REGISTRY_TIMEOUT=3
    )
    try:
        model = requests.get(f"{restarted.url}/model/linear", timeout=5).json()
        assert model["version"] == "2"
        assert model["store"]["served_from"].startswith("cache (store unreachable")
        assert predict_named(restarted, "linear", 2.0) == first
    finally:
        restarted.stop()


def test_one_bad_model_in_an_s3_repository_is_unavailable_with_why_and_the_others_serve(
    s3, tmp_path, model_dir
):
    answer = local_answer(model_dir, tmp_path, 2.0)
    for name in ("linear", "escapes", "clashes", "huge"):
        s3.upload(model_dir / "1", f"repo/{name}", 1)
    client = s3.client()
    client.put_object(Bucket="models", Key="repo/escapes/1/../../../escaped", Body=b"x")
    # A key that is a file where another key needs it to be a directory.
    client.put_object(Bucket="models", Key="repo/clashes/1/extra", Body=b"x")
    client.put_object(Bucket="models", Key="repo/clashes/1/extra/inner", Body=b"y")
    # A stray object that makes its version larger than MAX_MODEL_BYTES: never downloaded.
    client.put_object(Bucket="models", Key="repo/huge/1/stray.bin", Body=b"z" * 300_000)
    server = serve_from_s3(
        s3, tmp_path, None, MODEL_REPOSITORY="s3://models/repo", MAX_MODEL_BYTES=250_000
    )
    try:
        listed = requests.post(f"{server.url}/v2/repository/index", timeout=5).json()
        states = {model["name"]: model for model in listed}
        assert states["linear"]["state"] == "READY"
        assert predict_named(server, "linear", 2.0) == answer
        reasons = {
            "escapes": "is not a safe path",
            "clashes": "extra",
            "huge": "over MAX_MODEL_BYTES=250,000; not downloaded",
        }
        for name, reason in reasons.items():
            assert states[name]["state"] == "UNAVAILABLE"
            assert reason in states[name]["reason"], states[name]
            body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
            url = f"{server.url}/v2/models/{name}/infer"
            refused = requests.post(url, json=body, timeout=5)
            assert refused.status_code == 400 and "unavailable" in refused.text
    finally:
        server.stop()
    assert "Traceback" not in server.output()
    assert not list(tmp_path.rglob("escaped")) and not list(tmp_path.rglob("stray.bin"))


def test_an_explicit_load_fetches_a_model_new_in_s3(s3, tmp_path, model_dir):
    s3.upload(model_dir / "1", "repo/linear", 1)
    server = serve_from_s3(
        s3,
        tmp_path,
        None,
        MODEL_REPOSITORY="s3://models/repo",
        MODEL_CONTROL_MODE="explicit",
    )
    try:
        missing = requests.post(f"{server.url}/v2/repository/models/fresh/load", timeout=60)
        assert missing.status_code == 404
        s3.upload(model_dir / "1", "repo/fresh", 1)
        loaded = requests.post(f"{server.url}/v2/repository/models/fresh/load", timeout=60)
        assert loaded.status_code == 200, loaded.text
        assert predict_named(server, "fresh", 2.0) == predict_named(server, "linear", 2.0)
    finally:
        server.stop()


def index_entries(server) -> set[tuple]:
    """The repository index's (name, version) pairs."""
    listed = requests.post(f"{server.url}/v2/repository/index", timeout=5).json()
    return {(model["name"], model.get("version")) for model in listed}


def every_worker_lists(server, expected: set[tuple]) -> bool:
    """Whether fresh connections, enough to reach every worker, all see ``expected``."""
    return all(index_entries(server) == expected for _ in range(20))


def test_an_interval_poll_takes_up_what_changed_in_the_bucket_and_its_version_policy(
    s3, tmp_path, model_dir, other_model_dir
):
    first = local_answer(model_dir, tmp_path, 2.0)
    s3.upload(model_dir / "1", "repo/linear", 1)
    server = serve_from_s3(
        s3, tmp_path, None, MODEL_REPOSITORY="s3://models/repo", MODEL_POLL_SECONDS="1"
    )
    try:
        assert index_entries(server) == {("linear", "1")}
        # A new model and a new version in the bucket: served, unasked.
        s3.upload(model_dir / "1", "repo/fresh", 1)
        s3.upload(other_model_dir / "1", "repo/linear", 2)
        wait_for(lambda: every_worker_lists(server, {("linear", "2"), ("fresh", "1")}))
        # The bucket's version_policy.json: both versions of linear.
        policy = b'{"linear": {"latest": 2}}'
        s3.client().put_object(Bucket="models", Key="repo/version_policy.json", Body=policy)
        both = {("linear", "2"), ("linear", "1"), ("fresh", "1")}
        wait_for(lambda: every_worker_lists(server, both))
        one = f"{server.url}/v1/models/linear/versions/1:predict"
        answer = requests.post(one, json={"instances": [2.0]}, timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [[first]]
        # Gone from the bucket, the policy goes from the mirror too.
        s3.client().delete_object(Bucket="models", Key="repo/version_policy.json")
        wait_for(lambda: every_worker_lists(server, {("linear", "2"), ("fresh", "1")}))
    finally:
        server.stop()
    assert "Traceback" not in server.output()
