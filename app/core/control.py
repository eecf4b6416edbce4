"""Explicit model control (MODEL_CONTROL_MODE=explicit): load and unload without a restart,
every worker serving the same set; and the poll mode's interval poll (MODEL_POLL_SECONDS).

The set lives in one file, ``models.json``, in a directory the master creates:
each model's version and the file holding its verified bundle, and the models
that failed to load, with why. The master writes it at start and on a reload;
a load or unload, answered by any worker, rewrites it under a lock. Each
write raises a generation number shared by the master and all its workers.
Before a worker serves any request, REST or gRPC, it compares that number
with its own and, when behind, takes up the set first: so once an answer is
sent, no request is served by a worker that disagrees with it, and a worker
forked later (a reload, a replaced worker) serves the same set. Created at
import, in the master, before any fork.
"""

import atexit
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from flask import Flask

from app.config import limits
from app.core import rollouts
from app.core.serving import (
    forget_runner,
    model_states,
    registry_timeouts,
    report_loaded,
    serve_bundle,
    serving_state,
    sync_repository,
)
from app.ops.error_shape import cut
from app.ops.file_lock import file_locked
from app.runtime.loader import (
    LoadTimeout,
    load_newest,
    load_registered_as,
    prepare_fingerprints,
    registered_models,
    repository_fingerprint,
    run_with_deadline,
)
from app.runtime.model import ModelBundle, ModelLoadError
from app.runtime.store import StoreError, is_model_name, list_models
from app.runtime.version_policy import LATEST, read_policies

log = logging.getLogger(__name__)

# The generation of models.json, raised by each write.
_generation = multiprocessing.RawValue("q", 0)
_directory: Path | None = None
# The repository's fingerprint when the master last loaded it (MODEL_POLL_SECONDS).
_polled = multiprocessing.RawValue("q", 0)
# How often an idle worker looks for a load or unload another one answered.
IDLE_POLL_SECONDS = 1.0
# Triton's load parameters (a config override, model files) are not taken.
UNSUPPORTED_PARAMETERS = (
    "Parameters {names} are not supported: a load reads the model's directory as it is."
)


class ControlError(Exception):
    """A load or unload refused, with the HTTP status it answers (gRPC maps it)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def explicit(app: Flask) -> bool:
    return app.config["MODEL_CONTROL_MODE"] == "explicit"


@contextmanager
def master_lock(app: Flask):
    """In the master, around a start's or reload's load and ``publish``: no load or unload
    runs meanwhile, so none is lost. Nothing unless MODEL_CONTROL_MODE=explicit."""
    global _directory
    if not explicit(app):
        yield
        return
    if _directory is None:
        _directory = Path(tempfile.mkdtemp(prefix="model-server-control-"))
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(_directory, True))
    with _locked(timeout=None):
        yield


def publish(app: Flask) -> None:
    """In the master, under ``master_lock``, once a start or reload has loaded: the set it
    loaded is the workers' set. Nothing unless MODEL_CONTROL_MODE=explicit."""
    if not explicit(app):
        return
    state = serving_state(app)
    state.sources = {name: _saved(bundle) for name, bundle in state.bundles.items()}
    state.generation = _write(state)


def note_repository(app: Flask) -> None:
    """In the master, before a start's or reload's load: the repository as it is now, for
    the interval poll (MODEL_POLL_SECONDS) to compare against (0 when it cannot be read)."""
    if app.config["MODEL_POLL_SECONDS"]:
        try:
            _polled.value = _fingerprint(app)
        except ModelLoadError:
            _polled.value = 0


def poll_repository(app: Flask, master: int) -> None:
    """In the poll's process (app/ops/repository_poll.py), every MODEL_POLL_SECONDS: when the
    repository changed since the master last loaded it, ask the master for a reload
    (SIGHUP), as ``make reload`` does. A repository that cannot be read is logged and
    looked at again next time."""
    prepare_fingerprints(app.config["REPOSITORY_STORE"])
    try:
        current = _fingerprint(app)
    except ModelLoadError as error:
        log.warning("the model repository could not be polled: %s", error)
        return
    if current != _polled.value:
        _polled.value = current
        log.info("the model repository changed: reloading")
        os.kill(master, signal.SIGHUP)


def _fingerprint(app: Flask) -> int:
    config = app.config
    store = config["REPOSITORY_STORE"]
    return repository_fingerprint(config["MODEL_REPOSITORY"], store, registry_timeouts(config))


