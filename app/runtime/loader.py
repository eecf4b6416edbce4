"""Find and verify the version to serve, each step in a throwaway child with a deadline.

The Gunicorn master calls ``load_newest`` at start and on every reload; the
workers it forks afterwards build their runtime from the returned bundle.
Doing the work in a child process keeps the master free of TensorFlow (which
converting an uncompiled version needs) and of LiteRT, and lets it give up
on a step that blocks, such as reading a file on a hung network file system:
the child is killed and the version counts as not loadable.
"""

import dataclasses
import os
import pickle
import select
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from importlib.util import find_spec
from pathlib import Path

from app.ops.error_shape import bounded
from app.ops.json_provider import json_safe
from app.runtime import artifact
from app.runtime.artifact import ArtifactError
from app.runtime.graph_ops import first_denied
from app.runtime.input_profile import ProfileError, profiled_features
from app.runtime.limits import Limits
from app.runtime.model import ModelBundle, ModelLoadError, ModelRunner
from app.runtime.model_code import CodePolicy
from app.runtime.store import (
    SAVED_MODEL_FILE,
    ModelVersion,
    StoreError,
    fingerprint,
    is_model_name,
    list_models,
    list_versions,
    read_json_object,
)
from app.runtime.version_policy import LATEST, POLICY_FILE, VersionPolicy, read_policies

DEFAULT_LIMITS = Limits()
# Past ten messages about versions that did not load, the rest are counted as these.
NOT_LOADING = "versions that do not load"
# Beside a repository's directories: the registry models it serves, by name.
REGISTRY_FILE = "registry.json"


class LoadTimeout(ModelLoadError):
    """A loading step did not finish within MODEL_LOAD_TIMEOUT."""


def run_with_deadline(function: Callable, timeout: float, *args):
    """``function(*args)`` run in a child process: its result, or its error re-raised here.

    Past ``timeout`` seconds the child is killed and ``LoadTimeout`` raised.
    """
    for kind, value in child_messages(partial(_send_result, function, args), timeout):
        if kind == "result":
            return value
    raise ModelLoadError("the loading process died without an answer")


def _send_result(function: Callable, args: tuple, send) -> None:
    send("result", function(*args))


def child_messages(work: Callable, timeout: float):
    """Run ``work(send)`` in a child process and yield each ``(kind, value)`` it sends.

    Every message restarts the deadline; past it, the child is killed and
    ``LoadTimeout`` raised. An error in the child arrives as ``ModelLoadError``.
    Messages travel pickled through a pipe, and both of its ends are ours.
    The child is forked, unless this process runs TensorFlow: its thread pools
    do not survive a fork (a runtime built in the child hangs), so the child
    is then a new interpreter (app/runtime/load_child.py) that reads ``work``
    pickled from a second pipe.
    """
    read_end, write_end = os.pipe()
    if "tensorflow" in sys.modules:
        pid = _spawn(work, write_end)
    else:
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            serve_child(work, write_end)
    os.close(write_end)
    reader = os.fdopen(read_end, "rb", buffering=0)
    try:
        while True:
            header = _read_exactly(reader, 8, timeout)
            if header is None:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                raise LoadTimeout(f"did not finish within MODEL_LOAD_TIMEOUT={timeout:g} s")
            if not header:
                return
            kind, value = pickle.loads(
                _read_exactly(reader, int.from_bytes(header, "big"), timeout)
            )
            if kind == "error":
                raise ModelLoadError(value)
            yield kind, value
    finally:
        reader.close()
        _reap(pid)


def serve_child(work: Callable, answer_fd: int) -> None:
    """In the child: run ``work(send)``, report every failure, and leave without cleanup."""
    pipe = os.fdopen(answer_fd, "wb")

    def send(kind, value=None):
        payload = pickle.dumps((kind, value))
        pipe.write(len(payload).to_bytes(8, "big") + payload)
        pipe.flush()

    try:
        work(send)
    except BaseException as error:  # noqa: BLE001 - every failure must reach the parent.
        known = isinstance(error, ModelLoadError | StoreError | ArtifactError)
        send("error", str(error) if known else f"{type(error).__name__}: {error}")
    pipe.close()
    os._exit(0)


