"""Settings, each read once from the environment with a type and a default."""

import os
from pathlib import Path


class ConfigError(ValueError):
    """An environment variable holds a value the server cannot use."""


def _integer(environ, name: str, default: int, minimum: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _choice(environ, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = environ.get(name, default).strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def _fraction(environ, name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}={value} must be between 0 and 1")
    return value


class Config:
    """The server's settings; keys match the environment variables' names."""

    def __init__(self, environ=os.environ):
        self.MODEL_DIR = Path(environ.get("MODEL_DIR") or "models/linear")
        pinned = _integer(environ, "MODEL_VERSION", 0, minimum=0)
        self.MODEL_VERSION = pinned or None
        self.MAX_BATCH_SIZE = _integer(environ, "MAX_BATCH_SIZE", 1000, minimum=1)
        self.MAX_CONTENT_LENGTH = _integer(environ, "MAX_CONTENT_LENGTH", 1024 * 1024, minimum=64)
        self.LOG_LEVEL = _choice(
            environ, "LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
        ).upper()
        self.LOG_FORMAT = _choice(environ, "LOG_FORMAT", "json", ("json", "text"))
        self.API_TOKEN = environ.get("API_TOKEN") or None
        self.PREDICTION_LOG_SAMPLE_RATE = _fraction(environ, "PREDICTION_LOG_SAMPLE_RATE", 0.1)
        self.DRAIN_SECONDS = _integer(environ, "DRAIN_SECONDS", 0, minimum=0)
