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


class FeatureMonitor:
    """One feature's training range, bucket bounds and metric children."""

    def __init__(self, runner: ModelRunner, name: str, profile: dict):
        self.name = name
        labels = (runner.name, str(runner.number), name)
        self.low, self.high = float(profile["min"]), float(profile["max"])
        self.bounds = np.array(profile["upper_bounds"], dtype=np.float64)
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
        for bound, fraction in zip([*self.bounds, float("inf")], profile["fractions"], strict=True):
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
        self.profile = runner.metadata.get("input_profile")
        self.features = []
        if not isinstance(self.profile, dict):
            return
        for spec in runner.compiled.inputs:
            width = int(np.prod(spec.feature_shape, dtype=np.int64))
            for index in range(width):
                name = spec.name if width == 1 else f"{spec.name}[{index}]"
                if name in self.profile:
                    feature = FeatureMonitor(runner, name, self.profile[name])
                    self.features.append((spec.name, index, feature))

    def observe(self, inputs: dict[str, np.ndarray]) -> None:
        for input_name, index, feature in self.features:
            array = inputs[input_name]
            feature.observe(array.reshape(len(array), -1)[:, index])

    def describe(self) -> dict:
        """For ``/model``: the watched features, or why there are none."""
        if not self.features:
            return {"inputs": [], "note": "no input profile in metadata.json: train again"}
        return {"inputs": [feature.name for _, _, feature in self.features]}