def _spawn(work: Callable, answer_fd: int) -> int:
    """Start a new interpreter that runs ``work`` and answers on ``answer_fd``; its pid."""
    work_read, work_write = os.pipe()
    for fd in (work_read, answer_fd):
        os.set_inheritable(fd, True)
    command = [sys.executable, "-m", "app.runtime.load_child", str(work_read), str(answer_fd)]
    try:
        pid = os.posix_spawn(sys.executable, command, os.environ)
    finally:
        os.close(work_read)
    with os.fdopen(work_write, "wb") as pipe:
        pipe.write(pickle.dumps(work))
    return pid


def _read_exactly(reader, size: int, timeout: float) -> bytes | None:
    """``size`` bytes, b"" at end of stream, or None when ``timeout`` passes first."""
    chunks, needed, deadline = [], size, time.monotonic() + timeout
    while needed:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([reader], [], [], remaining)[0]:
            return None
        chunk = reader.read(needed)
        if not chunk:
            return b""
        chunks.append(chunk)
        needed -= len(chunk)
    return b"".join(chunks)


def _reap(pid: int) -> None:
    # A child stuck in the kernel (a hung NFS read) may not die at once; never wait on it.
    for _ in range(20):
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:  # Already reaped.
            return
        time.sleep(0.01)


def load_version(version: ModelVersion, limits: Limits = DEFAULT_LIMITS) -> ModelBundle:
    """Read, verify and trial-run one version (in a child: may read files and import TensorFlow).

    Everything a worker will do with the version is done here first: build
    the interpreter, reproduce the golden outputs, run the largest batch a
    request can carry, parse the input profile its monitor watches.
    """
    started = time.perf_counter()
    if version.problem:
        raise ModelLoadError(f"{version.path}: {version.problem}")
    try:
        metadata = json_safe(version.read_metadata())
    except StoreError as error:
        raise ModelLoadError(str(error)) from error
    try:
        check_artifacts(version.path, metadata.get("artifacts"))
        if artifact.exists(version.path):
            compiled = artifact.read(version.path, limits.max_model_bytes)
            source = "compiled"
            check_graph(compiled, limits.code)
        else:  # Compiling refuses a denied op itself (compile_tensorflow).
            compiled, source = convert_at_load(version, limits.code), "converted at load"
    except ArtifactError as error:
        raise ModelLoadError(f"{version.path}: {error}") from error
    bundle = ModelBundle(version, metadata, compiled, source)
    bundle.max_batch = limits.max_batch(compiled)
    bundle.max_body_bytes = limits.body_bytes(compiled)
    if bundle.max_batch < 1:
        raise ModelLoadError(
            f"{version.path}: one instance has more numbers than "
            f"MAX_TENSOR_ELEMENTS={limits.max_tensor_elements:,}"
        )
    try:
        profiled_features(metadata, compiled.inputs)
    except ProfileError as error:
        raise ModelLoadError(f"{version.path}: {error}") from None
    ModelRunner.build(bundle, full_check=True)
    if bundle.largest_batch_seconds > limits.max_batch_seconds:
        raise ModelLoadError(
            f"{version.path}: its largest batch ({bundle.max_batch:,} instances) took "
            f"{bundle.largest_batch_seconds:.1f} s, over the {limits.max_batch_seconds:g} s an "
            "inference may take (half of GUNICORN_GRACEFUL_TIMEOUT, so that it finishes while "
            "its worker drains; for sync and gthread workers, of GUNICORN_TIMEOUT too): lower "
            "MAX_BATCH_SIZE or MAX_TENSOR_ELEMENTS"
        )
    bundle.load_seconds = time.perf_counter() - started
    return bundle


