"""Per-worker serving state: the loaded model runner and whether it drains."""

import logging
import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
from flask import Flask, current_app, g
from flask_smorest import abort

from app.config import limits
from app.extensions import MODEL_INFO, MODEL_LOAD_FAILURES, MODEL_LOAD_SECONDS
from app.ops.error_shape import cut
from app.ops.monitoring import InputMonitor
from app.runtime.input_profile import profiled_features
from app.runtime.loader import load_newest, load_registered, load_synced
from app.runtime.model import ModelBundle, ModelLoadError, ModelRunner

log = logging.getLogger(__name__)
# A logger of its own, so prediction records can be routed or silenced apart.
prediction_log = logging.getLogger("app.predictions")
# A sampled prediction's tensors are logged whole up to this many numbers each.
LOGGED_NUMBERS = 1000


@dataclass
class ServingState:
    """What this process serves; kept in ``app.extensions["serving"]``.

    In the Gunicorn master only ``bundle`` is set: the verified version that
    every worker it forks will serve. A worker builds ``runner`` from it.
    """

    bundle: ModelBundle | None = None
    runner: ModelRunner | None = None
    draining: bool = False
    # How long a request body may take to arrive, as a context manager around
    # the read; only the gevent worker can bound a whole read (app/ops/worker.py).
    body_deadline: Callable[[float], AbstractContextManager] = lambda seconds: nullcontext()

    @property
    def ready(self) -> bool:
        """Whether this worker takes requests: its runtime is built and it is not draining."""
        return self.runner is not None and not self.draining

    @property
    def skipped(self) -> list[str]:
        return self.bundle.skipped if self.bundle else []


def serving_state(app: Flask) -> ServingState:
    return app.extensions["serving"]


def load_bundle(app: Flask) -> ModelBundle:
    """In the master: load the version to serve (and build its LiteRT runtime for the
    workers to share), or raise ``ModelLoadError``.

    From the MLflow registry when MODEL_URI is set, else the newest loadable (or
    the pinned) version under MODEL_DIR. On failure the bundle already held, if
    any, stays: the server keeps serving it.
    """
    config, state = app.config, serving_state(app)
    try:
        if config["MODEL_URI"]:
            # The cache stands in for the registry only at start: a reload keeps what serves.
            bundle = load_registered(
                config["MODEL_URI"],
                config["MODEL_CACHE_DIR"],
                (config["MODEL_LOAD_TIMEOUT"], config["MODEL_REGISTRY_TIMEOUT"]),
                cache_allowed=state.bundle is None,
                limits=limits(config),
            )
        elif config["MODEL_STORE"]:
            bundle = load_synced(
                config["MODEL_STORE"],
                config["MODEL_DIR"],
                config["MODEL_VERSION"],
                (config["MODEL_LOAD_TIMEOUT"], config["MODEL_REGISTRY_TIMEOUT"]),
                cache_allowed=state.bundle is None,
                limits=limits(config),
                name=config["MODEL_NAME"],
            )
        else:
            bundle = load_newest(
                config["MODEL_DIR"],
                config["MODEL_VERSION"],
                config["MODEL_LOAD_TIMEOUT"],
                limits(config),
                config["MODEL_NAME"],
            )
    except ModelLoadError as error:
        # Every version tried failed, or the store could not be listed at all.
        MODEL_LOAD_FAILURES.inc(len(getattr(error, "failures", ())) or 1)
        raise
    bundle.share_runtime(config["LITERT_THREADS"])
    state.bundle = bundle
    served_from = (bundle.registry or bundle.store or {}).get("served_from", "registry")
    if served_from not in ("registry", "store"):
        log.warning(
            "serving %s version %s from the %s",
            bundle.version.name,
            bundle.version.number,
            served_from,
        )
    MODEL_LOAD_SECONDS.observe(bundle.load_seconds)
    MODEL_LOAD_FAILURES.inc(bundle.failure_count)
    for failure in bundle.skipped:
        log.warning("skipping a newer model version that does not load: %s", failure)
    log.info(
        "loaded model %s version %s (%s, in %.2f s); workers serve it",
        bundle.version.name,
        bundle.version.number,
        bundle.artifact_source,
        bundle.load_seconds,
        extra={"model_version": bundle.version.number},
    )
    return bundle


