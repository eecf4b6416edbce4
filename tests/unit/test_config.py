"""Configuration from the environment: defaults, types, and failing fast."""

import re
from pathlib import Path

import pytest

from app.config import Config, ConfigError


def test_defaults_serve_out_of_the_box():
    config = Config({})
    assert config.MODEL_DIR == Path("models/linear")
    assert config.MODEL_VERSION is None
    assert config.MAX_BATCH_SIZE == 1000
    assert config.MAX_CONTENT_LENGTH == 1024 * 1024
    assert config.LOG_LEVEL == "INFO"
    assert config.API_TOKEN is None
    assert config.MODEL_LOAD_TIMEOUT == 60
    assert config.GUNICORN_BIND == "127.0.0.1:8000"
    assert config.EXPOSE_WORKER_PID is False
    # Idle and slow clients are bounded out of the box (docs/how-it-works/slow-clients.md).
    assert config.GUNICORN_WORKER_CLASS == "gevent"
    assert (config.GUNICORN_KEEPALIVE, config.BODY_TIMEOUT) == (5, 60)
    assert config.GUNICORN_WORKER_CONNECTIONS == 1000
    assert (config.GRPC_PORT, config.GRPC_BIND) == (8081, "127.0.0.1:8081")


def test_a_model_uri_names_a_registered_model_by_alias_or_version():
    environ = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    by_alias = Config({**environ, "MODEL_URI": "models:/linear@production"}).MODEL_URI
    assert (by_alias.name, by_alias.alias, by_alias.version) == ("linear", "production", None)
    by_version = Config({**environ, "MODEL_URI": "models:/linear/3"}).MODEL_URI
    assert (by_version.name, by_version.alias, by_version.version) == ("linear", None, 3)
    assert Config({}).MODEL_URI is None


def test_values_come_from_the_environment():
    config = Config(
        {"MODEL_DIR": "/m", "MODEL_VERSION": "3", "MAX_BATCH_SIZE": "10", "LOG_LEVEL": "debug"}
    )
    assert (config.MODEL_DIR, config.MODEL_VERSION, config.MAX_BATCH_SIZE) == (Path("/m"), 3, 10)
    assert config.LOG_LEVEL == "DEBUG"


@pytest.mark.parametrize(
    "environ",
    [
        {"MAX_BATCH_SIZE": "lots"},
        {"MAX_BATCH_SIZE": "0"},
        {"MAX_CONTENT_LENGTH": "-1"},
        {"MODEL_VERSION": "latest"},
        {"LOG_LEVEL": "loud"},
        {"LOG_FORMAT": "xml"},
        {"PREDICTION_LOG_SAMPLE_RATE": "2"},
        {"PREDICTION_LOG_SAMPLE_RATE": "nan"},
        {"DRAIN_SECONDS": "-1"},
        {"MODEL_LOAD_TIMEOUT": "0"},
        {"WEB_CONCURRENCY": "0"},
        {"WEB_CONCURRENCY": "abc"},
        {"PORT": "99999"},
        {"GUNICORN_TIMEOUT": "-5"},
        {"GUNICORN_WORKER_CLASS": "eventlet"},
        {"GUNICORN_KEEPALIVE": "0"},
        {"GUNICORN_WORKER_CONNECTIONS": "0"},
        {"BODY_TIMEOUT": "0"},
        {"GRPC_PORT": "70000"},
        {"GRPC_PORT": "grpc"},
        {"PROMETHEUS_MULTIPROC_DIR": ""},
        {"MODEL_DIR": " "},
        {"API_TOKEN": "has space"},
        {"API_TOKEN": "new\nline"},
        {"EXPOSE_WORKER_PID": "maybe"},
        {"MODEL_URI": "linear"},
        {"MODEL_URI": "models:/linear"},
        {"MODEL_URI": "models:/linear@"},
        {"MODEL_URI": "models:/linear@production"},
        {"MODEL_CACHE_DIR": ""},
        {"MODEL_NAME": "a/b"},
        {"MODEL_NAME": ".."},
        {"MODEL_REGISTRY_TIMEOUT": "60"},
        {"MAX_TENSOR_ELEMENTS": "0"},
        {"MAX_MODEL_BYTES": "3000000000"},
        {"LITERT_THREADS": "0"},
    ],
)
def test_nonsense_fails_at_start_naming_the_variable(environ):
    (name,) = environ
    with pytest.raises(ConfigError, match=name):
        Config(environ)


def test_the_model_name_comes_from_model_dir_as_given_unless_set(tmp_path):
    (tmp_path / "releases" / "blue").mkdir(parents=True)
    (tmp_path / "linear").symlink_to(tmp_path / "releases" / "blue")
    assert Config({"MODEL_DIR": str(tmp_path / "linear")}).MODEL_NAME == "linear"
    assert Config({"MODEL_DIR": "/m/x", "MODEL_NAME": "churn"}).MODEL_NAME == "churn"


