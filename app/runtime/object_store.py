"""A model store in S3 (or an S3-compatible store): ``MODEL_DIR=s3://bucket/prefix``, or a
repository of them: ``MODEL_REPOSITORY=s3://bucket/prefix``.

The versions under the prefix (``<prefix>/<version>/...``, the layout ``make
train`` writes; a repository's ``<prefix>/<name>/<version>/...``) are
mirrored into a local directory, which is then served as a local store is:
the loader verifies each version's checksums as for any other. A version's
identity is its objects' ETags: a version whose objects changed in the store
is downloaded again, never served from an old copy. A repository's root
files (``registry.json``, ``version_policy.json``) are mirrored beside its models.
boto3 reads the usual AWS settings (``AWS_ACCESS_KEY_ID``, ``AWS_REGION``,
``AWS_ENDPOINT_URL`` for an S3-compatible store, ...).
"""

import hashlib
import json
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app.runtime.artifact import MAX_ARTIFACT_BYTES
from app.runtime.registry import deadline
from app.runtime.store import MAX_METADATA_BYTES, ROOT_FILES, is_model_name

# Written in each mirrored version directory: the objects it was copied from.
IDENTITY_FILE = ".s3-objects.json"
# A version of more objects than this is refused rather than mirrored.
MAX_OBJECTS = 10_000
# S3 errors that mean "no such bucket, or not yours": no cached copy stands in.
REFUSALS = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


class StoreUnreachable(Exception):
    """The object store gave no usable answer in time."""


class StoreRefused(Exception):
    """The object store answered, and what MODEL_DIR names cannot be served from it."""


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, text: str) -> "S3Uri":
        """``s3://bucket/prefix`` (the prefix may be empty: the bucket's root)."""
        if not text.startswith("s3://"):
            raise ValueError(f"{text!r} is not an s3:// URI")
        bucket, _, prefix = text.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        parts = PurePosixPath(prefix).parts if prefix else ()
        if not bucket or any(part in (".", "..") for part in parts):
            raise ValueError(f"{text!r} must be s3://<bucket>/<prefix>")
        return cls(bucket, prefix)

    @property
    def name(self) -> str:
        """The model's name: the prefix's last part, else the bucket's."""
        return PurePosixPath(self.prefix).name if self.prefix else self.bucket

    def child(self, name: str) -> "S3Uri":
        """The prefix of model ``name`` under this repository's."""
        return S3Uri(self.bucket, f"{self.prefix}/{name}" if self.prefix else name)

    def mirror(self, cache_dir: Path) -> Path:
        """The local directory this store's versions are mirrored into."""
        return cache_dir / "s3" / self.bucket / (self.prefix or "_root")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def sync(uri: S3Uri, mirror: Path, timeout: float, max_version_bytes: int) -> None:
    """Mirror the store's version directories into ``mirror``: what changed, is new or is
    gone. Raises ``StoreUnreachable`` or ``StoreRefused``."""
    with session(uri, timeout, "MODEL_DIR") as client:
        versions: dict[str, dict[str, tuple[str, int]]] = {}
        for (version, rest), etag, size, problem in listed(client, uri, depth=1):
            if problem:
                raise StoreRefused(problem)
            versions.setdefault(version, {})[rest] = (etag, size)
        if not versions:
            raise StoreRefused(f"MODEL_DIR {uri}: no model versions (expected {uri}/<integer>/)")
        problem = oversized(uri, versions, max_version_bytes)
        if problem:
            raise StoreRefused(problem)
        mirror_versions(client, uri, versions, mirror)