def load_names(app: Flask) -> set[str] | None:
    """The models a start or reload loads: all of them (None) unless MODEL_CONTROL_MODE=explicit;
    then MODEL_LOAD's at start (None: all), and on a reload the set the workers serve,
    which the master takes up first: a model that fails to load again keeps its version."""
    if not explicit(app):
        return None
    if not (_directory / "models.json").exists():  # The start.
        return app.config["MODEL_LOAD"]
    current = _read()
    _take_up(app, current, build=False)
    return set(current["models"]) | set(current["unavailable"])


def index(app: Flask, ready_only: bool) -> list[dict]:
    """The repository index: each model's version and state; with MODEL_CONTROL_MODE=explicit,
    the models not loaded too, ``UNAVAILABLE`` for the reason ``unloaded``, as Triton lists them."""
    state = serving_state(app)
    models = model_states(state, ready_only)
    if ready_only or not explicit(app):
        return models
    config = app.config
    try:
        # In a child with a deadline: a hung file system never stalls this worker.
        found = run_with_deadline(
            repository_names, config["MODEL_LOAD_TIMEOUT"], config["MODEL_REPOSITORY"]
        )
    except ModelLoadError as error:
        log.warning("the model repository could not be listed: %s", error)
        found = set()
    unloaded = [
        {"name": name, "state": "UNAVAILABLE", "reason": "unloaded"}
        for name in found - set(state.names)
    ]
    return sorted(models + unloaded, key=lambda model: model["name"])


def repository_names(root: Path) -> set[str]:
    """Every model the repository holds, directories and registry.json's alike (none when the
    root cannot be listed)."""
    try:
        return set(list_models(root, sys.maxsize)[0]) | set(registered_models(root))
    except StoreError:
        return set()


def repository_entry(root: Path, name: str) -> tuple[dict, dict, bool]:
    """What a load of model ``name`` reads from the repository: registry.json's URIs, the
    version policies, and whether ``<root>/<name>`` is a directory."""
    return registered_models(root), read_policies(root), (root / name).is_dir()


def catch_up(app: Flask) -> None:
    """In a worker, before it serves a request: take up the set, and rollouts, if they
    changed. Two numbers compared when nothing did: this runs on every request."""
    state = serving_state(app)
    for _ in range(3):
        if state.generation == _generation.value:
            break
        try:
            _take_up(app, _read())
        except FileNotFoundError:  # A newer write removed a bundle read: read again.
            continue
    if state.rollouts != rollouts.generation():
        rollouts.catch_up(app)


def load(app: Flask, name: str) -> None:
    """Load (or reload) model ``name`` from the repository and serve it on every worker;
    ``ControlError`` when it cannot be, with why."""
    config = app.config
    refuse_unless_explicit(app)
    root = config["MODEL_REPOSITORY"]
    if not is_model_name(name):
        raise ControlError(404, f"Model {cut(name)!r} is not in the repository.")
    with _locked(timeout=config["MODEL_LOAD_TIMEOUT"]):
        if config["REPOSITORY_STORE"]:  # Its newest versions, from S3.
            try:
                _, refused = sync_repository(app, cache_allowed=False)
            except ModelLoadError as error:
                raise ControlError(503, str(error)) from None
            if name in refused:
                message = f"Model {name!r} is not mirrored from the store: {refused[name]}"
                raise ControlError(400, message)
        timeout, model_limits = config["MODEL_LOAD_TIMEOUT"], limits(config)
        try:
            # In a child with a deadline: a hung file system never stalls this worker.
            uris, policies, is_dir = run_with_deadline(repository_entry, timeout, root, name)
        except LoadTimeout as error:
            raise ControlError(503, f"The model repository did not answer: {error}.") from None
        except ModelLoadError as error:
            raise ControlError(400, str(error)) from None
        policy = policies.get(name, LATEST)
        if name in uris and name in policies:
            raise ControlError(400, f"Model {name!r}: a registry model takes no version policy.")
        if name in uris:
            cache, timeouts = config["MODEL_CACHE_DIR"], registry_timeouts(config)
            load_model = partial(
                load_registered_as, name, uris[name], cache, timeouts, False, model_limits
            )
        elif is_dir:
            load_model = partial(
                load_newest, root / name, None, timeout, model_limits, name, policy
            )
        else:
            raise ControlError(404, f"Model {name!r} is not in the repository.")
        current = _read()
        _take_up(app, current)
        state = serving_state(app)
        if name not in state.bundles and len(state.bundles) >= config["MAX_MODELS"]:
            raise ControlError(
                400,
                f"{len(state.bundles)} models serve already, as many as "
                f"MAX_MODELS={config['MAX_MODELS']} allows: unload one first.",
            )
        try:
            bundle = load_model()
        except ModelLoadError as error:
            if name not in state.bundles:
                state.unavailable[name] = str(error)
                state.generation = _write(state)
            raise ControlError(400, f"Model {name!r} did not load: {error}") from None
        others = sum(b.size_bytes for n, b in state.bundles.items() if n != name)
        if others + bundle.size_bytes > config["MAX_REPOSITORY_BYTES"]:
            raise ControlError(
                400,
                f"Model {name!r} would bring the served artifacts to "
                f"{others + bundle.size_bytes:,} bytes, over "
                f"MAX_REPOSITORY_BYTES={config['MAX_REPOSITORY_BYTES']:,}.",
            )
        report_loaded(bundle)
        state.sources[name] = _saved(bundle)
        state.unavailable.pop(name, None)
        _serve(app, bundle)
        state.generation = _write(state)


