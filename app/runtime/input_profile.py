"""A version's input profile, as training records it in metadata.json: read and checked.

Each profiled feature has the training data's min and max, bucket upper
bounds and the share of rows in each bucket (training/profile.py). The loader
refuses a version whose profile cannot be watched; the input monitor
(app/ops/monitoring.py) watches the features it returns.
"""

import numpy as np

# More buckets than this per feature makes /metrics slow to write and scrape.
MAX_BUCKETS = 100


class ProfileError(ValueError):
    """A version's input profile cannot be watched: the loader refuses the version."""


def parse_feature(name: str, profile) -> tuple[float, float, np.ndarray, list[float]]:
    """One feature's min, max, bucket upper bounds and training fractions, checked."""
    try:
        low, high = float(profile["min"]), float(profile["max"])
        bounds = np.array(profile["upper_bounds"], dtype=np.float64)
        fractions = [float(fraction) for fraction in profile["fractions"]]
    except (KeyError, TypeError, ValueError) as error:
        raise ProfileError(f"input profile of {name!r}: {type(error).__name__}: {error}") from None
    problem = None
    if not (np.isfinite([low, high]).all() and low <= high):
        problem = f"min {low} and max {high} are not a finite range"
    elif bounds.ndim != 1 or not 1 <= len(bounds) <= MAX_BUCKETS:
        problem = f"needs 1 to {MAX_BUCKETS} bucket bounds, has {bounds.size}"
    elif not (np.isfinite(bounds).all() and (np.diff(bounds) > 0).all()):
        problem = "bucket bounds must be finite and increasing"
    elif len(fractions) != len(bounds) + 1 or not np.isfinite(fractions).all():
        problem = f"needs {len(bounds) + 1} finite fractions, has {len(fractions)}"
    if problem:
        raise ProfileError(f"input profile of {name!r}: {problem}")
    return low, high, bounds, fractions


def profiled_features(metadata: dict, inputs) -> list[tuple[str, int, str, tuple]]:
    """``(input, index, feature name, parsed profile)`` for every profiled feature, checked.

    The loader calls this before any worker builds its monitor, so a bad
    profile refuses the version there instead of failing every worker.
    """
    profile = metadata.get("input_profile")
    if profile is None:
        return []
    if not isinstance(profile, dict):
        raise ProfileError("input_profile in metadata.json is not an object")
    features = []
    for spec in inputs:
        if spec.open:  # Profiles are per feature, of fixed-shape inputs only.
            continue
        for index in range(spec.size):
            name = spec.name if spec.size == 1 else f"{spec.name}[{index}]"
            if name in profile:
                features.append((spec.name, index, name, parse_feature(name, profile[name])))
    return features