def sync_repository(
    uri: S3Uri, mirror: Path, timeout: float, max_version_bytes: int, max_total_bytes: int
) -> dict[str, str]:
    """Mirror every model under a repository's prefix (``<prefix>/<name>/<version>/...``)
    into ``mirror``, each as ``sync`` mirrors one; a model gone from the store goes from
    the mirror. A model the mirror refuses (an unsafe key, a key that is both a file and a
    directory, a version over ``max_version_bytes``) is not mirrored: returns why, by name,
    and the others are. Sizes are checked before any download: over ``max_total_bytes``
    in all, or nothing to serve, raises ``StoreRefused``; no answer, ``StoreUnreachable``."""
    with session(uri, timeout, "MODEL_REPOSITORY") as client:
        models: dict[str, dict[str, dict[str, tuple[str, int]]]] = {}
        refused: dict[str, str] = {}
        for (name, version, rest), etag, size, problem in listed(client, uri, depth=2):
            if not is_model_name(name):
                continue
            if problem:
                refused.setdefault(name, problem)
            models.setdefault(name, {}).setdefault(version, {})[rest] = (etag, size)
        for name, versions in models.items():
            problem = oversized(uri.child(name), versions, max_version_bytes)
            if problem:
                refused.setdefault(name, problem)
        if not models:
            raise StoreRefused(
                f"MODEL_REPOSITORY {uri}: no models (expected {uri}/<name>/<integer>/)"
            )
        total = sum(
            size
            for name, versions in models.items()
            if name not in refused
            for objects in versions.values()
            for _, size in objects.values()
        )
        if total > max_total_bytes:
            raise StoreRefused(
                f"MODEL_REPOSITORY {uri}: its models' objects total {total:,} bytes, over "
                f"MAX_REPOSITORY_BYTES={max_total_bytes:,}"
            )
        for name, versions in sorted(models.items()):
            if name not in refused:
                try:
                    mirror_versions(client, uri.child(name), versions, mirror / name)
                except (StoreRefused, OSError) as error:  # One model's objects, one model.
                    refused[name] = str(error)
        for name in ROOT_FILES:
            mirror_root_file(client, uri, name, mirror)
    for copy in mirror.iterdir():
        gone = copy.name not in models or copy.name in refused
        if copy.is_dir() and gone and not copy.name.startswith("."):
            shutil.rmtree(copy, ignore_errors=True)
    return refused


def oversized(uri: S3Uri, versions: dict, max_version_bytes: int) -> str | None:
    """Why a model may not be downloaded: a version whose objects total over
    ``max_version_bytes`` (MAX_MODEL_BYTES); else None."""
    for version, objects in sorted(versions.items()):
        total = sum(size for _, size in objects.values())
        if total > max_version_bytes:
            return (
                f"{uri}/{version}: its objects total {total:,} bytes, over "
                f"MAX_MODEL_BYTES={max_version_bytes:,}; not downloaded"
            )
    return None


def mirror_root_file(client, uri: S3Uri, name: str, mirror: Path) -> None:
    """Put ``<prefix>/<name>`` (``registry.json``, ``version_policy.json``) in the mirror as
    it is in the store, or remove the mirror's copy when the store has none."""
    key = f"{uri.prefix}/{name}" if uri.prefix else name
    try:
        answer = client.get_object(Bucket=uri.bucket, Key=key)
    except client.exceptions.NoSuchKey:
        (mirror / name).unlink(missing_ok=True)
        return
    if answer["ContentLength"] > MAX_METADATA_BYTES:
        raise StoreRefused(f"{uri}: {name} is over {MAX_METADATA_BYTES:,} bytes")
    partial = mirror / f".{name}.partial"
    partial.write_bytes(answer["Body"].read(MAX_METADATA_BYTES + 1))
    partial.rename(mirror / name)


def fingerprint(uri: S3Uri, timeout: float) -> int:
    """A number that changes when any object under the prefix does: its key or its ETag."""
    digest = hashlib.blake2b(digest_size=8)
    root = f"{uri.prefix}/" if uri.prefix else ""
    with session(uri, timeout, "MODEL_REPOSITORY") as client:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=uri.bucket, Prefix=root)
        for count, item in enumerate(item for page in pages for item in page.get("Contents", ())):
            if count >= MAX_OBJECTS:
                raise StoreRefused(f"{uri}: over {MAX_OBJECTS:,} objects under the prefix")
            digest.update(f"{item['Key']}\0{item['ETag']}\n".encode())
    return int.from_bytes(digest.digest(), "big", signed=True)


