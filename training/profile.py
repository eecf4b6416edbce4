"""The training data's input profile: per feature, its range and how its rows fall in buckets.

The server compares live inputs with it (app/ops/monitoring.py). Buckets follow
Prometheus's histogram rule, a value belongs to the first bucket whose upper
bound is at least the value, and frame the training range with one bucket
below its minimum and the +Inf bucket above its maximum, both empty in
training, so that out-of-range traffic shows as drift.
"""

import numpy as np

# Below this many rows, quantiles say little: buckets are evenly spaced instead.
QUANTILE_MIN_ROWS = 100
BUCKETS = 10


def feature_profile(values: np.ndarray) -> dict:
    """One feature's min, max, bucket upper bounds (+Inf implied) and share of rows per bucket."""
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if len(values) >= QUANTILE_MIN_ROWS:
        method = "quantiles"
        inner = np.quantile(values, np.linspace(0, 1, BUCKETS + 1)[1:-1])
    else:
        method = "evenly spaced"
        count = max(1, min(BUCKETS, len(values) - 1))
        inner = np.linspace(low, high, count + 1)[1:-1]
    bounds = np.unique(np.concatenate([[np.nextafter(low, -np.inf)], inner, [high]]))
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds) + 1)
    return {
        "min": low,
        "max": high,
        "rows": len(values),
        "method": method,
        "upper_bounds": bounds.tolist(),
        "fractions": (counts / len(values)).tolist(),
    }


def input_profile(inputs: dict[str, np.ndarray]) -> dict:
    """Every feature of every input, named ``input`` (one feature) or ``input[i]`` (flattened)."""
    profile = {}
    for name, array in inputs.items():
        columns = array.reshape(len(array), -1)
        for index in range(columns.shape[1]):
            feature = name if columns.shape[1] == 1 else f"{name}[{index}]"
            profile[feature] = feature_profile(columns[:, index])
    return profile
