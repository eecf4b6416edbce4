"""Per-worker serving state: the loaded model runner and whether it drains."""

import logging
import random
import sys
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
from flask import Flask, current_app, g, has_request_context, request
from flask_smorest import abort

from app.config import limits
from app.core.shadow import ShadowCopies
from app.extensions import MODEL_INFO, MODEL_LOAD_FAILURES, MODEL_LOAD_SECONDS
from app.ops.error_shape import cut
from app.ops.monitoring import InputMonitor
from app.runtime.input_profile import profiled_features
from app.runtime.loader import (
    load_newest,
    load_registered,
    load_repository,
    load_synced,
    run_with_deadline,
    sync_mirror,
)
from app.runtime.model import ModelBundle, ModelLoadError, ModelRunner
from app.runtime.version_policy import LATEST, read_model_policy

log = logging.getLogger(__name__)
# A logger of its own, so prediction records can be routed or silenced apart.
prediction_log = logging.getLogger("app.predictions")
# A sampled prediction's tensors are logged whole up to this many numbers each.
LOGGED_NUMBERS = 1000
# A request names a model, or a version or label of one, that this server does not serve.
MODEL_MISSING = "Model {name!r} is not served; this server serves {served}."
VERSION_MISSING = "Version {version!r} of model {name!r} is not served; served: {served}."


@dataclass
class ServingState:
    """What this process serves; kept in ``app.extensions["serving"]``.

    In the Gunicorn master only ``bundles`` (and ``unavailable``) are set: the
    verified versions every worker it forks will serve, by model name. A
    worker builds ``runners`` from them.
    """

    bundles: dict[str, ModelBundle] = field(default_factory=dict)
    # Repository models none of whose versions loaded, with why (MODEL_REPOSITORY).
    unavailable: dict[str, str] = field(default_factory=dict)
    runners: dict[str, ModelRunner] = field(default_factory=dict)
    draining: bool = False
    # MODEL_CONTROL_MODE=explicit (app/core/control.py): the set's generation this
    # process serves, and the file each model's bundle came from.
    generation: int = 0
    sources: dict[str, str] = field(default_factory=dict)
    # The generation of the rollouts changed by control calls this process routes by
    # (app/core/rollouts.py).
    rollouts: int = 0
    # Gives a runner built after the worker started its turns and thread (app/ops/worker.py).
    adopt: Callable[[ModelRunner], None] = lambda runner: None
    # This worker's queue of copies for shadow versions (app/core/shadow.py).
    shadows: ShadowCopies | None = None
    # How long a request body may take to arrive, as a context manager around
    # the read; only the gevent worker can bound a whole read (app/ops/worker.py).
    body_deadline: Callable[[float], AbstractContextManager] = lambda seconds: nullcontext()
    # Called once a load or unload has fitted the body limit: gRPC's bounds follow it.
    limits_changed: Callable[[], None] = lambda: None

    @property
    def ready(self) -> bool:
        """Whether this worker takes requests: every loaded model's runtime is built
        and it is not draining. A set loaded by explicit control may hold no model."""
        loaded = bool(self.runners) or self.generation > 0
        return loaded and len(self.runners) == len(self.bundles) and not self.draining

    def serves(self, name: str) -> bool:
        """Whether model ``name`` is ready here: its runtime built, the worker not draining."""
        return name in self.runners and not self.draining

    @property
    def several(self) -> bool:
        """Whether more than one model is served or listed (a model is in one dict only)."""
        return len(self.bundles) + len(self.unavailable) > 1

    @property
    def names(self) -> list[str]:
        """Every model's name, served or unavailable, in order."""
        return sorted(self.bundles.keys() | self.unavailable.keys())


def serving_state(app: Flask) -> ServingState:
    return app.extensions["serving"]


def load_models(app: Flask, names: set[str] | None = None) -> None:
    """In the master: load what to serve (building each LiteRT runtime for the workers to
    share), or raise ``ModelLoadError`` when nothing can be served.

    From MODEL_REPOSITORY every model under it (or those ``names`` names), else the one model of
    MODEL_URI (MLflow) or MODEL_DIR. A model that fails to load keeps the
    version it served, if any: a reload never takes a working model down.
    """
    config, state = app.config, serving_state(app)
    if config["MODEL_REPOSITORY"]:
        load_repository_models(app, names)
    else:
        try:
            bundle = load_model(config, cache_allowed=not state.bundles)
        except ModelLoadError as error:
            count_failures(error)
            raise
        state.bundles = {bundle.version.name: bundle}
    for bundle in state.bundles.values():
        bundle.share_runtime(config["LITERT_THREADS"])


