"""Models from an MLflow registry: ``MODEL_URI=models:/<name>@<alias>`` or ``.../<version>``.

Runs in the loader's child process (app/loader.py), with its deadline: resolve
the alias or version, download that version's artifacts into ``MODEL_CACHE_DIR``
(once; a verified copy is reused) and hand the directory to the same load-time
checks as any version. Needs the ``registry`` extra (mlflow-skinny) and
``MLFLOW_TRACKING_URI``; the local directory store needs neither.
"""

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app.store import ModelVersion

URI = re.compile(
    r"models:/(?P<name>[A-Za-z0-9._-]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))"
)
# The directory of the version inside a training run's artifacts (training/registry.py).
ARTIFACT_PATH = "model"
REGISTRY_FILE = "registry.json"


class RegistryUnreachable(Exception):
    """The tracking server did not answer: a cached copy may serve instead (at start only)."""


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
        """The cache file that remembers which version this URI last resolved to."""
        return f"@{self.alias}.json" if self.alias else f"{self.version}.json"


def fetch(uri: ModelUri, cache_dir: Path) -> tuple[ModelVersion, dict]:
    """Resolve ``uri`` in the registry and return its verified local copy and its registry facts."""
    # Fail fast in this child: the loader's deadline, not MLflow's retries, bounds the wait.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # Its progress bar is not a log line.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        if uri.alias:
            found = client.get_model_version_by_alias(uri.name, uri.alias)
        else:
            found = client.get_model_version(uri.name, str(uri.version))
    except MlflowException as error:
        if _unreachable(error):
            raise RegistryUnreachable(f"MLflow at {mlflow.get_tracking_uri()}: {error}") from None
        raise RegistryRefused(f"MODEL_URI {uri}: {error.message}") from None
    version = int(found.version)
    target = cache_dir / uri.name / str(version)
    if not (target / REGISTRY_FILE).is_file():
        download(client, found.run_id, target)
    facts = {
        "registered_model": uri.name,
        "version": version,
        "alias": uri.alias,
        "run_id": found.run_id,
        "source": found.source,
        "tracking_uri": mlflow.get_tracking_uri(),
    }
    (target / REGISTRY_FILE).write_text(json.dumps(facts, indent=2) + "\n")
    (cache_dir / uri.name / uri.pointer).write_text(json.dumps({"version": version}) + "\n")
    return ModelVersion(uri.name, version, target), {**facts, "served_from": "registry"}


def download(client, run_id: str, target: Path) -> None:
    """The run's version directory into ``target``, appearing atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        local = Path(client.download_artifacts(run_id, ARTIFACT_PATH, str(staging)))
        shutil.rmtree(target, ignore_errors=True)
        local.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cached(uri: ModelUri, cache_dir: Path, why: str) -> tuple[ModelVersion, dict]:
    """The copy ``uri`` last resolved to, for when the registry cannot be reached."""
    pointer = cache_dir / uri.name / uri.pointer
    try:
        version = int(json.loads(pointer.read_text())["version"])
        target = cache_dir / uri.name / str(version)
        facts = json.loads((target / REGISTRY_FILE).read_text())
    except (OSError, ValueError, KeyError) as error:
        raise RegistryRefused(
            f"{why}; and no cached copy of {uri} in {cache_dir} ({error})"
        ) from None
    return ModelVersion(uri.name, version, target), {**facts, "served_from": f"cache ({why})"}


def _unreachable(error) -> bool:
    text = str(error)
    return any(
        sign in text
        for sign in (
            "Max retries exceeded",
            "Connection refused",
            "Failed to establish",
            "timed out",
            "ConnectionError",
        )
    )
