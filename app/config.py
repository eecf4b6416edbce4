"""Settings, each read once from the environment with a type and a default."""

import os
from pathlib import Path


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


class Config:
    """The server's settings; keys match the environment variables' names."""

    def __init__(self, environ=os.environ):
        self.MODEL_DIR = Path(environ.get("MODEL_DIR") or "models/linear")
        pinned = _number(environ, "MODEL_VERSION", 0, int, minimum=0)
        self.MODEL_VERSION = pinned or None
        self.MAX_BATCH_SIZE = _number(environ, "MAX_BATCH_SIZE", 1000, int, minimum=1)
        self.MAX_CONTENT_LENGTH = _number(
            environ, "MAX_CONTENT_LENGTH", 1024 * 1024, int, minimum=64
        )
        self.LOG_LEVEL = _choice(
            environ, "LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
        ).upper()
        self.LOG_FORMAT = _choice(environ, "LOG_FORMAT", "json", ("json", "text"))
        self.API_TOKEN = environ.get("API_TOKEN") or None
        self.PREDICTION_LOG_SAMPLE_RATE = _number(
            environ, "PREDICTION_LOG_SAMPLE_RATE", 0.1, float, minimum=0.0, maximum=1.0
        )
        self.DRAIN_SECONDS = _number(environ, "DRAIN_SECONDS", 0, int, minimum=0)
