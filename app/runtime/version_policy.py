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
``weights`` share the requests that name no version between labels or
version numbers (``{"stable": 90, "canary": 10}``, adding up to 100), and a
``shadow`` version (a number or label) gets a copy of a ``sample`` of the
model's inferences, to compare (app/core/shadow.py)::

    {"lin": {"specific": [1, 2, 3], "labels": {"stable": 1, "canary": 2},
             "weights": {"stable": 90, "canary": 10},
             "shadow": {"version": 3, "sample": 1.0}}}
"""

import re
from dataclasses import dataclass, replace
from pathlib import Path

from app.runtime.model import ModelBundle, ModelLoadError
from app.runtime.rollout import Rollout
from app.runtime.store import ModelVersion, read_json_object

POLICY_FILE = "version_policy.json"
# A policy serves at most this many versions of one model.
MAX_SERVED_VERSIONS = 10


# A label: a name, never a number, that an URL path segment carries as it is.
LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
SHARES = ("latest", "specific")
ROLLOUT = ("labels", "weights", "shadow")


@dataclass(frozen=True)
class VersionPolicy:
    """``latest`` newest versions, or exactly the ``specific`` ones when it names any; and
    the labels, weights and shadow of a rollout among them."""

    latest: int = 1
    specific: tuple[int, ...] = ()
    labels: tuple[tuple[str, int], ...] = ()
    weights: tuple[tuple[str, int], ...] = ()
    shadow: tuple[str, float] | None = None

    def rollout(self, served: list[ModelBundle]) -> Rollout:
        """The rollout over the ``served`` versions; ``ValueError`` for a label, weight or
        shadow on a version not served, or a shadow whose tensors differ."""
        numbers = [bundle.version.number for bundle in served]
        labels = dict(self.labels)
        for label, number in labels.items():
            if number not in numbers:
                raise ValueError(f"label {label!r} names version {number}, which is not served")

        def number_of(key: str, what: str) -> int:
            number = int(key) if key.isdigit() else labels.get(key)
            if number is None:
                raise ValueError(f"{what} {key!r}, which is neither a label nor a version")
            if number not in numbers:
                raise ValueError(f"{what} version {number}, which is not served")
            return number

        weights: dict[int, int] = {}
        for key, percent in self.weights:
            number = number_of(key, "weights name")
            weights[number] = weights.get(number, 0) + percent
        weights = {number: percent for number, percent in weights.items() if percent}
        if self.shadow is None:
            return Rollout(labels, weights)
        shadow = number_of(self.shadow[0], "shadow names")
        if weights.get(shadow):
            raise ValueError(f"the shadow, version {shadow}, also answers by the weights")
        if len(numbers) < 2:
            raise ValueError(f"the shadow, version {shadow}, is the only version served")
        shadowed = next(bundle for bundle in served if bundle.version.number == shadow)
        for bundle in served:
            problem = tensors_differ(shadowed, bundle)
            if problem:
                raise ValueError(
                    f"the shadow, version {shadow}, cannot be compared with version "
                    f"{bundle.version.number}: {problem}"
                )
        return Rollout(labels, weights, shadow, self.shadow[1])

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
        policy = cls(
            labels=_labels(name, value.get("labels")),
            weights=_weights(name, value),
            shadow=_shadow(name, value.get("shadow")),
        )
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


def _shadow(name: str, shadow) -> tuple[str, float] | None:
    if shadow is None:
        return None
    shape = isinstance(shadow, dict) and shadow.keys() <= {"version", "sample"}
    version = shadow.get("version") if shape else None
    sample = shadow.get("sample", 1.0) if shape else None
    if (
        not shape
        or not (_count(version) and version > 0 or isinstance(version, str) and _label(version))
        or not isinstance(sample, int | float)
        or isinstance(sample, bool)
        or not 0 < sample <= 1
    ):
        raise ValueError(
            f'{name!r}: shadow must be {{"version": N or a label, "sample": a share in (0, 1]}}'
        )
    return str(version), float(sample)


def tensors_differ(shadow: ModelBundle, other: ModelBundle) -> str | None:
    """Why ``shadow`` cannot take ``other``'s inputs and give outputs to compare with its
    own, in order (dtypes and shapes beside the batch; names may differ), or None."""
    for kind in ("inputs", "outputs"):
        mine = [(s.dtype, s.feature_shape) for s in getattr(shadow.compiled, kind)]
        theirs = [(s.dtype, s.feature_shape) for s in getattr(other.compiled, kind)]
        if mine != theirs:
            number = other.version.number
            return f"its {kind} are {_listed(mine)}, version {number}'s {_listed(theirs)}"
    return None


def _label(value: str) -> bool:
    return LABEL.fullmatch(value) is not None


def _listed(specs: list) -> str:
    return ", ".join(f"{dtype}{list(shape)}" for dtype, shape in specs)


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


def read_model_policy(model_dir: Path, name: str) -> VersionPolicy:
    """A single model's policy: ``<model_dir>/version_policy.json`` holds its entry itself
    (``{"latest": 2, "labels": ...}``); the newest version without the file (or with ``{}``).
    ``ModelLoadError`` when it is not such an entry."""
    path = Path(model_dir) / POLICY_FILE
    try:
        entry = read_json_object(path)
        return VersionPolicy.parse(name, entry) if entry else LATEST
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path}: {error}") from None
