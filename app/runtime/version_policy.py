"""Which versions of a repository's model to serve: TensorFlow Serving's ``model_version_policy``.

``<root>/version_policy.json`` names a policy per model directory::

    {"churn": {"latest": 2}, "images": {"specific": [1, 3]}}

``latest: N`` serves the N newest versions that load (a version that does not
load is skipped for the next older one, as for one version); ``specific``
serves the versions it lists that load. A model the file does not name
serves its newest version that loads (``latest: 1``). The newest version
served answers a request that names none.

Beside them, a rollout: ``labels`` name served versions (``{"stable": 1,
"canary": 2}``, TensorFlow Serving's version labels: names, never numbers),
and ``weights`` share the requests that name no version between labels or
version numbers (``{"stable": 90, "canary": 10}``, adding up to 100)::

    {"lin": {"specific": [1, 2], "labels": {"stable": 1, "canary": 2},
             "weights": {"stable": 90, "canary": 10}}}
"""

import re
from dataclasses import dataclass, replace
from pathlib import Path

from app.runtime.model import ModelLoadError
from app.runtime.store import ModelVersion, read_json_object

POLICY_FILE = "version_policy.json"
# A policy serves at most this many versions of one model.
MAX_SERVED_VERSIONS = 10


# A label: a name, never a number, that an URL path segment carries as it is.
LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
SHARES = ("latest", "specific")
ROLLOUT = ("labels", "weights")


@dataclass(frozen=True)
class VersionPolicy:
    """``latest`` newest versions, or exactly the ``specific`` ones when it names any; and
    the labels and weights of a rollout among them."""

    latest: int = 1
    specific: tuple[int, ...] = ()
    labels: tuple[tuple[str, int], ...] = ()
    weights: tuple[tuple[str, int], ...] = ()

    def rollout(self, served: list[int]) -> tuple[dict[str, int], dict[int, int]]:
        """The labels (name: version) and weights (version: percent) over the ``served``
        versions; ``ValueError`` for a label or weight on a version not served."""
        labels = dict(self.labels)
        for label, number in labels.items():
            if number not in served:
                raise ValueError(f"label {label!r} names version {number}, which is not served")
        weights: dict[int, int] = {}
        for key, percent in self.weights:
            number = int(key) if key.isdigit() else labels.get(key)
            if number is None:
                raise ValueError(f"weights name {key!r}, which is neither a label nor a version")
            if number not in served:
                raise ValueError(f"weights name version {number}, which is not served")
            weights[number] = weights.get(number, 0) + percent
        return labels, {number: percent for number, percent in weights.items() if percent}

    def candidates(self, versions: list[ModelVersion]) -> tuple[list[ModelVersion], list[int]]:
        """The versions to try, newest first, and the numbers it names that are absent."""
        if not self.specific:
            return versions, []
        found = {version.number for version in versions}
        missing = [number for number in self.specific if number not in found]
        return [version for version in versions if version.number in self.specific], missing

    @property
    def wanted(self) -> int:
        """How many versions to serve, at most."""
        return len(self.specific) or self.latest

    @classmethod
    def parse(cls, name: str, value) -> "VersionPolicy":
        """The policy a file's entry describes; ``ValueError`` saying what is wrong."""
        shape = (
            f'{name!r} must be {{"latest": N}} or {{"specific": [N, ...]}}, '
            'with "labels" and "weights" if any'
        )
        if not isinstance(value, dict) or not value.keys() <= {*SHARES, *ROLLOUT}:
            raise ValueError(shape)
        kinds = [kind for kind in SHARES if kind in value]
        if len(kinds) > 1 or not kinds and not value.keys() & set(ROLLOUT):
            raise ValueError(shape)
        bound = f"1 to MAX_SERVED_VERSIONS={MAX_SERVED_VERSIONS}"
        policy = cls(labels=_labels(name, value.get("labels")), weights=_weights(name, value))
        if "latest" in value:
            argument = value["latest"]
            if not _count(argument) or not 1 <= argument <= MAX_SERVED_VERSIONS:
                raise ValueError(f"{name!r}: latest must be {bound}")
            return replace(policy, latest=argument)
        if "specific" in value:
            argument = value["specific"]
            if not isinstance(argument, list) or not all(_count(n) and n > 0 for n in argument):
                raise ValueError(f"{name!r}: specific must list version numbers")
            numbers = tuple(sorted(set(argument), reverse=True))
            if not 1 <= len(numbers) <= MAX_SERVED_VERSIONS:
                raise ValueError(f"{name!r}: specific must name {bound} versions")
            return replace(policy, specific=numbers)
        return policy


def _labels(name: str, labels) -> tuple[tuple[str, int], ...]:
    if labels is None:
        return ()
    if not isinstance(labels, dict) or not all(
        isinstance(label, str) and LABEL.fullmatch(label) and _count(n) and n > 0
        for label, n in labels.items()
    ):
        raise ValueError(
            f"{name!r}: labels must map names (a letter, then letters, digits, '.', '_', '-'; "
            "never a number) to version numbers"
        )
    return tuple(sorted(labels.items()))


def _weights(name: str, value: dict) -> tuple[tuple[str, int], ...]:
    weights = value.get("weights")
    if weights is None:
        return ()
    if (
        not isinstance(weights, dict)
        or not weights
        or not all(
            isinstance(key, str)
            and (key.isdigit() or LABEL.fullmatch(key))
            and _count(percent)
            and 0 <= percent <= 100
            for key, percent in weights.items()
        )
    ):
        raise ValueError(
            f"{name!r}: weights must map labels or version numbers to percents (0 to 100)"
        )
    if sum(weights.values()) != 100:
        raise ValueError(f"{name!r}: weights add up to {sum(weights.values())}, not 100")
    return tuple(sorted(weights.items()))


LATEST = VersionPolicy()


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_policies(root: Path) -> dict[str, VersionPolicy]:
    """``<root>/version_policy.json``'s policies by model name; ``{}`` without the file.
    ``ModelLoadError`` when it is not such an object."""
    path = Path(root) / POLICY_FILE
    try:
        entries = read_json_object(path) or {}
        return {name: VersionPolicy.parse(name, value) for name, value in entries.items()}
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path}: {error}") from None