def check_artifacts(directory: Path, checksums) -> None:
    """The files metadata.json lists must be there with the SHA-256 it records.

    Only plain file names inside the version directory, regular files within
    the size bound, hashed as a stream.
    """
    if not isinstance(checksums, dict):
        return  # A version written before training recorded checksums.
    for name, expected in checksums.items():
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
            raise ArtifactError(f"metadata.json lists {name!r}, which is not a file name")
        actual = artifact.sha256_file(directory / name, artifact.MAX_ARTIFACT_BYTES)
        if actual != expected:
            raise ArtifactError(f"{name} has SHA-256 {actual}, metadata says {expected}")


def check_graph(compiled, policy: CodePolicy) -> None:
    """Refuse a compiled TensorFlow-runtime artifact whose graph runs an op ``policy`` does not
    allow: it was compiled elsewhere, perhaps where the op was allowed."""
    if compiled.runtime == "tensorflow":
        refused = first_denied(compiled.saved_model.get(SAVED_MODEL_FILE, b""), policy.graph_ops)
        if refused:
            raise ArtifactError(f"the compiled SavedModel cannot be served: {refused}")


def convert_at_load(version: ModelVersion, policy: CodePolicy):
    """Compile a version that has no artifact, when TensorFlow is installed."""
    hint = f"compile it with `python -m training compile {version.path}`"
    if find_spec("tensorflow") is None:
        raise ArtifactError(f"no compiled artifact and no TensorFlow to convert it: {hint}")
    from app.runtime.compiler import compile_model
    from app.runtime.saved_models import load_model

    model = load_model(version.model_file, policy)
    return compile_model(model, policy=policy)


def load_newest(
    model_dir: Path,
    pinned: int | None,
    timeout: float,
    limits: Limits = DEFAULT_LIMITS,
    name: str | None = None,
    policy: VersionPolicy = LATEST,
) -> ModelBundle:
    """The newest version that loads (or exactly the pinned one), with why newer ones did not;
    with a ``policy`` serving several, the others that load are its ``older``.

    Each version gets ``timeout`` seconds; one that takes longer counts as not
    loadable and the next older one is tried. Raises ``ModelLoadError``
    naming the causes when nothing can be served.
    """
    try:
        versions = run_with_deadline(list_versions, timeout, model_dir, name)
    except LoadTimeout as error:
        raise ModelLoadError(f"{model_dir}: listing versions {error}") from error
    if pinned is not None:
        versions = [version for version in versions if version.number == pinned]
        if not versions:
            raise ModelLoadError(f"{model_dir}: pinned MODEL_VERSION {pinned} not found")
    versions, missing = policy.candidates(versions)
    failures = [f"{model_dir}: version {number} not found" for number in missing]
    bundles = []
    while versions and len(bundles) < policy.wanted:
        tried = len(versions)
        try:
            attempt = partial(try_versions, versions, limits, policy.wanted - len(bundles))
            for kind, value in child_messages(attempt, timeout):
                versions = versions[1:]
                if kind == "failed":
                    failures.append(value)
                elif kind == "loaded":
                    bundles.append(value)
        except LoadTimeout as error:  # The version being tried hung: skip it, go on.
            failures.append(f"{versions[0].path}: {error}")
            versions = versions[1:]
        if len(versions) == tried:  # The child died (a crash in a runtime) before a word.
            failures.append(f"{versions[0].path}: the loading process died without an answer")
            versions = versions[1:]
    if not bundles:
        error = ModelLoadError("; ".join(bounded(failures, NOT_LOADING)))
        error.failures = failures
        raise error
    newest = bundles[0]
    newest.older = bundles[1:]
    newest.skipped = bounded(failures, NOT_LOADING)
    newest.failure_count = len(failures)
    try:
        newest.rollout = policy.rollout(bundles)
    except ValueError as error:  # The file does not hold together: what serves keeps serving.
        raise ModelLoadError(f"{model_dir}: {POLICY_FILE}: {error}") from None
    return newest


