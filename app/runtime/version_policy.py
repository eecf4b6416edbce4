"""Which versions of a repository's model to serve: TensorFlow Serving's ``model_version_policy``.

``<root>/version_policy.json`` names a policy per model directory::

    {"churn": {"latest": 2}, "images": {"specific": [1, 3]}}

``latest: N`` serves the N newest versions that load (a version that does not
load is skipped for the next older one, as for one version); ``specific``
serves the versions it lists that load. A model the file does not name
serves its newest version that loads (``latest: 1``). The newest version
served answers a request that names none.
"""

from dataclasses import dataclass
from pathlib import Path

from app.runtime.model import ModelLoadError
from app.runtime.store import ModelVersion, read_json_object

POLICY_FILE = "version_policy.json"
# A policy serves at most this many versions of one model.
MAX_SERVED_VERSIONS = 10


@dataclass(frozen=True)
class VersionPolicy:
    """``latest`` newest versions, or exactly the ``specific`` ones when it names any."""

    latest: int = 1
    specific: tuple[int, ...] = ()

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
        single = isinstance(value, dict) and len(value) == 1
        kind, argument = next(iter(value.items())) if single else (None, None)
        bound = f"1 to MAX_SERVED_VERSIONS={MAX_SERVED_VERSIONS}"
        if kind == "latest":
            if not _count(argument) or not 1 <= argument <= MAX_SERVED_VERSIONS:
                raise ValueError(f"{name!r}: latest must be {bound}")
            return cls(latest=argument)
        if kind == "specific":
            if not isinstance(argument, list) or not all(_count(n) and n > 0 for n in argument):
                raise ValueError(f"{name!r}: specific must list version numbers")
            numbers = tuple(sorted(set(argument), reverse=True))
            if not 1 <= len(numbers) <= MAX_SERVED_VERSIONS:
                raise ValueError(f"{name!r}: specific must name {bound} versions")
            return cls(specific=numbers)
        raise ValueError(f'{name!r} must be {{"latest": N}} or {{"specific": [N, ...]}}')


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
