"""Live inputs against the training data: out-of-range counts and a histogram per feature.

Training records each feature's range and buckets (training/profile.py) in
``metadata.json``. For a version that has them, every prediction counts, per
feature, the instances outside the training range and observes the values in
a histogram with the training buckets; the training fractions per bucket are
exported beside them, so Prometheus alone can compare the two
(deploy/prometheus/rules.yml: out-of-range share, population stability index).
"""

import numpy as np
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.utils import floatToGoString

from app.model import ModelRunner

HISTOGRAM = "model_server_input_value"
HISTOGRAM_HELP = "Input feature values, in the buckets of the training data's profile."

OUT_OF_RANGE = Counter(
    "model_server_input_out_of_range",
    "Instances with an input feature outside the training data's [min, max].",
    ["model", "version", "input"],
)
REFERENCE = Gauge(
    "model_server_input_reference_fraction",
    "Share of training rows in each bucket of model_server_input_value (previous_le < x <= le).",
    ["model", "version", "input", "le", "previous_le"],
    multiprocess_mode="livemax",
)


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
        for index in range(spec.size):
            name = spec.name if spec.size == 1 else f"{spec.name}[{index}]"
            if name in profile:
                features.append((spec.name, index, name, parse_feature(name, profile[name])))
    return features


class FeatureMonitor:
    """One feature's training range, bucket bounds and metric children."""

    def __init__(self, runner: ModelRunner, name: str, parsed: tuple):
        self.name = name
        labels = (runner.name, str(runner.number), name)
        self.low, self.high, self.bounds, fractions = parsed
        # Each feature has buckets of its own; prometheus_client fixes buckets per
        # metric object, so each gets one, all named alike: the multiprocess
        # collector merges them by name into one histogram family.
        histogram = Histogram(
            HISTOGRAM,
            HISTOGRAM_HELP,
            ["model", "version", "input"],
            buckets=self.bounds.tolist(),
            registry=None,
        )
        self.histogram = histogram.labels(*labels)
        self.out_of_range = OUT_OF_RANGE.labels(*labels)
        previous = "-Inf"
        for bound, fraction in zip([*self.bounds, float("inf")], fractions, strict=True):
            le = floatToGoString(bound)
            REFERENCE.labels(*labels, le, previous).set(fraction)
            previous = le

    def observe(self, values: np.ndarray) -> None:
        if values.size == 1:
            value = float(values[0])
            if not self.low <= value <= self.high:
                self.out_of_range.inc()
            self.histogram.observe(value)
            return
        outside = int(np.count_nonzero((values < self.low) | (values > self.high)))
        if outside:
            self.out_of_range.inc(outside)
        counts = np.bincount(
            np.searchsorted(self.bounds, values, side="left"), minlength=len(self.bounds) + 1
        )
        # One increment per bucket instead of one observe() per value: a 1,000-row
        # batch costs a few increments. prometheus_client keeps per-bucket counts.
        for index in np.flatnonzero(counts).tolist():
            self.histogram._buckets[index].inc(int(counts[index]))
        self.histogram._sum.inc(float(values.sum(dtype=np.float64)))


class InputMonitor:
    """Every profiled feature of the served version, observed once per prediction."""

    def __init__(self, runner: ModelRunner):
        self.features = [
            (input_name, index, FeatureMonitor(runner, name, parsed))
            for input_name, index, name, parsed in profiled_features(
                runner.metadata, runner.compiled.inputs
            )
        ]

    def observe(self, inputs: dict[str, np.ndarray]) -> None:
        for input_name, index, feature in self.features:
            array = inputs[input_name]
            feature.observe(array.reshape(len(array), -1)[:, index])

    def describe(self) -> dict:
        """For ``/model``: the watched features, or why there are none."""
        if not self.features:
            return {"inputs": [], "note": "no input profile in metadata.json: train again"}
        return {"inputs": [feature.name for _, _, feature in self.features]}
