"""Per-worker serving state: the loaded model runner and whether it drains."""

import logging
from dataclasses import dataclass, field

from flask import Flask, current_app
from flask_smorest import abort

from app.model import ModelRunner, load_newest

log = logging.getLogger(__name__)


@dataclass
class ServingState:
    """What this worker serves; kept in ``app.extensions["serving"]``."""

    runner: ModelRunner | None = None
    skipped: list[str] = field(default_factory=list)
    draining: bool = False

    @property
    def ready(self) -> bool:
        return self.runner is not None and not self.draining


def serving_state(app: Flask) -> ServingState:
    return app.extensions["serving"]


def load_model(app: Flask) -> ModelRunner:
    """Load the newest loadable (or the pinned) version into this worker's app."""
    runner, skipped = load_newest(app.config["MODEL_DIR"], app.config["MODEL_VERSION"])
    state = serving_state(app)
    state.runner, state.skipped = runner, skipped
    log.info(
        "serving model %s version %s (loaded in %.2f s)",
        runner.name,
        runner.number,
        runner.load_seconds,
    )
    return runner


def current_runner() -> ModelRunner:
    """This worker's runner, or a 503 while it has none or is draining."""
    state = serving_state(current_app)
    if state.draining:
        abort(503, message="This worker is shutting down.", headers={"Retry-After": "1"})
    if state.runner is None:
        abort(503, message="The model is not loaded yet.", headers={"Retry-After": "1"})
    return state.runner