def unload(app: Flask, name: str) -> None:
    """Stop serving model ``name`` on every worker; ``ControlError`` when it is not loaded."""
    refuse_unless_explicit(app)
    with _locked(timeout=app.config["MODEL_LOAD_TIMEOUT"]):
        _take_up(app, _read())
        state = serving_state(app)
        if name not in state.bundles and name not in state.unavailable:
            raise ControlError(404, f"Model {cut(name)!r} is not loaded.")
        _drop(app, name)
        state.generation = _write(state)
        log.info("unloaded model %s", name, extra={"model": name})


def refuse_unless_explicit(app: Flask) -> None:
    if not explicit(app):
        when = "from the repository on a reload" if app.config["MODEL_REPOSITORY"] else "at start"
        raise ControlError(
            400,
            "Models are loaded and unloaded only with MODEL_REPOSITORY and "
            f"MODEL_CONTROL_MODE=explicit; this server reads its models {when}.",
        )


def _take_up(app: Flask, current: dict, build: bool = True) -> None:
    """Hold exactly the set ``current`` describes: read (and ``build``, in a worker) what
    is new, drop what left."""
    state = serving_state(app)
    for name in list(state.bundles):
        if name not in current["models"]:
            _drop(app, name)
    for name, source in current["models"].items():
        if state.sources.get(name) != source:
            with (_directory / source).open("rb") as file:
                bundle = pickle.load(file)
            state.sources[name] = source
            if build:
                _serve(app, bundle)
            else:
                state.bundles[name] = bundle
    state.unavailable = dict(current["unavailable"])
    state.generation = current["generation"]


def _serve(app: Flask, bundle: ModelBundle) -> None:
    serving_state(app).bundles[bundle.version.name] = bundle
    serve_bundle(app, bundle)


def _drop(app: Flask, name: str) -> None:
    state = serving_state(app)
    state.bundles.pop(name, None)
    state.sources.pop(name, None)
    state.unavailable.pop(name, None)
    forget_runner(app, name)


def _saved(bundle: ModelBundle) -> str:
    """Write ``bundle`` (without a runtime) where every worker can read it; its file name."""
    name = f"{bundle.version.name}.{bundle.version.number}.{time.time_ns()}.pickle"
    partial = _directory / f".{name}"
    with partial.open("wb") as file:
        pickle.dump(bundle.without_runtime(), file)
    partial.rename(_directory / name)
    return name


def _write(state) -> int:
    """Write the set ``state`` serves, drop bundle files no longer named; the new generation."""
    generation = _generation.value + 1
    current = {
        "generation": generation,
        "models": dict(state.sources),
        "unavailable": dict(state.unavailable),
    }
    partial = _directory / ".models.json"
    partial.write_text(json.dumps(current))
    partial.rename(_directory / "models.json")
    for path in _directory.glob("*.pickle"):
        if path.name not in current["models"].values():
            path.unlink(missing_ok=True)
    _generation.value = generation
    return generation


def _read() -> dict:
    return json.loads((_directory / "models.json").read_text())


def _locked(timeout: float | None):
    """Hold the control lock: one load, unload or publish at a time across processes; 503
    for a worker once ``timeout`` passes."""
    busy = partial(ControlError, 503, "Another load or unload is still running; retry shortly.")
    return file_locked(_directory / "lock", timeout, busy)