def load_repository(
    root: Path,
    max_models: int,
    timeout: float,
    limits: Limits = DEFAULT_LIMITS,
    names: set[str] | None = None,
    registry: tuple | None = None,
) -> tuple[dict[str, ModelBundle], dict[str, ModelLoadError], list[str]]:
    """Every model under a repository root (or those ``names`` names), each as
    ``load_newest`` loads a MODEL_DIR (the versions ``<root>/version_policy.json``
    names for it), and each model ``<root>/registry.json`` names, from MLflow as
    a MODEL_URI loads (``registry``: the cache directory, the timeouts and
    whether the cache may stand in).

    Returns the bundles that loaded by name, the error of each model none of
    whose versions did, and the directories left out for their names. Raises
    ``ModelLoadError`` when the root cannot be listed, holds too many models or
    an unreadable registry.json or version_policy.json. Models load side by
    side, one share per core, each share in a process forked from this one
    (never from a thread: a fork in a threaded process can inherit a lock
    another thread holds, and hang).
    """
    try:
        found, ignored = run_with_deadline(list_models, timeout, root, max_models)
        uris = run_with_deadline(registered_models, timeout, root)
        policies = run_with_deadline(read_policies, timeout, root)
    except LoadTimeout as error:
        raise ModelLoadError(f"{root}: listing models {error}") from error
    loaded: dict[str, ModelBundle | ModelLoadError] = {}
    models = {
        name: partial(load_newest, path, None, timeout, limits, name, policies.get(name, LATEST))
        for name, path in found.items()
    }
    for name, uri in uris.items():
        if name in found:
            loaded[name] = ModelLoadError(f"{root}: {name} is a directory and in {REGISTRY_FILE}")
        elif name in policies:
            loaded[name] = ModelLoadError(
                f"{root}: {name} is in {REGISTRY_FILE}, whose URI names its version, "
                f"and in {POLICY_FILE}"
            )
        elif registry is not None:
            models[name] = partial(load_registered_as, name, uri, *registry, limits)
    if names is not None:
        for name in names - models.keys() - loaded.keys():
            loaded[name] = ModelLoadError(f"{root / name}: not in the repository")
        models = {name: load for name, load in models.items() if name in names}
    loaders = os.cpu_count() or 1
    shares = [
        share for share in (list(models.items())[i::loaders] for i in range(loaders)) if share
    ]
    with tempfile.TemporaryDirectory(prefix="model-server-load-") as scratch:
        answers = [Path(scratch) / str(index) for index in range(len(shares))]
        pids = [_fork_share(*job) for job in zip(shares, answers, strict=True)]
        for pid in pids:
            # Each model's load has its own deadline in the share. On a reload,
            # Gunicorn's SIGCHLD handler may have reaped the share already.
            with suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for share, answer in zip(shares, answers, strict=True):
            if answer.exists():
                with answer.open("rb") as file:
                    loaded.update(pickle.load(file))
            else:
                died = "the loading process died without an answer"
                loaded.update({name: ModelLoadError(died) for name, _ in share})
    bundles = {name: value for name, value in loaded.items() if isinstance(value, ModelBundle)}
    failed = {name: value for name, value in loaded.items() if not isinstance(value, ModelBundle)}
    return bundles, failed, ignored


def _fork_share(share: list, answer: Path) -> int:
    """Fork a process that runs each ``(name, load)`` of ``share`` and pickles the results
    into ``answer``: ``{name: bundle or ModelLoadError}``."""
    pid = os.fork()
    if pid:
        return pid
    try:
        results = {}
        for name, load in share:
            try:
                results[name] = load()
            except ModelLoadError as error:
                results[name] = error
            except Exception as error:  # noqa: BLE001 - one model's failure is its own.
                results[name] = ModelLoadError(f"{name}: {type(error).__name__}: {error}")
        with answer.open("wb") as file:
            pickle.dump(results, file)
    finally:
        os._exit(0)


