"""Fixtures for tests against a real Gunicorn."""

import shutil

import pytest

from tests.integration.server import GunicornServer, ServerError


def start(model_dir, tmp_path_factory, workers: int = 2, **env) -> GunicornServer:
    """Start Gunicorn and wait until every worker is ready, or fail the test with its log."""
    log = tmp_path_factory.mktemp("gunicorn") / "server.log"
    gunicorn = GunicornServer(model_dir, log, workers, **env)
    try:
        gunicorn.wait_until_all_workers_ready(gunicorn.workers)
    except ServerError as error:
        gunicorn.stop()
        pytest.fail(str(error))
    return gunicorn


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """A two-worker Gunicorn serving the session model, ready to answer."""
    gunicorn = start(model_dir, tmp_path_factory)
    yield gunicorn
    gunicorn.stop()


@pytest.fixture
def store(model_dir, tmp_path):
    """A model store of our own holding version 1 of the session model."""
    path = tmp_path / "linear"
    shutil.copytree(model_dir / "1", path / "1")
    return path


@pytest.fixture
def make_server(tmp_path_factory):
    """Start Gunicorns with given settings; all are stopped after the test."""
    servers = []

    def make(store, workers: int = 2, **env):
        servers.append(start(store, tmp_path_factory, workers, **env))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def multi_server(multi_model_dir, tmp_path_factory):
    """A two-worker Gunicorn serving the two-input, two-output test model."""
    gunicorn = start(multi_model_dir, tmp_path_factory)
    yield gunicorn
    gunicorn.stop()


@pytest.fixture(scope="module")
def typed_server(zoo, tmp_path_factory):
    """A two-worker Gunicorn serving the zoo's tabular model: float32 age, int64 country code."""
    gunicorn = start(zoo["tabular"].model_dir, tmp_path_factory)
    yield gunicorn
    gunicorn.stop()