def count_failures(error: ModelLoadError) -> None:
    """Count every version that failed, or one when the store could not be listed at all."""
    MODEL_LOAD_FAILURES.inc(len(getattr(error, "failures", ())) or 1)


def load_model(config, cache_allowed: bool) -> ModelBundle:
    """The one model: from the MLflow registry when MODEL_URI is set, else the newest
    loadable (or the pinned) version under MODEL_DIR, local or in S3; a local MODEL_DIR's
    ``version_policy.json`` may serve several, with a rollout."""
    timeouts = registry_timeouts(config)
    if config["MODEL_URI"]:
        # The cache stands in for the registry only at start: a reload keeps what serves.
        bundle = load_registered(
            config["MODEL_URI"], config["MODEL_CACHE_DIR"], timeouts, cache_allowed, limits(config)
        )
    elif config["MODEL_STORE"]:
        bundle = load_synced(
            config["MODEL_STORE"],
            config["MODEL_DIR"],
            config["MODEL_VERSION"],
            timeouts,
            cache_allowed=cache_allowed,
            limits=limits(config),
            name=config["MODEL_NAME"],
        )
    else:
        timeout, name = config["MODEL_LOAD_TIMEOUT"], config["MODEL_NAME"]
        policy = LATEST
        if config["MODEL_VERSION"] is None:  # A pinned version is served alone.
            policy = run_with_deadline(read_model_policy, timeout, config["MODEL_DIR"], name)
        bundle = load_newest(
            config["MODEL_DIR"], config["MODEL_VERSION"], timeout, limits(config), name, policy
        )
    report_loaded(bundle)
    return bundle


def registry_timeouts(config) -> tuple[float, float]:
    """A whole load's deadline, and the registry's or object store's part of it."""
    return config["MODEL_LOAD_TIMEOUT"], config["MODEL_REGISTRY_TIMEOUT"]


def load_repository_models(app: Flask, names: set[str] | None) -> None:
    """Every model under MODEL_REPOSITORY (or those ``names`` names); one that does not
    load is listed with why.

    Raises ``ModelLoadError`` when the root cannot be listed, holds more than
    MAX_MODELS, totals more than MAX_REPOSITORY_BYTES, or none of the models
    asked for loads.
    """
    config, state = app.config, serving_state(app)
    root, max_models = config["MODEL_REPOSITORY"], config["MAX_MODELS"]
    if names is not None and len(names) > max_models:
        raise ModelLoadError(f"{len(names)} models to load, over MAX_MODELS={max_models}")
    store, refused = config["REPOSITORY_STORE"], {}
    if store:
        served_from, refused = sync_repository(app, cache_allowed=not state.bundles)
    # Named models: the bound is on them, not on the directories beside them.
    listed = max_models if names is None else sys.maxsize
    registry = (config["MODEL_CACHE_DIR"], registry_timeouts(config), not state.bundles)
    bundles, failed, ignored = load_repository(
        root, listed, config["MODEL_LOAD_TIMEOUT"], limits(config), names, registry
    )
    for name, why in refused.items():  # Not mirrored: only those asked for are reported.
        if names is None or name in names:
            bundles.pop(name, None)
            failed[name] = ModelLoadError(f"not mirrored from the store: {why}")
    for name, bundle in bundles.items():
        if store:
            bundle.store = {"uri": str(store.child(name)), "served_from": served_from}
        report_loaded(bundle)
    for name in ignored:
        log.warning("%s: model directory %s left out: its name is not URL-safe", root, name)
    unavailable = {}
    for name, error in failed.items():
        count_failures(error)
        if name in state.bundles:
            bundles[name] = state.bundles[name]
            kept = bundles[name].version.number
            log.error("model %s: reload failed, version %s serves on: %s", name, kept, error)
        else:
            unavailable[name] = str(error)
            log.error("model %s is unavailable: %s", name, error, extra={"model": name})
    total = sum(bundle.size_bytes for bundle in bundles.values())
    if total > config["MAX_REPOSITORY_BYTES"]:
        raise ModelLoadError(
            f"{root}: its models' artifacts total {total:,} bytes, over "
            f"MAX_REPOSITORY_BYTES={config['MAX_REPOSITORY_BYTES']:,}"
        )
    if not bundles and names != set():
        reasons = "; ".join(f"{name}: {why}" for name, why in unavailable.items())
        raise ModelLoadError(f"{root}: no model loads ({reasons or 'the repository is empty'})")
    state.bundles, state.unavailable = bundles, unavailable