def registered_models(root: Path) -> dict[str, str]:
    """``<root>/registry.json``'s ``{name: "models:/..."}``: the registry models a repository
    serves beside its directories; ``{}`` without the file. ``ModelLoadError`` when it is
    not such an object."""
    from app.runtime.registry import ModelUri

    path = root / REGISTRY_FILE
    try:
        entries = read_json_object(path) or {}
        for name, uri in entries.items():
            if not is_model_name(name):
                raise ValueError(f"{name!r} is not a model name (letters, digits, '.', '_', '-')")
            ModelUri.parse(uri if isinstance(uri, str) else repr(uri))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path}: {error}") from None
    return entries


def load_registered_as(
    name: str,
    uri: str,
    cache_dir: Path,
    timeouts: tuple[float, float],
    cache_allowed: bool,
    limits: Limits,
) -> ModelBundle:
    """A registry model of a repository, served under its entry's ``name``."""
    from app.runtime.registry import ModelUri

    bundle = load_registered(ModelUri.parse(uri), cache_dir, timeouts, cache_allowed, limits)
    bundle.version = dataclasses.replace(bundle.version, name=name)
    return bundle


def load_synced(
    store,
    mirror: Path,
    pinned: int | None,
    timeouts: tuple[float, float],
    cache_allowed: bool,
    limits: Limits = DEFAULT_LIMITS,
    name: str | None = None,
) -> ModelBundle:
    """The newest version that loads (or the pinned one) from an S3 store (an ``S3Uri``),
    once its versions are mirrored into ``mirror``.

    ``timeouts``: each step's, and the store part's (shorter). When the store
    gives no usable answer in time and ``cache_allowed`` (at start), the
    mirror as last synced is served, and ``/model`` says so.
    """
    served_from, _ = sync_mirror(store, mirror, timeouts, cache_allowed, limits)
    bundle = load_newest(mirror, pinned, timeouts[0], limits, name)
    bundle.store = {"uri": str(store), "served_from": served_from}
    return bundle


def sync_mirror(
    store,
    mirror: Path,
    timeouts: tuple[float, float],
    cache_allowed: bool,
    limits: Limits = DEFAULT_LIMITS,
    repository_bytes: int | None = None,
) -> tuple[str, dict[str, str]]:
    """Sync ``mirror`` from an S3 store (a model's, or with ``repository_bytes``, the bound on
    its total, a repository's), in a child with a deadline.

    Returns where the models are served from: ``"store"``, or ``"cache (store
    unreachable: ...)"`` when the store gives no usable answer, a copy is
    cached, and ``cache_allowed`` (at start); and the repository's models the
    mirror refused, with why. Else ``ModelLoadError``.
    """
    load_timeout, store_timeout = timeouts
    sizes = (limits.max_model_bytes, repository_bytes)
    try:
        unreachable, refused = run_with_deadline(
            _synced, load_timeout, store, mirror, store_timeout, sizes
        )
    except LoadTimeout as error:
        unreachable, refused = f"{store}: syncing {error}", {}
    if unreachable and not (cache_allowed and mirror.is_dir()):
        cached = "" if mirror.is_dir() else " and nothing is cached"
        raise ModelLoadError(f"the object store cannot be reached{cached}: {unreachable}")
    served_from = f"cache (store unreachable: {unreachable})" if unreachable else "store"
    return served_from, refused


def _synced(store, mirror: Path, timeout: float, sizes: tuple[int, int | None]):
    """In the child: sync the mirror; why the store could not be reached (or None), and the
    repository's models it refused."""
    from app.runtime import object_store

    version_bytes, repository_bytes = sizes
    try:
        if repository_bytes is not None:
            return None, object_store.sync_repository(
                store, mirror, timeout, version_bytes, repository_bytes
            )
        object_store.sync(store, mirror, timeout, version_bytes)
    except object_store.StoreUnreachable as error:
        return str(error), {}
    except object_store.StoreRefused as error:
        raise ModelLoadError(str(error)) from None
    return None, {}


