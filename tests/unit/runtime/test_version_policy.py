"""version_policy.json: which versions of each repository model are served."""

import pytest

from app.runtime.model import ModelLoadError
from app.runtime.version_policy import VersionPolicy, read_policies


@pytest.mark.parametrize(
    ("entry", "policy"),
    [
        ({"latest": 3}, VersionPolicy(latest=3)),
        ({"specific": [1, 5, 1]}, VersionPolicy(specific=(5, 1))),
    ],
)
def test_a_policy_is_latest_n_or_specific_versions(entry, policy):
    assert VersionPolicy.parse("m", entry) == policy


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"latest": 0}, "latest must be 1 to MAX_SERVED_VERSIONS=10"),
        ({"latest": 11}, "latest must be 1 to MAX_SERVED_VERSIONS=10"),
        ({"latest": True}, "latest must be 1 to MAX_SERVED_VERSIONS=10"),
        ({"latest": "2"}, "latest must be 1 to MAX_SERVED_VERSIONS=10"),
        ({"specific": []}, "specific must name 1 to MAX_SERVED_VERSIONS=10 versions"),
        ({"specific": list(range(1, 12))}, "specific must name 1 to"),
        ({"specific": [0]}, "specific must list version numbers"),
        ({"specific": "1"}, "specific must list version numbers"),
        ({"latest": 1, "specific": [1]}, 'must be {"latest": N} or {"specific": [N, ...]}'),
        ({"all": {}}, 'must be {"latest": N} or {"specific": [N, ...]}'),
        ({}, 'must be {"latest": N} or {"specific": [N, ...]}'),
        ([1], 'must be {"latest": N} or {"specific": [N, ...]}'),
    ],
)
def test_a_malformed_policy_is_refused_saying_what_is_wrong(entry, message):
    with pytest.raises(ValueError, match="'m'") as caught:
        VersionPolicy.parse("m", entry)
    assert message in str(caught.value)


def test_the_file_is_optional_and_must_be_an_object_of_policies(tmp_path):
    assert read_policies(tmp_path) == {}
    path = tmp_path / "version_policy.json"
    path.write_text('{"a": {"latest": 2}, "b": {"specific": [3]}}')
    assert read_policies(tmp_path) == {
        "a": VersionPolicy(latest=2),
        "b": VersionPolicy(specific=(3,)),
    }
    for text in ("[]", "not JSON"):
        path.write_text(text)
        with pytest.raises(ModelLoadError, match="version_policy.json"):
            read_policies(tmp_path)
