"""version_policy.json: which versions of each repository model are served."""

import re
from types import SimpleNamespace

import pytest

from app.runtime.artifact import TensorSpec
from app.runtime.model import ModelLoadError
from app.runtime.rollout import Rollout
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


def test_labels_and_weights_resolve_to_the_versions_served():
    entry = {
        "specific": [1, 2],
        "labels": {"stable": 1, "canary": 2},
        "weights": {"stable": 90, "canary": 10},
    }
    policy = VersionPolicy.parse("lin", entry)
    assert policy.specific == (2, 1)
    assert policy.rollout(served(2, 1)) == Rollout({"canary": 2, "stable": 1}, {1: 90, 2: 10})
    by_number = VersionPolicy.parse("lin", {"latest": 2, "weights": {"2": 100, "1": 0}})
    assert by_number.rollout(served(2, 1)) == Rollout({}, {2: 100})


def served(*numbers: int, output_shape=(-1, 1)) -> list:
    """Versions as the loader serves them, with one float input and output each (the newest's
    output shaped ``output_shape``)."""
    return [
        SimpleNamespace(
            version=SimpleNamespace(number=number),
            compiled=SimpleNamespace(
                inputs=[TensorSpec("x", (-1, 1), "float32")],
                outputs=[TensorSpec(f"y{number}", output_shape if i == 0 else (-1, 1), "float32")],
            ),
        )
        for i, number in enumerate(numbers)
    ]


def test_a_shadow_names_a_served_version_by_number_or_label_with_its_sample():
    entry = {"labels": {"next": 3}, "weights": {"1": 100}, "shadow": {"version": "next"}}
    rollout = VersionPolicy.parse("lin", entry).rollout(served(3, 1))
    assert (rollout.shadow, rollout.sample) == (3, 1.0)
    # Output names may differ between retrained versions; dtypes and shapes may not.
    half = VersionPolicy.parse("lin", {"shadow": {"version": 1, "sample": 0.5}})
    assert (half.rollout(served(3, 1)).shadow, half.rollout(served(3, 1)).sample) == (1, 0.5)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"labels": {"2": 1}}, "labels must map names"),
        ({"labels": {"canary": 0}}, "labels must map names"),
        ({"labels": {"stable": 1}, "weights": {"stable": 60}}, "weights add up to 60, not 100"),
        ({"weights": {"stable": 101}}, "percents (0 to 100)"),
        ({"weights": {}}, "percents (0 to 100)"),
        ({"latest": 1, "specific": [1]}, 'must be {"latest": N} or'),
        ({"latest": 1, "shadow": 3}, 'shadow must be {"version"'),
        ({"shadow": {"version": 3, "sample": 0}}, 'shadow must be {"version"'),
        ({"shadow": {"version": 3, "sample": 1.5}}, 'shadow must be {"version"'),
        ({"shadow": {"version": "3x!", "sample": 1}}, 'shadow must be {"version"'),
        ({"shadow": {"version": 3, "every": 1}}, 'shadow must be {"version"'),
    ],
)
def test_a_malformed_rollout_is_refused_saying_what_is_wrong(entry, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        VersionPolicy.parse("lin", entry)


@pytest.mark.parametrize(
    ("entry", "numbers", "message"),
    [
        ({"labels": {"next": 3}}, [2, 1], "label 'next' names version 3, which is not served"),
        ({"weights": {"beta": 100}}, [1], "'beta', which is neither a label nor a version"),
        ({"weights": {"7": 100}}, [1], "weights name version 7, which is not served"),
        ({"shadow": {"version": 4}}, [2, 1], "shadow names version 4, which is not served"),
        ({"shadow": {"version": 1}}, [1], "the shadow, version 1, is the only version served"),
        (
            {"weights": {"2": 50, "1": 50}, "shadow": {"version": 2}},
            [2, 1],
            "the shadow, version 2, also answers by the weights",
        ),
    ],
)
def test_a_rollout_naming_a_version_not_served_does_not_hold_together(entry, numbers, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        VersionPolicy.parse("lin", entry).rollout(served(*numbers))


def test_a_shadow_with_other_outputs_cannot_be_compared():
    policy = VersionPolicy.parse("lin", {"shadow": {"version": 2}})
    with pytest.raises(ValueError, match=re.escape("its outputs are float32[3], version 1's")):
        policy.rollout(served(2, 1, output_shape=(-1, 3)))