def test_an_s3_model_dir_is_served_from_its_mirror_in_the_cache():
    config = Config({"MODEL_DIR": "s3://team-models/prod/churn/", "MODEL_CACHE_DIR": "/c"})
    assert str(config.MODEL_STORE) == "s3://team-models/prod/churn"
    assert config.MODEL_DIR == Path("/c/s3/team-models/prod/churn")
    assert config.MODEL_NAME == "churn"
    assert Config({"MODEL_DIR": "s3://team-models"}).MODEL_NAME == "team-models"
    assert Config({"MODEL_DIR": "models/linear"}).MODEL_STORE is None


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix", "s3://bucket/a/../b"])
def test_an_s3_model_dir_without_a_bucket_or_with_dot_dot_fails_at_start(uri):
    with pytest.raises(ConfigError, match="MODEL_DIR"):
        Config({"MODEL_DIR": uri})


def test_the_registry_gets_a_share_of_the_load_timeout_by_default():
    assert Config({}).MODEL_REGISTRY_TIMEOUT == 20
    assert Config({"MODEL_LOAD_TIMEOUT": "4"}).MODEL_REGISTRY_TIMEOUT == 2


class ReadingRecorder(dict):
    """An environment that records every variable asked of it."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def documented_settings() -> dict[str, str]:
    """The configuration page's table: each variable and its default column."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    return dict(re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \|", page, re.M))


def test_the_documented_table_names_every_setting_read_and_no_other():
    # Set, MODEL_URI reads MLFLOW_TRACKING_URI too (and refuses to go on without it).
    with_uri = ReadingRecorder({"MODEL_URI": "models:/linear@production"})
    with pytest.raises(ConfigError):
        Config(with_uri)
    plain = ReadingRecorder()
    Config(plain)
    read = with_uri.read | plain.read
    documented = set(documented_settings())
    assert read - documented == set(), "settings missing from docs/configuration.md"
    assert documented - read == set(), "docs/configuration.md lists settings nothing reads"


def test_the_documented_defaults_are_the_codes():
    config, checked = Config({}), 0
    for name, default in documented_settings().items():
        literal = re.fullmatch(r"\s*`([^`]*)`\s*", default)
        if literal and hasattr(config, name):
            actual, written = str(getattr(config, name)).lower(), literal.group(1).lower()
            if re.fullmatch(r"[\d.]+", written):
                actual, written = float(actual), float(written)
            assert actual == written, f"{name}: the code has {actual}, the docs {written}"
            checked += 1
    assert checked >= 15, f"only {checked} defaults were checked"


def test_a_repository_replaces_the_one_model_settings():
    config = Config({"MODEL_REPOSITORY": "repo", "MAX_MODELS": "5"})
    assert config.MODEL_REPOSITORY == Path("repo") and config.MAX_MODELS == 5
    for clashing in ("MODEL_DIR", "MODEL_URI", "MODEL_NAME", "MODEL_VERSION"):
        with pytest.raises(ConfigError, match=f"unset {clashing}"):
            Config({"MODEL_REPOSITORY": "repo", clashing: "1"})
    from_s3 = Config({"MODEL_REPOSITORY": "s3://bucket/models", "MODEL_CACHE_DIR": "/c"})
    assert str(from_s3.REPOSITORY_STORE) == "s3://bucket/models"
    assert from_s3.MODEL_REPOSITORY == Path("/c/s3/bucket/models")


def test_explicit_control_loads_what_model_load_names():
    explicit = {"MODEL_REPOSITORY": "repo", "MODEL_CONTROL_MODE": "explicit"}
    assert Config(explicit).MODEL_LOAD is None  # All of them.
    assert Config({**explicit, "MODEL_LOAD": " a, b ,"}).MODEL_LOAD == {"a", "b"}
    assert Config({**explicit, "MODEL_LOAD": ""}).MODEL_LOAD == set()
    assert Config({}).MODEL_CONTROL_MODE == "poll"
    with pytest.raises(ConfigError, match="set it"):
        Config({"MODEL_CONTROL_MODE": "explicit"})
    with pytest.raises(ConfigError, match="set MODEL_CONTROL_MODE=explicit"):
        Config({"MODEL_REPOSITORY": "repo", "MODEL_LOAD": "a"})
    with pytest.raises(ConfigError, match="MODEL_CONTROL_MODE='manual' must be one of"):
        Config({**explicit, "MODEL_CONTROL_MODE": "manual"})


def test_the_interval_poll_needs_a_repository_in_poll_mode():
    for root in ("repo", "s3://bucket/models"):
        settings = {"MODEL_REPOSITORY": root, "MODEL_POLL_SECONDS": "30"}
        assert Config(settings).MODEL_POLL_SECONDS == 30
    for settings in (
        {},
        {"MODEL_REPOSITORY": "repo", "MODEL_CONTROL_MODE": "explicit"},
    ):
        with pytest.raises(ConfigError, match="MODEL_POLL_SECONDS polls a MODEL_REPOSITORY"):
            Config({**settings, "MODEL_POLL_SECONDS": "30"})


def test_the_grpc_port_follows_port_unless_set():
    assert Config({}).GRPC_PORT == 8081
    assert Config({"PORT": "9000"}).GRPC_PORT == 9081
    assert Config({"PORT": "9000", "GRPC_PORT": "7000"}).GRPC_PORT == 7000
    with pytest.raises(ConfigError, match="PORT=65500 leaves no port for gRPC"):
        Config({"PORT": "65500"})
