"""Models from an MLflow registry: ``MODEL_URI=models:/<name>@<alias>`` or ``.../<version>``.

Runs in the loader's child process (app/runtime/loader.py), with its deadline: resolve
the alias or version, download exactly what the registry says that version is
into ``MODEL_CACHE_DIR`` and hand the directory to the same load-time checks as
any version. Needs the ``registry`` extra (mlflow-skinny) and
``MLFLOW_TRACKING_URI``; the local directory store needs neither.

A cached copy is keyed by the version's identity in the registry (tracking
server, name, version, run id, source, creation time), never by its number
alone: a model deleted and registered again, or two tracking servers sharing
one cache, never serve each other's files under the wrong name. Credentials
in the tracking URI are never shown or stored.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from app.runtime.store import ModelVersion

URI = re.compile(
    r"models:/(?P<name>[A-Za-z0-9._-]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d{1,18}))"
)
REGISTRY_FILE = "registry.json"
# The registry's answers that mean "no such thing": anything else is no usable answer.
REFUSALS = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class RegistryUnreachable(Exception):
    """No usable answer (refused, slow, garbled): a cached copy may serve instead, at start."""


class RegistryRefused(Exception):
    """The registry answered, and what it said cannot be served (no such model, alias, version)."""


@dataclass(frozen=True)
class ModelUri:
    name: str
    alias: str | None
    version: int | None

    @classmethod
    def parse(cls, text: str) -> "ModelUri":
        match = URI.fullmatch(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not models:/<name>@<alias> or models:/<name>/<version>")
        version = match["version"]
        return cls(match["name"], match["alias"], int(version) if version else None)

    def __str__(self) -> str:
        return (
            f"models:/{self.name}@{self.alias}"
            if self.alias
            else f"models:/{self.name}/{self.version}"
        )

    @property
    def pointer(self) -> str:
        """The cache file that remembers which copy this URI last resolved to."""
        return f"@{self.alias}.json" if self.alias else f"{self.version}.json"


def redact(text: str, uri: str | None = None) -> str:
    """``text`` with the credentials of ``uri`` (default: MLFLOW_TRACKING_URI) masked."""
    uri = uri if uri is not None else os.environ.get("MLFLOW_TRACKING_URI", "")
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return text
    userinfo = parts.netloc.rsplit("@", 1)[0]
    return text.replace(f"{userinfo}@", "***@")


def public_uri(uri: str) -> str:
    """A tracking URI without its user name and password."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


@contextmanager
def deadline(seconds: float, what: str, error: type[Exception] | None = None):
    """Raise ``error`` (``RegistryUnreachable``) in this process once ``seconds`` pass.

    The loader's child is single-threaded, so a timer signal can interrupt a
    socket read: a registry that trickles one byte every two seconds never
    trips a per-read timeout, but it trips this.
    """

    def expire(signum, frame):
        raise (error or RegistryUnreachable)(
            f"{what} took longer than MODEL_REGISTRY_TIMEOUT={seconds:g} s"
        )

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fetch(uri: ModelUri, cache_dir: Path, timeout: float) -> tuple[ModelVersion, dict]:
    """Resolve ``uri`` in the registry and return its verified local copy and its facts.

    Resolving and downloading share ``timeout`` seconds (MODEL_REGISTRY_TIMEOUT).
    """
    # Fail fast in this child: the deadline, not MLflow's retries, bounds the wait.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # Its progress bar is not a log line.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    tracking = public_uri(mlflow.get_tracking_uri())
    with deadline(timeout, f"the registry at {tracking}"):
        try:
            found, download_uri = resolve(mlflow.MlflowClient(), uri)
        except RegistryUnreachable:
            raise
        except Exception as error:  # noqa: BLE001 - MLflow, requests, JSON: all mean "no answer".
            raise _classified(error, uri, tracking) from None
        identity = {
            "tracking_uri": tracking,
            "registered_model": uri.name,
            "version": int(found.version),
            "run_id": found.run_id,
            "source": redact(str(found.source)),
            "created": found.creation_timestamp,
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        target = cache_dir / uri.name / f"{identity['version']}-{key}"
        if _cached_identity(target) != identity:
            try:
                download(download_uri, target)
            except RegistryUnreachable:
                raise
            except Exception as error:  # noqa: BLE001 - any failure to fetch the files.
                raise _classified(error, uri, tracking) from None
    facts = {**identity, "alias": uri.alias}
    (target / REGISTRY_FILE).write_text(json.dumps({**facts, "identity": identity}, indent=2))
    remember(cache_dir / uri.name, uri, target.name)
    return ModelVersion(uri.name, identity["version"], target), {**facts, "served_from": "registry"}


def resolve(client, uri: ModelUri):
    """The registered version ``uri`` names, and the URI of its files (what its source names)."""
    if uri.alias:
        found = client.get_model_version_by_alias(uri.name, uri.alias)
    else:
        found = client.get_model_version(uri.name, str(uri.version))
    return found, client.get_model_version_download_uri(uri.name, found.version)


def _classified(error: Exception, uri: ModelUri, tracking: str) -> Exception:
    """A registry error as "refused" (no such model, alias, version) or "no usable answer"."""
    message = redact(str(getattr(error, "message", None) or error)).splitlines()[0][:300]
    if getattr(error, "error_code", None) in REFUSALS:
        return RegistryRefused(f"MODEL_URI {uri}: {message}")
    return RegistryUnreachable(f"MLflow at {tracking}: {type(error).__name__}: {message}")


def _cached_identity(target: Path) -> dict | None:
    try:
        return json.loads((target / REGISTRY_FILE).read_text()).get("identity")
    except (OSError, ValueError, AttributeError):
        return None


def download(artifact_uri: str, target: Path) -> None:
    """What ``artifact_uri`` names into ``target``, appearing atomically."""
    import mlflow

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri, dst_path=str(staging)))
        if not local.is_dir():
            raise RegistryRefused(f"{redact(artifact_uri)} is a file, not a model directory")
        shutil.rmtree(target, ignore_errors=True)
        local.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remember(model_cache: Path, uri: ModelUri, directory: str) -> None:
    """Point ``uri`` at ``directory`` and keep only what some URI serves or rolls back to.

    Each URI's pointer keeps its current copy and the one before it (what a
    rollback needs); every other copy of this model is removed.
    """
    pointer = model_cache / uri.pointer
    previous = _read_pointer(pointer)
    kept = [directory] + [name for name in (previous or {}).get("keep", []) if name != directory]
    pointer.write_text(json.dumps({"directory": directory, "keep": kept[:2]}) + "\n")
    wanted = set()
    for other in model_cache.glob("*.json"):
        wanted.update((_read_pointer(other) or {}).get("keep", []))
    for copy in model_cache.iterdir():
        if copy.is_dir() and not copy.name.startswith(".") and copy.name not in wanted:
            shutil.rmtree(copy, ignore_errors=True)


def _read_pointer(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def cached(uri: ModelUri, cache_dir: Path, why: str) -> tuple[ModelVersion, dict]:
    """The copy ``uri`` last resolved to, for when the registry gives no usable answer."""
    try:
        directory = _read_pointer(cache_dir / uri.name / uri.pointer)["directory"]
        target = cache_dir / uri.name / directory
        facts = json.loads((target / REGISTRY_FILE).read_text())
        version = int(facts["version"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RegistryRefused(
            f"{why}; and no cached copy of {uri} in {cache_dir} ({error})"
        ) from None
    facts.pop("identity", None)
    return ModelVersion(uri.name, version, target), {**facts, "served_from": f"cache ({why})"}
