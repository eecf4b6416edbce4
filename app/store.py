"""The model store: ``<MODEL_DIR>/<version>/`` directories holding a saved model."""

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

# Keras' native format first, then the notebook's legacy HDF5 file.
MODEL_SUFFIXES = (".keras", ".h5")
# metadata.json holds facts and the input profile: kilobytes, never this much.
MAX_METADATA_BYTES = 4 * 1024 * 1024


class StoreError(Exception):
    """The model store holds nothing that could be served."""


@dataclass(frozen=True)
class ModelVersion:
    """One version directory of a model in the store."""

    name: str
    number: int
    path: Path

    @property
    def model_file(self) -> Path:
        """The saved Keras model inside the version directory."""
        return find_model_file(self.path)

    def read_metadata(self) -> dict:
        """The version's ``metadata.json``, or ``{}`` when there is none."""
        path = self.path / "metadata.json"
        try:
            facts = os.stat(path)
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise StoreError(f"{path}: unreadable metadata ({error})") from error
        if not stat.S_ISREG(facts.st_mode) or facts.st_size > MAX_METADATA_BYTES:
            raise StoreError(f"{path}: not a regular file of at most {MAX_METADATA_BYTES:,} bytes")
        try:
            metadata = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as error:
            raise StoreError(f"{path}: unreadable metadata ({error})") from error
        if not isinstance(metadata, dict):
            raise StoreError(f"{path}: metadata is not a JSON object")
        return metadata


def find_model_file(directory: Path) -> Path:
    """The saved Keras model in a directory: ``.keras`` first, then the legacy ``.h5``."""
    for suffix in MODEL_SUFFIXES:
        candidates = sorted(directory.glob(f"*{suffix}"))
        if candidates:
            return candidates[0]
    raise StoreError(f"{directory}: no model file (*.keras or *.h5)")


def list_versions(model_dir: Path | str) -> list[ModelVersion]:
    """All version directories under ``model_dir``, newest first.

    Only directories named by a non-negative integer count, as in TensorFlow
    Serving; anything else (a half-written ``.3.partial``, notes) is ignored.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise StoreError(f"{model_dir}: model directory does not exist")
    versions = [
        ModelVersion(name=model_dir.resolve().name, number=int(child.name), path=child)
        for child in model_dir.iterdir()
        if child.is_dir() and child.name.isdigit() and child.name.isascii()
    ]
    if not versions:
        raise StoreError(f"{model_dir}: no model versions (expected <MODEL_DIR>/<integer>/)")
    return sorted(versions, key=lambda version: version.number, reverse=True)


def next_version_number(model_dir: Path) -> int:
    """The number a newly trained version should get: one past the highest."""
    try:
        return list_versions(model_dir)[0].number + 1
    except StoreError:
        return 1