def sync_repository(app: Flask, cache_allowed: bool) -> tuple[str, dict[str, str]]:
    """Mirror an s3:// MODEL_REPOSITORY into the cache: where its models are served from, and
    the models the mirror refused, with why."""
    config = app.config
    timeouts = registry_timeouts(config)
    store, mirror = config["REPOSITORY_STORE"], config["MODEL_REPOSITORY"]
    return sync_mirror(
        store, mirror, timeouts, cache_allowed, limits(config), config["MAX_REPOSITORY_BYTES"]
    )


def report_loaded(bundle: ModelBundle) -> None:
    """Log newly loaded versions and count them, with the versions that did not load."""
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
        log.warning("skipping a model version that does not load: %s", failure)
    for served in bundle.served:
        log.info(
            "loaded model %s version %s (%s, in %.2f s); workers serve it",
            served.version.name,
            served.version.number,
            served.artifact_source,
            served.load_seconds,
            extra={"model": served.version.name, "model_version": served.version.number},
        )


def start_serving(app: Flask) -> None:
    """In a worker: build each model's runtime from the master's bundle; files are not
    read again.

    The loader has done every step once already, so this takes milliseconds
    a model and cannot fail where the loader passed.
    """
    state, config = serving_state(app), app.config
    state.shadows = ShadowCopies(
        config["SHADOW_QUEUE_SIZE"], config["SHADOW_SHARE"], config["SHADOW_LOG_SECONDS"]
    )
    for bundle in state.bundles.values():
        serve_bundle(app, bundle)


def serve_bundle(app: Flask, bundle: ModelBundle) -> None:
    """Build the runtime of each of ``bundle``'s versions in this worker and serve them."""
    state, threads = serving_state(app), app.config["LITERT_THREADS"]
    runner = ModelRunner.build(bundle, threads, full_check=False)
    runner.older = {
        older.version.number: ModelRunner.build(older, threads, full_check=False)
        for older in bundle.older
    }
    for served in runner.served:
        state.adopt(served)
    serve_runner(app, runner)
    for served in runner.served:
        log.info(
            "serving model %s version %s with %s",
            served.name,
            served.number,
            served.runtime,
            extra={"model": served.name, "model_version": served.number},
        )


def serve_runner(app: Flask, runner: ModelRunner) -> None:
    """Make ``runner`` (and its older versions) this worker's, in place of what served under
    its name: input monitors, metrics and the body limit (the largest any served model takes)."""
    state = serving_state(app)
    retire(state, runner.name)
    state.runners[runner.name] = runner
    for served in runner.served:
        served.monitor = input_monitor(served)
        MODEL_INFO.labels(served.name, str(served.number), served.runtime).set(1)
    attach_shadow(state, runner)
    fit_body_limit(app)


def attach_shadow(state: ServingState, runner: ModelRunner) -> None:
    """Give each version of ``runner``'s model the shadow its rollout names, if any."""
    rollout = runner.bundle.rollout
    shadow = next((s for s in runner.served if s.number == rollout.shadow), None)
    for served in runner.served:
        copies = state.shadows
        if shadow is None or served is shadow or copies is None:
            served.shadow = None
        else:
            served.shadow = (shadow, rollout.sample, copies)


def forget_runner(app: Flask, name: str) -> None:
    """Stop serving model ``name`` in this worker (an unload)."""
    retire(serving_state(app), name)
    fit_body_limit(app)


def retire(state: ServingState, name: str) -> None:
    runner = state.runners.pop(name, None)
    for served in runner.served if runner is not None else ():
        MODEL_INFO.labels(served.name, str(served.number), served.runtime).set(0)


def fit_body_limit(app: Flask) -> None:
    """MAX_CONTENT_LENGTH: the largest body any served model takes (kept when none serves)."""
    app.config["MAX_CONTENT_LENGTH"] = max(
        (
            served.bundle.max_body_bytes
            for runner in serving_state(app).runners.values()
            for served in runner.served
        ),
        default=app.config["MAX_CONTENT_LENGTH"],
    )
    serving_state(app).limits_changed()


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


