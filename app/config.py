"""Settings, each read once from the environment with a type and a default."""

import os
import re
from importlib.util import find_spec
from pathlib import Path

from app.runtime.artifact import DEFAULT_MAX_MODEL_BYTES
from app.runtime.limits import DEFAULT_BODY_BYTES, DEFAULT_TENSOR_ELEMENTS, Limits
from app.runtime.model_code import CodePolicy


class ConfigError(ValueError):
    """An environment variable holds a value the server cannot use."""


def _number(environ, name: str, default, cast, minimum, maximum=None):
    """``environ[name]`` as ``cast`` (int or float) within bounds, else ``default``."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise ConfigError(f"{name}={raw!r} is not {kind}") from None
    # Written so that NaN, which compares false to everything, is refused too.
    if not (value >= minimum and (maximum is None or value <= maximum)):
        bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name}={value} must be {bounds}")
    return value


def _choice(environ, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = environ.get(name, default).strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def _token(environ, name: str) -> str | None:
    value = environ.get(name) or None
    if value is not None and not all(c.isprintable() and not c.isspace() for c in value):
        raise ConfigError(f"{name} must be printable characters without whitespace")
    return value


def _path(environ, name: str, default: str | None) -> Path | None:
    value = environ.get(name)
    if value is None:
        return Path(default) if default else None
    if not value.strip():
        raise ConfigError(f"{name} is set but empty; unset it or give a path")
    return Path(value)


def _model_name(environ, model_dir: Path, store) -> str:
    from app.runtime.store import model_name

    default = store.name if store else model_name(model_dir)
    name = (environ.get("MODEL_NAME") or "").strip() or default
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", ".."):
        raise ConfigError(f"MODEL_NAME={name!r} must be letters, digits, '.', '_' or '-'")
    return name


def _object_store(environ, name: str = "MODEL_DIR"):
    """MODEL_DIR (or ``name``) as an S3 URI, with boto3 checked; None for a local directory."""
    text = (environ.get(name) or "").strip()
    if not text.startswith("s3://"):
        return None
    from app.runtime.object_store import S3Uri

    try:
        uri = S3Uri.parse(text)
    except ValueError as error:
        raise ConfigError(f"{name}={error}") from None
    if find_spec("boto3") is None:
        raise ConfigError(f"an s3:// {name} needs boto3: pip install 'model-server[s3]'")
    return uri


def _repository(environ) -> Path | None:
    """MODEL_REPOSITORY, checked against the one-model settings it replaces; None when unset."""
    root = _path(environ, "MODEL_REPOSITORY", None)
    if root is None:
        return None
    clashing = [name for name in ONE_MODEL_SETTINGS if (environ.get(name) or "").strip()]
    if clashing:
        raise ConfigError(
            f"MODEL_REPOSITORY serves every model under it by its directory's name: "
            f"unset {', '.join(clashing)}"
        )
    return root


def _model_load(environ, mode: str, root: Path | None) -> set[str] | None:
    """MODEL_LOAD: the models an explicit-mode start loads, by name (None: all of them)."""
    if mode == "explicit" and root is None:
        raise ConfigError("MODEL_CONTROL_MODE=explicit loads models from MODEL_REPOSITORY: set it")
    text = environ.get("MODEL_LOAD")
    if text is None or text.strip() == "*":
        return None
    if mode != "explicit":
        raise ConfigError(
            "MODEL_LOAD names the models an explicit start loads: set MODEL_CONTROL_MODE=explicit"
        )
    return {name.strip() for name in text.split(",") if name.strip()}


def _model_uri(environ):
    """MODEL_URI parsed, with what serving from MLflow needs checked; None when unset."""
    text = (environ.get("MODEL_URI") or "").strip()
    if not text:
        return None
    from app.runtime.registry import ModelUri

    try:
        uri = ModelUri.parse(text)
    except ValueError as error:
        raise ConfigError(f"MODEL_URI={error}") from None
    if not (environ.get("MLFLOW_TRACKING_URI") or "").strip():
        raise ConfigError("MODEL_URI needs MLFLOW_TRACKING_URI, the MLflow tracking server's URL")
    if find_spec("mlflow") is None:
        raise ConfigError("MODEL_URI needs MLflow's client: pip install 'model-server[registry]'")
    return uri


class Config:
    """The server's settings; keys match the environment variables' names.

    Gunicorn's settings are read here too (gunicorn.conf.py uses them), so every
    variable is checked in one place and nonsense stops the start with one line.
    """

    def __init__(self, environ=os.environ):
        self.MODEL_CACHE_DIR = _path(environ, "MODEL_CACHE_DIR", "model-cache")
        # Every model under a root, each named by its directory (app/runtime/store.py).
        self.MODEL_REPOSITORY = _repository(environ)
        # An s3:// repository is served from its mirror in the cache, as an s3:// MODEL_DIR.
        self.REPOSITORY_STORE = _object_store(environ, "MODEL_REPOSITORY")
        if self.REPOSITORY_STORE:
            self.MODEL_REPOSITORY = self.REPOSITORY_STORE.mirror(self.MODEL_CACHE_DIR)
        # poll: the repository's models, read again on a reload; explicit: only those
        # MODEL_LOAD names at start, then load and unload calls (app/core/control.py).
        self.MODEL_CONTROL_MODE = _choice(
            environ, "MODEL_CONTROL_MODE", "poll", ("poll", "explicit")
        )
        self.MODEL_LOAD = _model_load(environ, self.MODEL_CONTROL_MODE, self.MODEL_REPOSITORY)
        # poll: how often a worker looks for a change under the root (0: on SIGHUP only).
        self.MODEL_POLL_SECONDS = _number(
            environ, "MODEL_POLL_SECONDS", 0, int, minimum=0, maximum=86_400
        )
        if self.MODEL_POLL_SECONDS and (
            not self.MODEL_REPOSITORY or self.MODEL_CONTROL_MODE != "poll"
        ):
            raise ConfigError(
                "MODEL_POLL_SECONDS polls a MODEL_REPOSITORY in MODEL_CONTROL_MODE=poll"
            )
        # An s3:// MODEL_DIR is served from its mirror in the cache (app/runtime/object_store.py).
        self.MODEL_STORE = _object_store(environ)
        if self.MODEL_STORE:
            self.MODEL_DIR = self.MODEL_STORE.mirror(self.MODEL_CACHE_DIR)
        else:
            self.MODEL_DIR = _path(environ, "MODEL_DIR", "models/linear")
        # The name the APIs serve; by default MODEL_DIR's last part as given (never a
        # symlink's target, which would rename the model when the link flips).
        self.MODEL_NAME = _model_name(environ, self.MODEL_DIR, self.MODEL_STORE)
        pinned = _number(environ, "MODEL_VERSION", 0, int, minimum=0)
        self.MODEL_VERSION = pinned or None
        self.MODEL_URI = _model_uri(environ)
        self.MAX_MODELS = _number(environ, "MAX_MODELS", 1000, int, minimum=1)
        self.MAX_REPOSITORY_BYTES = _number(
            environ, "MAX_REPOSITORY_BYTES", 8 * 1024**3, int, minimum=1
        )
        self.MODEL_LOAD_TIMEOUT = _number(
            environ, "MODEL_LOAD_TIMEOUT", 60.0, float, minimum=0.1, maximum=3600
        )
        # The registry part of a load must leave time to fall back to the cache.
        self.MODEL_REGISTRY_TIMEOUT = _number(
            environ,
            "MODEL_REGISTRY_TIMEOUT",
            min(20.0, self.MODEL_LOAD_TIMEOUT / 2),
            float,
            minimum=0.1,
            maximum=3600,
        )
        if self.MODEL_REGISTRY_TIMEOUT >= self.MODEL_LOAD_TIMEOUT:
            raise ConfigError(
                f"MODEL_REGISTRY_TIMEOUT={self.MODEL_REGISTRY_TIMEOUT:g} must be less than "
                f"MODEL_LOAD_TIMEOUT={self.MODEL_LOAD_TIMEOUT:g}: the registry part of a load "
                "needs time left to fall back to the cache"
            )
        self.MAX_BATCH_SIZE = _number(environ, "MAX_BATCH_SIZE", 1000, int, minimum=1)
        # Unset: derived from the served model (app/runtime/limits.py), at least 1 MiB.
        body_limit = _number(environ, "MAX_CONTENT_LENGTH", None, int, minimum=64)
        self.BODY_LIMIT_FROM_MODEL = body_limit is None
        self.MAX_CONTENT_LENGTH = body_limit or DEFAULT_BODY_BYTES
        self.MAX_TENSOR_ELEMENTS = _number(
            environ, "MAX_TENSOR_ELEMENTS", DEFAULT_TENSOR_ELEMENTS, int, minimum=1
        )
        self.MAX_MODEL_BYTES = _number(
            environ, "MAX_MODEL_BYTES", DEFAULT_MAX_MODEL_BYTES, int, minimum=1, maximum=2**31 - 1
        )
        # The code a model file may make the server run (app/runtime/model_code.py).
        try:
            code = CodePolicy.from_environ(environ)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self.MODEL_CODE_MODULES, self.ALLOWED_GRAPH_OPS = code.modules, code.graph_ops
        self.LITERT_THREADS = _number(environ, "LITERT_THREADS", 1, int, minimum=1, maximum=64)
        self.LOG_LEVEL = _choice(
            environ, "LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
        ).upper()
        self.LOG_FORMAT = _choice(environ, "LOG_FORMAT", "json", ("json", "text"))
        self.API_TOKEN = _token(environ, "API_TOKEN")
        self.PREDICTION_LOG_SAMPLE_RATE = _number(
            environ, "PREDICTION_LOG_SAMPLE_RATE", 0.1, float, minimum=0.0, maximum=1.0
        )
        # A shadow version's copies (app/core/shadow.py): how many wait per worker, the
        # share of a worker's time they may take, and how often the largest disagreement
        # is logged.
        self.SHADOW_QUEUE_SIZE = _number(
            environ, "SHADOW_QUEUE_SIZE", 32, int, minimum=1, maximum=1000
        )
        self.SHADOW_SHARE = _number(environ, "SHADOW_SHARE", 0.1, float, minimum=0.01, maximum=1.0)
        self.SHADOW_LOG_SECONDS = _number(
            environ, "SHADOW_LOG_SECONDS", 60.0, float, minimum=0.0, maximum=86400.0
        )
        self.DRAIN_SECONDS = _number(environ, "DRAIN_SECONDS", 0, int, minimum=0, maximum=3600)
        self.EXPOSE_WORKER_PID = _choice(environ, "EXPOSE_WORKER_PID", "false", BOOLEANS) in TRUE
        self.PROMETHEUS_MULTIPROC_DIR = _path(environ, "PROMETHEUS_MULTIPROC_DIR", None)
        # Gunicorn's.
        host = environ.get("HOST", "127.0.0.1").strip()
        if not host:
            raise ConfigError("HOST is set but empty; use an address such as 127.0.0.1 or 0.0.0.0")
        port = _number(environ, "PORT", 8000, int, minimum=1, maximum=65535)
        self.GUNICORN_BIND = environ.get("GUNICORN_BIND", "").strip() or f"{host}:{port}"
        self.WEB_CONCURRENCY = _number(
            environ, "WEB_CONCURRENCY", os.cpu_count() or 1, int, minimum=1, maximum=256
        )
        self.GUNICORN_WORKER_CLASS = _choice(
            environ, "GUNICORN_WORKER_CLASS", "gevent", ("gevent", "sync", "gthread")
        )
        self.GUNICORN_THREADS = _number(environ, "GUNICORN_THREADS", 1, int, minimum=1, maximum=256)
        self.GUNICORN_WORKER_CONNECTIONS = _number(
            environ, "GUNICORN_WORKER_CONNECTIONS", 1000, int, minimum=1, maximum=100_000
        )
        # At least 1: with gevent it also bounds the wait for a request's headers.
        self.GUNICORN_KEEPALIVE = _number(
            environ, "GUNICORN_KEEPALIVE", 5, int, minimum=1, maximum=3600
        )
        self.BODY_TIMEOUT = _number(environ, "BODY_TIMEOUT", 60, int, minimum=1, maximum=3600)
        self.GUNICORN_TIMEOUT = _number(environ, "GUNICORN_TIMEOUT", 30, int, minimum=1)
        self.GUNICORN_GRACEFUL_TIMEOUT = _number(
            environ, "GUNICORN_GRACEFUL_TIMEOUT", 30, int, minimum=1
        )
        self.GUNICORN_PIDFILE = _path(environ, "GUNICORN_PIDFILE", None)
        # KServe's convention for a runtime's gRPC port (8081 beside 8000), derived from PORT
        # so that a second server needs one setting; 0 turns gRPC off.
        self.GRPC_PORT = _number(environ, "GRPC_PORT", None, int, minimum=0, maximum=65535)
        if self.GRPC_PORT is None:
            if port + GRPC_PORT_OFFSET > 65535:
                raise ConfigError(f"PORT={port} leaves no port for gRPC at PORT+81: set GRPC_PORT")
            self.GRPC_PORT = port + GRPC_PORT_OFFSET
        self.GRPC_BIND = f"[{host}]:{self.GRPC_PORT}" if ":" in host else f"{host}:{self.GRPC_PORT}"


def limits(config) -> Limits:
    """The request and version bounds in a Config or a Flask app's config."""
    return Limits(
        config["MAX_BATCH_SIZE"],
        config["MAX_TENSOR_ELEMENTS"],
        None if config["BODY_LIMIT_FROM_MODEL"] else config["MAX_CONTENT_LENGTH"],
        config["MAX_MODEL_BYTES"],
        batch_seconds(config),
        CodePolicy(config["MODEL_CODE_MODULES"], config["ALLOWED_GRAPH_OPS"]),
    )


def batch_seconds(config) -> float:
    """The longest the largest batch may take: half of GUNICORN_GRACEFUL_TIMEOUT, so that an
    inference finishes while its worker drains. The gevent worker runs a long inference
    in a thread; the sync and gthread workers block on it, so half of GUNICORN_TIMEOUT too."""
    seconds = config["GUNICORN_GRACEFUL_TIMEOUT"]
    if config["GUNICORN_WORKER_CLASS"] != "gevent":
        seconds = min(seconds, config["GUNICORN_TIMEOUT"])
    return seconds / 2


# GRPC_PORT's default is PORT plus this: 8081 beside the default 8000, as KServe has it.
GRPC_PORT_OFFSET = 81
# What MODEL_REPOSITORY replaces: one model's source, name and pinned version.
ONE_MODEL_SETTINGS = ("MODEL_DIR", "MODEL_URI", "MODEL_NAME", "MODEL_VERSION")
BOOLEANS = ("true", "false", "1", "0", "yes", "no", "on", "off")
TRUE = ("true", "1", "yes", "on")