def repository_fingerprint(root: Path, store, timeouts: tuple[float, float]) -> int:
    """A number that changes when the repository does: a local root's files (``store``
    None), or every object under an S3 prefix; in a child with a deadline, so a hung file
    system or a slow store never blocks the caller. ``ModelLoadError`` when unreadable."""
    load_timeout, store_timeout = timeouts
    if store is None:
        return run_with_deadline(fingerprint, load_timeout, root)
    return run_with_deadline(_store_fingerprint, load_timeout, store, store_timeout)


def prepare_fingerprints(store) -> None:
    """In a process that fingerprints the repository again and again (the poll's): import
    the object store's client once, not in each look's child."""
    if store is not None:
        import boto3  # noqa: F401


def _store_fingerprint(store, timeout: float) -> int:
    from app.runtime import object_store

    try:
        return object_store.fingerprint(store, timeout)
    except (object_store.StoreUnreachable, object_store.StoreRefused) as error:
        raise ModelLoadError(str(error)) from None


def try_versions(versions: list[ModelVersion], limits: Limits, wanted: int, send) -> None:
    """In the child: try each version in turn until ``wanted`` loaded, sending "failed" for
    each that does not load and "loaded" with the bundle of each that does."""
    for version in versions:
        try:
            bundle = load_version(version, limits)
        except (ModelLoadError, StoreError, ArtifactError) as error:
            message = str(error)
            send(
                "failed", message if str(version.path) in message else f"{version.path}: {message}"
            )
        except Exception as error:  # noqa: BLE001 - any stage of loading may fail.
            send("failed", f"{version.path}: {type(error).__name__}: {error}")
        else:
            send("loaded", bundle)
            wanted -= 1
            if not wanted:
                return


def load_registered(
    uri,
    cache_dir: Path,
    timeouts: tuple[float, float],
    cache_allowed: bool,
    limits: Limits = DEFAULT_LIMITS,
) -> ModelBundle:
    """The version ``uri`` (models:/name@alias or /version) names in MLflow, verified.

    ``timeouts``: the whole load's, and the registry part's (shorter). When the
    registry gives no usable answer in time and ``cache_allowed`` (at start),
    the copy the URI last resolved to is served from the cache, and ``/model``
    says so.
    """
    load_timeout, registry_timeout = timeouts
    try:
        return run_with_deadline(
            _registered, load_timeout, uri, cache_dir, registry_timeout, cache_allowed, limits
        )
    except LoadTimeout as error:
        raise ModelLoadError(f"{uri}: {error}") from error


def _registered(
    uri, cache_dir: Path, registry_timeout: float, cache_allowed: bool, limits: Limits
) -> ModelBundle:
    from app.runtime import registry

    try:
        version, facts = registry.fetch(uri, cache_dir, registry_timeout)
    except registry.RegistryUnreachable as error:
        if not cache_allowed:
            raise ModelLoadError(f"{uri}: the registry cannot be reached: {error}") from None
        try:
            version, facts = registry.cached(uri, cache_dir, f"registry unreachable: {error}")
        except registry.RegistryRefused as refused:
            raise ModelLoadError(str(refused)) from None
    except registry.RegistryRefused as error:
        raise ModelLoadError(str(error)) from None
    if not artifact.exists(version.path):
        command = f"python -m training compile models:/{version.name}/{version.number}"
        raise ModelLoadError(
            f"MODEL_URI {uri}: version {version.number} has no compiled artifact; `{command}` "
            "compiles it and registers the compiled copy as a new version"
        )
    bundle = load_version(version, limits)
    bundle.registry = facts
    return bundle