def model_states(state: ServingState, ready_only: bool = False) -> list[dict]:
    """Each model's name, served versions and state, as the repository index lists them:
    ``READY`` (``LOADING`` before a worker has built it), or ``UNAVAILABLE`` and why."""
    models = []
    for name in state.names:
        if ready_only and name not in state.runners:
            continue
        if name in state.unavailable:
            models.append({"name": name, "state": "UNAVAILABLE", "reason": state.unavailable[name]})
        else:
            ready = "READY" if name in state.runners else "LOADING"
            for bundle in state.bundles[name].served:
                models.append({"name": name, "version": str(bundle.version.number), "state": ready})
    return models


def served_runner(
    name: str,
    version: str | None,
    model_missing: str,
    version_missing: str,
    route: bool = False,
) -> ModelRunner:
    """This worker's runner of model ``name`` (and ``version``, a number or a label, if
    given; else, to ``route`` an inference, the version the model's weights pick).

    Else 404 for a name, version or label not served, 400 for a repository model
    that did not load (the protocol's UNAVAILABLE over gRPC), 503 before the
    worker serves. The messages are the protocol's, formatted with ``name``,
    ``version`` and ``served``.
    """
    state = serving_state(current_app)
    runner = state.runners.get(name)
    if runner is None:
        if name in state.unavailable:
            message = f"Model {name!r} is unavailable: {state.unavailable[name]}"
            abort(400, message=message, unavailable=True)
        if name in state.bundles:
            not_loaded_yet()
        abort(404, message=model_missing.format(name=cut(name), served=listed(state.names)))
    if version is None:
        return routed(runner) if route else runner
    labels = runner.bundle.rollout.labels
    number = str(labels[version]) if version in labels else version
    for served in runner.served:
        if number == str(served.number):
            return served
    served = ", ".join(str(each.number) for each in runner.served)
    if labels:
        served += f" (labels: {', '.join(f'{k}={v}' for k, v in sorted(labels.items()))})"
    abort(404, message=version_missing.format(name=cut(name), version=cut(version), served=served))


# The header (gRPC: metadata key) whose value, hashed, picks the version a weighted model
# serves: the same key always reaches the same version.
ROUTING_KEY = "X-Routing-Key"


def routed(runner: ModelRunner) -> ModelRunner:
    """The version of ``runner``'s model that answers a request naming none: by the model's
    weights, sticky by the request's routing key (else drawn at random); without weights
    the newest version that is not the shadow."""
    rollout = runner.bundle.rollout
    weights = rollout.weights
    if not weights:
        if rollout.shadow != runner.number:
            return runner
        return next(served for served in runner.served if served.number != rollout.shadow)
    key = request.headers.get(ROUTING_KEY) if has_request_context() else g.get("routing_key")
    point = zlib.crc32(key.encode("utf-8", "surrogatepass")) % 100 if key else random.randrange(100)
    chosen = runner.number
    for number, percent in sorted(weights.items()):
        chosen, point = number, point - percent
        if point < 0:
            break
    return next((served for served in runner.served if served.number == chosen), runner)


def versions_of(runner: ModelRunner) -> list[ModelRunner]:
    """Every version this worker serves of ``runner``'s model, newest first."""
    newest = serving_state(current_app).runners.get(runner.name, runner)
    return newest.served


def listed(names: list[str], shown: int = 5) -> str:
    """Names quoted for a message, the first ``shown`` of them and how many more."""
    quoted = ", ".join(repr(name) for name in names[:shown])
    return quoted if len(names) <= shown else f"{quoted} and {len(names) - shown} more"


def current_runner() -> ModelRunner:
    """The runner of the model a request names in its path (``/predict/<name>``, and the
    version or label of ``/predict/<name>/versions/<version>``), else of the one model this
    server serves, the version its weights pick; 400 when it serves several and none is
    named.

    A draining worker still serves: only its readiness says it is leaving.
    """
    arguments = request.view_args or {}
    name = arguments.get("name")
    if name is not None:
        return served_runner(name, arguments.get("version"), MODEL_MISSING, VERSION_MISSING, True)
    state = serving_state(current_app)
    if state.several:
        abort(
            400,
            message=f"This server serves {len(state.names)} models ({listed(state.names)}): "
            "name one in the path, as in /predict/<name> or /model/<name>.",
        )
    if not state.bundles:
        abort(404, message="This server serves no model: load one (MODEL_CONTROL_MODE=explicit).")
    if not state.runners:
        not_loaded_yet()
    (runner,) = state.runners.values()
    return routed(runner)


def not_loaded_yet():
    abort(503, message="The model is not loaded yet.", headers={"Retry-After": "1"})
