"""Per-worker serving state: the loaded model runner and whether it drains."""

import logging
import random
from dataclasses import dataclass, field

from flask import Flask, current_app, g
from flask_smorest import abort

from app.extensions import MODEL_INFO, MODEL_LOAD_FAILURES, MODEL_LOAD_SECONDS
from app.model import ModelRunner, load_newest

log = logging.getLogger(__name__)
# A logger of its own, so prediction records can be routed or silenced apart.
prediction_log = logging.getLogger("app.predictions")


@dataclass
class ServingState:
    """What this worker serves; kept in ``app.extensions["serving"]``."""

    runner: ModelRunner | None = None
    skipped: list[str] = field(default_factory=list)
    draining: bool = False


def serving_state(app: Flask) -> ServingState:
    return app.extensions["serving"]


def load_model(app: Flask) -> ModelRunner:
    """Load the newest loadable (or the pinned) version into this worker's app."""
    runner, skipped = load_newest(app.config["MODEL_DIR"], app.config["MODEL_VERSION"])
    state = serving_state(app)
    state.runner, state.skipped = runner, skipped
    MODEL_LOAD_SECONDS.observe(runner.load_seconds)
    MODEL_LOAD_FAILURES.inc(len(skipped))
    for failure in skipped:
        log.warning("skipping a newer model version that does not load: %s", failure)
    MODEL_INFO.labels(runner.name, str(runner.number), runner.runtime).set(1)
    log.info(
        "serving model %s version %s with %s (loaded in %.2f s)",
        runner.name,
        runner.number,
        runner.runtime,
        runner.load_seconds,
        extra={"model_version": runner.number, "skipped_versions": skipped},
    )
    return runner


def log_prediction(runner: ModelRunner, instances, predictions) -> None:
    """Log inputs and outputs for model monitoring, sampled at PREDICTION_LOG_SAMPLE_RATE."""
    rate = current_app.config["PREDICTION_LOG_SAMPLE_RATE"]
    if rate < 1.0 and random.random() >= rate:
        return
    prediction_log.info(
        "prediction",
        extra={
            "request_id": g.get("request_id"),
            "model": runner.name,
            "model_version": runner.number,
            "instances": instances.tolist(),
            "predictions": predictions.tolist(),
        },
    )


def current_runner() -> ModelRunner:
    """This worker's runner, or a 503 before it has one.

    A draining worker still serves: only its readiness says it is leaving.
    """
    state = serving_state(current_app)
    if state.runner is None:
        abort(503, message="The model is not loaded yet.", headers={"Retry-After": "1"})
    return state.runner