@contextmanager
def session(uri: S3Uri, timeout: float, setting: str):
    """An S3 client whose errors become ``StoreUnreachable`` or ``StoreRefused``, all of its
    work bounded by ``timeout``."""
    import boto3
    import botocore.config
    import botocore.exceptions

    config = botocore.config.Config(
        connect_timeout=min(10, timeout),
        read_timeout=min(30, timeout),
        retries={"total_max_attempts": 1},
    )
    with deadline(timeout, str(uri), StoreUnreachable):
        try:
            yield boto3.client("s3", config=config)
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in REFUSALS:
                raise StoreRefused(f"{setting} {uri}: {code}") from None
            raise StoreUnreachable(f"{uri}: {code or error}") from None
        except botocore.exceptions.BotoCoreError as error:
            raise StoreUnreachable(f"{uri}: {error}") from None


def listed(client, uri: S3Uri, depth: int):
    """``((part, ..., relative key), ETag, size, problem)`` for every object under the prefix
    whose key has ``depth`` parts before the version's files, the last of them a version
    number; ``problem`` says why the object may not be mirrored (an unsafe path, over
    MAX_ARTIFACT_BYTES), else None. Over MAX_OBJECTS objects raises ``StoreRefused``."""
    root = f"{uri.prefix}/" if uri.prefix else ""
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=uri.bucket, Prefix=root):
        for item in page.get("Contents", ()):
            *parts, rest = item["Key"].removeprefix(root).split("/", depth)
            if len(parts) < depth or not rest or rest.endswith("/"):
                continue
            if not (parts[-1].isdigit() and parts[-1].isascii()):
                continue
            count += 1
            if count > MAX_OBJECTS:
                raise StoreRefused(f"{uri}: over {MAX_OBJECTS:,} objects under the prefix")
            problem = None
            if any(part in ("", ".", "..") for part in rest.split("/")):
                problem = f"{uri}: the object key {item['Key']!r} is not a safe path"
            elif item["Size"] > MAX_ARTIFACT_BYTES:
                problem = f"{uri}: {item['Key']} is over {MAX_ARTIFACT_BYTES:,} bytes"
            yield (*parts, rest), item["ETag"], item["Size"], problem


def mirror_versions(client, uri: S3Uri, versions: dict, mirror: Path) -> None:
    """Download each version whose objects are not the mirrored copy's; drop the gone ones.
    ``versions``: each version's ``{relative key: (ETag, size)}``."""
    for version, listing in sorted(versions.items()):
        objects = {key: etag for key, (etag, _) in listing.items()}
        if _identity(mirror / version) != objects:
            download_version(client, uri, version, objects, mirror)
    for copy in mirror.iterdir() if mirror.is_dir() else ():
        if copy.is_dir() and copy.name not in versions:
            shutil.rmtree(copy, ignore_errors=True)


def download_version(client, uri: S3Uri, version: str, objects: dict, mirror: Path) -> None:
    """Download one version's objects and put them in place atomically, checking each
    object's MD5 against its ETag where the ETag is one (a single-part upload)."""
    mirror.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=mirror))
    try:
        for key, etag in objects.items():
            target = staging / key
            target.parent.mkdir(parents=True, exist_ok=True)
            body = client.get_object(Bucket=uri.bucket, Key=_key(uri, version, key))["Body"]
            digest = hashlib.md5(usedforsecurity=False)
            with target.open("wb") as file:
                for chunk in body.iter_chunks(1 << 20):
                    digest.update(chunk)
                    file.write(chunk)
            expected = etag.strip('"')
            if "-" not in expected and digest.hexdigest() != expected:
                raise StoreUnreachable(f"{uri}: {_key(uri, version, key)} arrived damaged")
        (staging / IDENTITY_FILE).write_text(json.dumps(objects, sort_keys=True))
        old = mirror / f".{version}.old"
        shutil.rmtree(old, ignore_errors=True)
        if (mirror / version).exists():
            (mirror / version).rename(old)
        staging.rename(mirror / version)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _key(uri: S3Uri, version: str, key: str) -> str:
    return f"{uri.prefix}/{version}/{key}" if uri.prefix else f"{version}/{key}"


def _identity(directory: Path) -> dict | None:
    try:
        return json.loads((directory / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None
