"""Changing a repository model's rollout (labels, weights, shadow) with one control call, in
force on every worker before the answer is sent.

The call writes the model's entry in the repository's ``version_policy.json``,
so the rollout survives a restart and a reload, and notes it in ``rollouts.json``,
in a directory the master creates at import, raising a generation number shared
by the master and all its workers. Before a worker serves a request, REST or
gRPC, it compares that number with its own and, when behind, takes up the
rollouts noted: so once the call is answered, no worker routes by the old one,
and a worker forked later (a replaced worker) takes them up at its first
request. A start or reload reads the file again and clears the notes.
"""

import atexit
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

from flask import Flask

from app.core.serving import attach_shadow, serving_state
from app.ops.error_shape import cut
from app.ops.file_lock import file_locked
from app.runtime.rollout import Rollout
from app.runtime.store import read_json_object
from app.runtime.version_policy import POLICY_FILE, ROLLOUT, SHARES, VersionPolicy

log = logging.getLogger(__name__)

_generation = multiprocessing.RawValue("q", 0)
_directory = Path(tempfile.mkdtemp(prefix="model-server-rollouts-"))
_owner = os.getpid()
atexit.register(lambda: os.getpid() == _owner and shutil.rmtree(_directory, True))
# How long a change waits for another to finish.
LOCK_SECONDS = 5.0


class RolloutError(Exception):
    """A rollout change refused, with the HTTP status it answers (gRPC maps it)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def current(app: Flask, name: str) -> dict:
    """Model ``name``'s rollout as this worker routes by it, with the versions served."""
    runner = _runner(app, name)
    return {
        "name": name,
        "versions": [str(served.number) for served in runner.served],
        **runner.bundle.rollout.entry(),
    }


def change(app: Flask, name: str, entry) -> dict:
    """Make ``entry`` (``labels``, ``weights``, ``shadow``; what it leaves out is removed)
    model ``name``'s rollout on every worker and in ``version_policy.json``; the rollout
    in force. ``RolloutError`` when it does not hold together, and then nothing changes."""
    path, keyed = policy_file(app.config)
    runner = _runner(app, name)
    rollout = _parsed(name, entry, runner)
    with _locked():
        try:
            content = read_json_object(path) or {}
        except (OSError, ValueError) as error:
            raise RolloutError(400, f"{path}: {error}") from None
        entries = content if keyed else {name: content}
        kept = {key: value for key, value in entries.get(name, {}).items() if key in SHARES}
        entries[name] = {**kept, **entry}
        if not entries[name]:  # No policy and no rollout left: the default.
            del entries[name]
        content = entries if keyed else entries.get(name, {})
        partial = path.with_name(f".{POLICY_FILE}.{os.getpid()}")
        partial.write_text(json.dumps(content, indent=2) + "\n")
        partial.rename(path)
        notes = _notes()
        notes[name] = entry
        _write(notes)
        _apply(app, name, rollout)
        serving_state(app).rollouts = _generation.value
    log.info("model %s: rollout changed to %s", name, rollout.entry(), extra={"model": name})
    return current(app, name)


def policy_file(config) -> tuple[Path, bool]:
    """The file a rollout is written to, and whether it holds entries by model name (a
    repository's) or one model's entry (beside a MODEL_DIR's versions); ``RolloutError``
    for a source this server cannot write."""
    store = config["REPOSITORY_STORE"] or config["MODEL_STORE"]
    if store:
        raise RolloutError(
            400,
            f"The models are in {store}: change the model's entry in its {POLICY_FILE} "
            "there, then reload.",
        )
    if config["MODEL_REPOSITORY"]:
        return Path(config["MODEL_REPOSITORY"]) / POLICY_FILE, True
    if config["MODEL_URI"]:
        raise RolloutError(
            400, "A model from an MLflow registry (MODEL_URI) serves one version: no rollout."
        )
    return Path(config["MODEL_DIR"]) / POLICY_FILE, False


def generation() -> int:
    """The rollouts' generation: raised by every change and by a start or reload."""
    return _generation.value


def catch_up(app: Flask) -> None:
    """In a worker, before it serves a request: take up rollouts changed since it looked."""
    state = serving_state(app)
    generation = _generation.value
    for name, entry in _notes().items():
        runner = state.runners.get(name)
        if runner is None:
            continue
        try:
            _apply(app, name, _parsed(name, entry, runner))
        except RolloutError as error:  # Versions that changed since: the reload's rollout holds.
            log.warning("model %s: a noted rollout no longer applies: %s", name, error.message)
    state.rollouts = generation


def cleared(app: Flask) -> None:
    """In the master, once a start or reload has read version_policy.json: notes made before
    are in the file, and the workers it forks start from it."""
    with _locked(timeout=None):
        _write({})
    serving_state(app).rollouts = _generation.value


def _runner(app: Flask, name: str):
    state = serving_state(app)
    runner = state.runners.get(name)
    if runner is None:
        raise RolloutError(404, f"Model {cut(name)!r} is not served.")
    return runner


def _parsed(name: str, entry, runner) -> Rollout:
    if not isinstance(entry, dict) or not entry.keys() <= set(ROLLOUT):
        raise RolloutError(
            400, 'A rollout is an object with "labels", "weights" and "shadow", each optional.'
        )
    try:
        policy = VersionPolicy.parse(name, entry) if entry else VersionPolicy()
    except ValueError as error:  # It names the model first.
        raise RolloutError(400, f"Model {error}") from None
    try:
        return policy.rollout(runner.bundle.served)
    except ValueError as error:
        raise RolloutError(400, f"Model {name!r}: {error}") from None


def _apply(app: Flask, name: str, rollout: Rollout) -> None:
    state = serving_state(app)
    runner = state.runners[name]
    runner.bundle.rollout = rollout
    attach_shadow(state, runner)


def _notes() -> dict:
    try:
        return json.loads((_directory / "rollouts.json").read_text())
    except FileNotFoundError:
        return {}


def _write(notes: dict) -> None:
    partial = _directory / ".rollouts.json"
    partial.write_text(json.dumps(notes))
    partial.rename(_directory / "rollouts.json")
    _generation.value += 1


def _locked(timeout: float | None = LOCK_SECONDS):
    """One change at a time across processes; 503 for a worker once ``timeout`` passes."""
    busy = partial(RolloutError, 503, "Another rollout change is still running; retry shortly.")
    return file_locked(_directory / "lock", timeout, busy)