def start_serving(app: Flask) -> ModelRunner:
    """In a worker: build the runtime from the master's bundle; files are not read again.

    The loader has done every step once already, so this takes milliseconds
    and cannot fail where the loader passed.
    """
    state = serving_state(app)
    runner = ModelRunner.build(state.bundle, app.config["LITERT_THREADS"], full_check=False)
    serve_runner(app, runner)
    log.info(
        "serving model %s version %s with %s",
        runner.name,
        runner.number,
        runner.runtime,
        extra={"model_version": runner.number},
    )
    return runner


def serve_runner(app: Flask, runner: ModelRunner) -> None:
    """Make ``runner`` this worker's: its input monitor, metrics and body limit."""
    runner.monitor = input_monitor(runner)
    app.config["MAX_CONTENT_LENGTH"] = runner.bundle.max_body_bytes
    serving_state(app).runner = runner
    MODEL_INFO.labels(runner.name, str(runner.number), runner.runtime).set(1)


def input_monitor(runner: ModelRunner) -> InputMonitor:
    """The monitor of ``runner``'s profiled input features (none without a profile)."""
    features = profiled_features(runner.metadata, runner.compiled.inputs)
    return InputMonitor(runner.name, runner.number, features)


def log_prediction(runner: ModelRunner, inputs: dict, outputs: dict) -> None:
    """Log inputs and outputs for model monitoring, sampled at PREDICTION_LOG_SAMPLE_RATE.

    A one-number-in, one-number-out model logs plain lists; others log them by
    tensor name. A tensor of more than LOGGED_NUMBERS numbers is summarised
    (shape, min, max, mean), so a log line stays a few kilobytes.
    """
    rate = current_app.config["PREDICTION_LOG_SAMPLE_RATE"]
    if rate < 1.0 and random.random() >= rate:
        return
    if runner.scalar:
        (values,), (results,) = inputs.values(), outputs.values()
        instances, predictions = logged(values.reshape(-1)), logged(results.reshape(-1))
    else:
        instances = {name: logged(array) for name, array in inputs.items()}
        predictions = {name: logged(array) for name, array in outputs.items()}
    prediction_log.info(
        "prediction",
        extra={
            "request_id": g.get("request_id"),
            "model": runner.name,
            "model_version": runner.number,
            "instances": instances,
            "predictions": predictions,
        },
    )


def logged(array: np.ndarray):
    """The values as a list, or a summary when there are more than LOGGED_NUMBERS."""
    if array.dtype == object:  # Strings: their text, cut as an error message cuts it.
        return [
            cut(value.decode("utf-8", "replace")) for value in array.reshape(-1)[:LOGGED_NUMBERS]
        ]
    if array.size <= LOGGED_NUMBERS:
        return array.tolist()
    return {
        "shape": list(array.shape),
        "min": float(array.min()),
        "max": float(array.max()),
        "mean": float(array.mean(dtype=np.float64)),
    }


def served_runner(
    name: str, version: str | None, model_missing: str, version_missing: str
) -> ModelRunner:
    """This worker's runner when it serves ``name`` (and ``version``, if given); else 404.

    The messages are the protocol's, formatted with ``name``, ``version`` and ``served``.
    """
    runner = current_runner()
    if name != runner.name:
        abort(404, message=model_missing.format(name=cut(name), served=runner.name))
    if version is not None and version != str(runner.number):
        message = version_missing.format(name=cut(name), version=cut(version), served=runner.number)
        abort(404, message=message)
    return runner


def current_runner() -> ModelRunner:
    """This worker's runner, or a 503 before it has one.

    A draining worker still serves: only its readiness says it is leaving.
    """
    state = serving_state(current_app)
    if state.runner is None:
        abort(503, message="The model is not loaded yet.", headers={"Retry-After": "1"})
    return state.runner
