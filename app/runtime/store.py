"""The model store: ``<MODEL_DIR>/<version>/`` directories holding a saved model."""

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from app.runtime.artifact import SAVED_MODEL_DIR

# Keras' native format first, then the notebook's legacy HDF5 file.
MODEL_SUFFIXES = (".keras", ".h5")
# TensorFlow Serving's format: a directory holding this file.
SAVED_MODEL_FILE = "saved_model.pb"
# metadata.json holds facts and the input profile: kilobytes, never this much.
MAX_METADATA_BYTES = 4 * 1024 * 1024
# Nesting deeper than this in metadata.json is refused (the notebook's is 3 deep).
MAX_METADATA_DEPTH = 32
# Versions are int64, as in TensorFlow Serving.
MAX_VERSION = 2**63 - 1


class StoreError(Exception):
    """The model store holds nothing that could be served."""


@dataclass(frozen=True)
class ModelVersion:
    """One version directory of a model in the store."""

    name: str
    number: int
    path: Path
    # Why this directory cannot be a version (an ambiguous or oversized number).
    problem: str | None = None

    @property
    def model_file(self) -> Path:
        """The saved model inside the version directory: a file or a SavedModel directory."""
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
        if nesting(metadata) > MAX_METADATA_DEPTH:
            raise StoreError(f"{path}: metadata is nested over {MAX_METADATA_DEPTH} levels deep")
        return metadata


def find_model_file(directory: Path) -> Path:
    """The saved model in a version directory: a ``.keras`` file first, then the legacy
    ``.h5``, then a SavedModel: the directory itself or a subdirectory holding
    ``saved_model.pb`` (the compiled TensorFlow runtime's copy aside)."""
    for suffix in MODEL_SUFFIXES:
        candidates = sorted(directory.glob(f"*{suffix}"))
        if candidates:
            return candidates[0]
    if (directory / SAVED_MODEL_FILE).is_file():
        return directory
    saved = sorted(
        found.parent
        for found in directory.glob(f"*/{SAVED_MODEL_FILE}")
        if found.parent.name != SAVED_MODEL_DIR
    )
    if saved:
        return saved[0]
    raise StoreError(f"{directory}: no model (*.keras, *.h5 or a SavedModel's {SAVED_MODEL_FILE})")


def nesting(value) -> int:
    """How deeply lists and objects nest in a JSON value, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_METADATA_DEPTH:
                children = item.values() if isinstance(item, dict) else item
                stack.extend((child, depth + 1) for child in children)
    return deepest


def model_name(model_dir: Path | str) -> str:
    """The model's name from its directory as given: a symlink's target never renames it."""
    return Path(model_dir).absolute().name


def list_versions(model_dir: Path | str, name: str | None = None) -> list[ModelVersion]:
    """All version directories under ``model_dir``, newest first, named ``name``.

    Only directories named by a non-negative integer count, as in TensorFlow
    Serving; anything else (a half-written ``.3.partial``, notes) is ignored.
    Two directories for one number (``1`` and ``01``) are both listed with a
    problem, so neither is served: which one was meant cannot be known.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise StoreError(f"{model_dir}: model directory does not exist")
    name = name or model_name(model_dir)
    found: dict[int, list[Path]] = {}
    for child in model_dir.iterdir():
        if child.is_dir() and child.name.isdigit() and child.name.isascii():
            found.setdefault(int(child.name), []).append(child)
    if not found:
        raise StoreError(f"{model_dir}: no model versions (expected <MODEL_DIR>/<integer>/)")
    versions = []
    for number, paths in found.items():
        problem = None
        if len(paths) > 1:
            spellings = " and ".join(sorted(path.name for path in paths))
            problem = f"directories {spellings} both name version {number}; rename one"
        elif number > MAX_VERSION:
            problem = f"version {number} is beyond the largest version number, 2^63 - 1"
        versions += [ModelVersion(name, number, path, problem) for path in sorted(paths)]
    return sorted(versions, key=lambda version: version.number, reverse=True)


def next_version_number(model_dir: Path) -> int:
    """The number a newly trained version should get: one past the highest."""
    try:
        return list_versions(model_dir)[0].number + 1
    except StoreError:
        return 1


# Files at a repository's root beside its models: registry models, version policies.
ROOT_FILES = ("registry.json", "version_policy.json")
# A model's name, as an URL path segment and a gRPC field carry it unescaped; short enough
# for a directory's name (255 bytes) with room for the mirror's staging prefixes.
MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


def is_model_name(name: str) -> bool:
    """Whether ``name`` can name a repository's model: URL-safe, not hidden, not too long."""
    return MODEL_NAME.fullmatch(name) is not None and not name.startswith(".")


def list_models(root: Path | str, max_models: int) -> tuple[dict[str, Path], list[str]]:
    """The model stores under a repository root, ``{name: <root>/<name>}`` by name, and the
    directories left out because an URL cannot carry their names (as ``ascii()`` shows them).

    Every sub-directory is a model, named by its directory, as in TensorFlow
    Serving's and Triton's repositories; hidden ones (``.cache``) are not. More
    than ``max_models`` refuses the whole repository: the bound keeps memory known.
    """
    root = Path(root)
    if not root.is_dir():
        raise StoreError(f"{root}: model repository does not exist")
    found = sorted(
        child for child in root.iterdir() if child.is_dir() and not child.name.startswith(".")
    )
    if len(found) > max_models:
        raise StoreError(f"{root}: {len(found)} models, over MAX_MODELS={max_models}")
    models = {path.name: path for path in found if MODEL_NAME.fullmatch(path.name)}
    return models, [ascii(path.name) for path in found if path.name not in models]


def read_json_object(path: Path) -> dict | None:
    """A small file's JSON object (at most MAX_METADATA_BYTES); None without the file.
    ``ValueError`` or ``OSError`` when it is not one."""
    if not path.exists():
        return None
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise ValueError(f"over {MAX_METADATA_BYTES:,} bytes")
    try:
        value = json.loads(path.read_text())
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def fingerprint(root: Path | str) -> int:
    """A number that changes when a repository's models, versions or files do: its
    directories' and files' names, sizes and modification times, three levels deep
    (``<name>/<version>/<file>``), and ``registry.json``'s and ``version_policy.json``'s."""
    digest = hashlib.blake2b(digest_size=8)
    root = Path(root)
    files = [root / name for name in ROOT_FILES]
    for path in sorted(chain(files, root.glob("*/*/*"))):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # A version being written (.3.partial), a cache.
        try:
            facts = path.stat()
        except OSError:
            continue
        digest.update(f"{path.relative_to(root)}\0{facts.st_size}\0{facts.st_mtime_ns}\n".encode())
    return int.from_bytes(digest.digest(), "big", signed=True)
