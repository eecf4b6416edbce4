"""Live inputs against the training data: out-of-range counts and a histogram per feature.

Training records each feature's range and buckets (training/profile.py) in
``metadata.json``, and the loader checks them (app/runtime/input_profile.py).
For a version that has them, every prediction counts, per feature, the
instances outside the training range and observes the values in a histogram
with the training buckets; the training fractions per bucket are exported
beside them, so Prometheus alone can compare the two
(deploy/prometheus/rules.yml: out-of-range share, population stability index).
"""

import numpy as np
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.utils import floatToGoString

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

    def __init__(self, model: str, version: int, name: str, parsed: tuple):
        self.name = name
        labels = (model, str(version), name)
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
    """Every profiled feature of a served version, observed once per prediction.

    ``features`` are the version's profiled features as the loader checked them
    (app/runtime/input_profile.py): ``(input, index, feature name, parsed profile)``.
    """

    def __init__(self, model: str, version: int, features: list):
        self.features = [
            (input_name, index, FeatureMonitor(model, version, name, parsed))
            for input_name, index, name, parsed in features
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
