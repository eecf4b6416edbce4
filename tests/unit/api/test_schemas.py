"""Request schema: what counts as a valid batch of instances for the served model."""

import numpy as np
import pytest
from marshmallow import ValidationError

from app.api.schemas import PredictRequestSchema
from app.ops.error_shape import MAX_REPORTED_ERRORS


@pytest.fixture(autouse=True)
def served(app):
    """The schema checks instances against the model this app serves."""
    with app.test_request_context():
        yield


def load(instances):
    return PredictRequestSchema().load({"instances": instances})["instances"]["x"]


@pytest.mark.parametrize(
    "instances, expected",
    [
        ([10], [10.0]),
        ([10.5, -1.5, 0], [10.5, -1.5, 0.0]),
        ([[10], [2.5]], [10.0, 2.5]),
        ([1, [2], 3.0], [1.0, 2.0, 3.0]),
        ([3.4e38], [3.4e38]),
    ],
)
def test_numbers_and_one_element_rows_load_as_a_float32_vector(instances, expected):
    array = load(instances)
    assert array.dtype == np.float32 and array.shape == (len(expected), 1)
    np.testing.assert_allclose(array.reshape(-1), expected, rtol=1e-7)


@pytest.mark.parametrize(
    "instances",
    [
        ["10"],
        [True],
        [None],
        [{"x": 1}],
        [[]],
        [[1, 2]],
        [[[1]]],
        [float("nan")],
        [float("inf")],
        [float("-inf")],
        [1e39],
        [10**400],
    ],
    ids=lambda v: repr(v)[:20],
)
def test_bad_elements_are_refused_with_their_index(instances):
    with pytest.raises(ValidationError) as error:
        load([1.0, *instances])
    assert list(error.value.messages["instances"]) == [1]


@pytest.mark.parametrize("instances", [[], 10, "10", {"x": 1}, None])
def test_instances_must_be_a_non_empty_list(instances):
    with pytest.raises(ValidationError) as error:
        load(instances)
    assert "instances" in error.value.messages


def test_errors_are_reported_for_at_most_a_bounded_number_of_elements():
    with pytest.raises(ValidationError) as error:
        load(["x"] * 1000)
    assert len(error.value.messages["instances"]) == MAX_REPORTED_ERRORS


@pytest.mark.parametrize("body", [{}, {"instances": [1], "extra": 1}])
def test_missing_instances_and_unknown_fields_are_refused(body):
    with pytest.raises(ValidationError):
        PredictRequestSchema().load(body)
