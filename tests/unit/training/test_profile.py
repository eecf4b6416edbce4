"""The training data's input profile: range, buckets and their training shares."""

import numpy as np
import pytest

from training.profile import QUANTILE_MIN_ROWS, feature_profile, input_profile


def test_the_notebooks_six_points_get_evenly_spaced_buckets_framed_by_empty_ones():
    profile = feature_profile(np.array([-1, 0, 1, 2, 3, 4], np.float32))
    assert (profile["min"], profile["max"], profile["rows"]) == (-1.0, 4.0, 6)
    assert profile["method"] == "evenly spaced"
    # One bucket below the minimum, then (x, 0], (0, 1], ... (3, 4], then +Inf.
    assert profile["upper_bounds"][0] < -1 and profile["upper_bounds"][1:] == [0, 1, 2, 3, 4]
    assert profile["fractions"] == pytest.approx([0, 2 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 0])


def test_larger_data_gets_quantile_buckets_of_about_equal_shares():
    values = np.random.default_rng(0).normal(size=10 * QUANTILE_MIN_ROWS)
    profile = feature_profile(values)
    assert profile["method"] == "quantiles"
    inner = profile["fractions"][1:-1]
    assert sum(profile["fractions"]) == pytest.approx(1)
    assert profile["fractions"][0] == 0 and profile["fractions"][-1] == 0
    assert max(inner) - min(inner) < 0.01


def test_every_feature_of_every_input_is_profiled_by_name():
    profile = input_profile(
        {"x": np.zeros((5, 1)) + [[1], [2], [3], [4], [5]], "grid": np.ones((5, 2, 2))}
    )
    assert list(profile) == ["x", "grid[0]", "grid[1]", "grid[2]", "grid[3]"]
